"""Real network faults on loopback for the PACS tests: a TCP relay in front of Orthanc that cuts
connections mid-transfer, and a tiny hostile HTTP server."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

# the request being answered on this handler thread (its head: request line and headers)
REQUEST = threading.local()


class CuttingRelay:
    """Forwards 127.0.0.1:<port> to ``target``; the first ``cuts`` connections that carry more than
    ``cut_after`` bytes from the server are closed at that point (mid-PDU / mid-part), the others are
    left whole."""

    def __init__(self, target_port: int, *, cut_after: int, cuts: int = 1) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cuts_done = 0
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            state = {"down": 0, "cut": False}
            for src, dst, down in ((client, server, False), (server, client, True)):
                t = threading.Thread(
                    target=self._pump, args=(src, dst, down, state, client, server), daemon=True
                )
                t.start()
                self._threads.append(t)

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts_left <= 0:
                return False
            self.cuts_left -= 1
            self.cuts_done += 1
            return True

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        down: bool,
        state: dict[str, object],
        client: socket.socket,
        server: socket.socket,
    ) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or not self._forward(data, dst, down, state, client, server):
                    break
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def _forward(
        self,
        data: bytes,
        dst: socket.socket,
        down: bool,
        state: dict[str, object],
        client: socket.socket,
        server: socket.socket,
    ) -> bool:
        """Pass ``data`` on (``down``: from the server); False once the connection was cut."""
        if down:
            total = int(state["down"]) + len(data)  # type: ignore[call-overload]
            if total > self.cut_after and not state["cut"] and self._take_cut():
                state["cut"] = True
                dst.sendall(data[: max(0, self.cut_after - int(state["down"]))])  # type: ignore[call-overload]
                _reset(client)
                _reset(server)
                return False
            state["down"] = total
        dst.sendall(data)
        return True

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accept.join(timeout=5)

    def __enter__(self) -> CuttingRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HoldingRelay(CuttingRelay):
    """Forwards like :class:`CuttingRelay` without cutting, but holds the first connection that carries
    more than ``hold_after`` bytes from the server there until a request whose head contains
    ``release_on`` has passed through on another connection (before the hold or during it), or
    ``timeout_s`` has passed. ``released_by_request`` says which ended the hold."""

    def __init__(
        self, target_port: int, *, hold_after: int, release_on: bytes, timeout_s: float = 10.0
    ) -> None:
        super().__init__(target_port, cut_after=2**62, cuts=0)
        self.hold_after = hold_after
        self.release_on = release_on
        self.timeout_s = timeout_s
        self.held = threading.Event()
        self.released = threading.Event()
        self.released_by_request: bool | None = None

    def __enter__(self) -> HoldingRelay:
        return self

    def _forward(
        self,
        data: bytes,
        dst: socket.socket,
        down: bool,
        state: dict[str, object],
        client: socket.socket,
        server: socket.socket,
    ) -> bool:
        if down:
            total = int(state["down"]) + len(data)  # type: ignore[call-overload]
            state["down"] = total
            if total > self.hold_after and not self.held.is_set():
                with self._lock:
                    first = not self.held.is_set()
                    self.held.set()
                if first:
                    dst.sendall(data)
                    self.released_by_request = self.released.wait(self.timeout_s)
                    return True
        elif self.release_on in data:
            self.released.set()
        dst.sendall(data)
        return True


def _reset(sock: socket.socket) -> None:
    """Drop the connection now, after what was already passed on has been delivered (a RST would make
    the kernel discard data the peer has not read yet, so how much arrives would depend on timing);
    shutdown() also wakes the other pump thread blocked in recv()."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class HostileHttpServer:
    """Answers every request on 127.0.0.1:<port> with ``respond(connection)`` (raw socket writes)."""

    def __init__(self, respond: Callable[[socket.socket], None]) -> None:
        self._respond = respond
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            REQUEST.head = request
            self._respond(conn)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> HostileHttpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
