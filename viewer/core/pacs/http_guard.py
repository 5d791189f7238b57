"""The HTTP session DICOMweb runs on, hardened against what a server may send back.

- Wildcards: ``requests``/``dicomweb-client`` percent-encode query values, and Orthanc 1.10's DICOMweb
  plugin does not decode them at all (``PatientName=DOE%2A``, ``DOE%5EJOHN`` and ``CT%20HEAD`` find
  nothing). The adapter sends ``*`` and ``?`` as themselves (legal in a query, RFC 3986), and turns a
  space (``+`` from ``quote_plus``; a literal plus is ``%2B``) and the PN separator ``^`` (``%5E``),
  which cannot be sent raw, into the single-character wildcard ``?``: a slightly broader match that
  works on Orthanc and on servers that do decode.
- Size: every response body is counted as it is read (after any Content-Encoding is undone) and the
  read is stopped with :class:`PacsResponseTooLargeError` past the limit for the whole body, or, in a
  multipart body, past the limit for one part: an endless or oversized answer costs bounded memory.
- Timeouts: connect and read timeouts of the node apply to every request.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from viewer.core.errors import PacsResponseTooLargeError


def unquote_wildcards(url: str) -> str:
    """``%2A``/``%3F`` back to ``*``/``?``, ``+`` (space) and ``%5E`` (``^``) to ``?``, in the query part
    of ``url`` only."""
    path, sep, query = url.partition("?")
    if not sep:
        return url
    for quoted, plain in (
        ("%2A", "*"),
        ("%2a", "*"),
        ("%3F", "?"),
        ("%3f", "?"),
        ("+", "?"),
        ("%5E", "?"),
        ("%5e", "?"),
    ):
        query = query.replace(quoted, plain)
    return f"{path}?{query}"


class Limits(threading.local):
    """Byte limits for the responses of the request being made on this thread."""

    def __init__(self) -> None:
        self.total = 64 * 1024**2
        self.part = 64 * 1024**2


class GuardedRaw:
    """Wraps urllib3's response so every byte read is counted against :class:`Limits`."""

    def __init__(self, raw: Any, total: int, part: int, boundary: bytes | None) -> None:
        self._raw = raw
        self._total_limit = total
        self._part_limit = part
        self._marker = b"--" + boundary if boundary else None
        self._seen = 0
        self._since_marker = 0
        self._tail = b""

    def _count(self, chunk: bytes) -> None:
        self._seen += len(chunk)
        if self._seen > self._total_limit:
            raise PacsResponseTooLargeError(
                f"The server's answer exceeds the {self._total_limit / 1024**2:.0f} MB limit: refused"
            )
        if self._marker is None:
            return
        # search the chunk itself and the seam with the previous one (never copy the whole chunk)
        marker, k = self._marker, len(self._marker)
        at = chunk.rfind(marker)
        if at >= 0:
            self._since_marker = len(chunk) - at - k
        else:
            at = (self._tail + chunk[: k - 1]).rfind(marker)
            if at >= 0:
                self._since_marker = len(self._tail) + len(chunk) - at - k
            else:
                self._since_marker += len(chunk)
        self._tail = (self._tail + chunk[-(k + 2) :])[-(k + 2) :]
        if self._since_marker > self._part_limit:
            raise PacsResponseTooLargeError(
                f"One part of the server's answer exceeds the {self._part_limit / 1024**2:.0f} MB limit: "
                "refused"
            )

    def stream(self, amt: int = 2**16, decode_content: bool | None = None) -> Iterator[bytes]:
        for chunk in self._raw.stream(amt, decode_content=decode_content):
            self._count(chunk)
            yield chunk

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        data: bytes = self._raw.read(*args, **kwargs)
        self._count(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def multipart_boundary(content_type: str) -> bytes | None:
    for item in content_type.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return None


class GuardedAdapter(HTTPAdapter):
    """Applies the wildcard fix, the node's timeouts and the byte limits to every request."""

    def __init__(self, limits: Limits, timeout: tuple[float, float]) -> None:
        super().__init__(max_retries=0)
        self._limits = limits
        self._timeout = timeout

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **kwargs: Any
    ) -> requests.Response:
        if request.url:
            request.url = unquote_wildcards(request.url)
        response = super().send(request, stream=True, timeout=self._timeout, **kwargs)
        response.raw = GuardedRaw(
            response.raw,
            self._limits.total,
            self._limits.part,
            multipart_boundary(response.headers.get("Content-Type", "")),
        )
        return response


def guarded_session(limits: Limits, timeout: tuple[float, float]) -> requests.Session:
    session = requests.Session()
    adapter = GuardedAdapter(limits, timeout)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
