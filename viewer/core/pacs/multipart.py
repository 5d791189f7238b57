"""Split a ``multipart/related`` body (a WADO-RS answer) into its parts' bytes as the chunks arrive.

Each part's content is handed over as the bytes the server sent (no re-encoding) in one copy out of the
received chunks: the chunks are kept as they came (a short one is joined to the next, so every chunk
but the last is longer than the delimiter, which then spans at most two), searched where they lie, and
a part is joined from the pieces of the chunks it covers. The part headers are skipped.
:attr:`MultipartParts.complete` says whether the closing delimiter was read: a body that ends without it
was cut short, and its unfinished last part is dropped. The size of one part is bounded by the HTTP
layer (:mod:`viewer.core.pacs.http_guard`), not here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

_CRLF = b"\r\n"
_HEADER_END = b"\r\n\r\n"
MIN_CHUNK = 64 * 1024  # shorter chunks are joined to the next (a copy of small data only)


class _Chunks:
    """The unread rest of the body as a queue of chunks; positions are offsets from the body's start."""

    def __init__(self, min_chunk: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._min = min_chunk
        self.start = 0  # offset of the first kept chunk
        self.end = 0  # offset after the last byte received

    def append(self, chunk: bytes) -> None:
        if self._chunks and len(self._chunks[-1]) < self._min:
            self._chunks[-1] += chunk
        else:
            self._chunks.append(chunk)
        self.end += len(chunk)

    def find(self, pattern: bytes, at: int) -> int:
        """Offset of the first ``pattern`` starting at or after ``at`` (-1: none yet). ``pattern`` must
        be no longer than the shortest chunk but the last (so it spans at most two)."""
        base = self.start
        n = len(pattern)
        prev = b""
        for chunk in self._chunks:
            if prev and n > 1 and base - (n - 1) + n > at:  # across the seam with the previous chunk
                seam = base - min(n - 1, len(prev))
                window = prev[seam - base :] + chunk[: n - 1]
                found = window.find(pattern, max(0, at - seam))
                if found >= 0:
                    return seam + found
            end = base + len(chunk)
            if end > at:
                found = chunk.find(pattern, max(0, at - base))
                if found >= 0:
                    return base + found
            prev, base = chunk, end
        return -1

    def take(self, begin: int, end: int) -> bytes:
        """The bytes ``[begin, end)`` in one copy."""
        pieces = []
        base = self.start
        for chunk in self._chunks:
            stop = base + len(chunk)
            if stop > begin and base < end:
                pieces.append(memoryview(chunk)[max(0, begin - base) : min(len(chunk), end - base)])
            if stop >= end:
                break
            base = stop
        return pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)

    def drop_before(self, offset: int) -> None:
        """Forget the chunks that end at or before ``offset``."""
        while self._chunks and self.start + len(self._chunks[0]) <= offset:
            self.start += len(self._chunks.popleft())


class MultipartParts:
    """Iterate the contents of the parts of one multipart body given as ``chunks``."""

    def __init__(self, chunks: Iterable[bytes], boundary: bytes, *, min_chunk: int = MIN_CHUNK) -> None:
        self._chunks = chunks
        self._delimiter = _CRLF + b"--" + boundary
        self._min_chunk = max(min_chunk, len(self._delimiter), len(_HEADER_END))
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        delimiter = self._delimiter
        stream = _Chunks(self._min_chunk)
        # a leading CRLF lets the first boundary (which has none before it) match the delimiter
        stream.append(_CRLF)
        start = 0  # where the unread rest begins
        search = 0
        seen_first = False
        for chunk in self._chunks:
            stream.append(chunk)
            while True:
                at = stream.find(delimiter, search)
                if at < 0:
                    search = max(start, stream.end - len(delimiter) + 1)
                    break
                after = at + len(delimiter)
                if stream.end < after + 2:  # cannot tell a closing delimiter from the next part yet
                    search = at
                    break
                if seen_first:  # [start, at) is one part: headers CRLF CRLF content
                    head_end = stream.find(_HEADER_END, start)
                    if head_end < 0 or head_end + len(_HEADER_END) > at:
                        raise ValueError("a multipart part has no header end")
                    yield stream.take(head_end + len(_HEADER_END), at)
                seen_first = True  # what came before the first boundary is the preamble
                if stream.take(after, after + 2) == b"--":
                    self.complete = True
                    return
                start = search = after
                stream.drop_before(start)
