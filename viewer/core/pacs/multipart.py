"""Split a ``multipart/related`` body (a WADO-RS answer) into its parts' bytes as the chunks arrive.

Each part's content is handed over as the bytes the server sent (no re-encoding, one copy out of the
receive buffer); the part headers are skipped. :attr:`MultipartParts.complete` says whether the closing
delimiter was read: a body that ends without it was cut short, and its unfinished last part is dropped.
The size of one part is bounded by the HTTP layer (:mod:`viewer.core.pacs.http_guard`), not here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

_CRLF = b"\r\n"


class MultipartParts:
    """Iterate the contents of the parts of one multipart body given as ``chunks``."""

    def __init__(self, chunks: Iterable[bytes], boundary: bytes) -> None:
        self._chunks = chunks
        self._delimiter = _CRLF + b"--" + boundary
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        delimiter = self._delimiter
        # a leading CRLF lets the first boundary (which has none before it) match the delimiter
        buf = bytearray(_CRLF)
        start = 0  # where the unread rest of buf begins (buf is compacted once per chunk, not per part)
        search = 0
        seen_first = False
        for chunk in self._chunks:
            if start:
                del buf[:start]
                search -= start
                start = 0
            buf += chunk
            while True:
                at = buf.find(delimiter, search)
                if at < 0:
                    search = max(start, len(buf) - len(delimiter) + 1)
                    break
                after = at + len(delimiter)
                if len(buf) < after + 2:  # cannot tell a closing delimiter from the next part yet
                    search = at
                    break
                if seen_first:  # buf[start:at] is one part: headers CRLF CRLF content
                    head_end = buf.find(b"\r\n\r\n", start, at)
                    if head_end < 0:
                        raise ValueError("a multipart part has no header end")
                    yield bytes(memoryview(buf)[head_end + 4 : at])
                seen_first = True  # what came before the first boundary is the preamble
                if buf[after : after + 2] == b"--":
                    self.complete = True
                    return
                start = search = after
