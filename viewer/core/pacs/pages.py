"""A long query answer fetched as pages, several requests at once (QIDO-RS ``limit`` / ``offset``).

A server such as Orthanc works out and writes every match of a query before it sends the first byte
(~0.5 ms a study here), on one thread per request; asked for the same matches as pages, two requests
at a time, it answers sooner (1,000 studies on two cores shared with the client: 0.36 s against 0.49 s;
each page also costs the server a lookup of every match, so the pages grow: 100, 200, 400, ...). A
:class:`Pager` hands out the pages (a small first one, for a table to show early, then larger ones)
to the threads that fetch them, and puts the answer together in order, each match once.

Servers that do not page are recognised: one that ignores ``limit`` sends everything for the first
page (that is the answer); one that ignores ``offset`` sends the first matches again for a later page
(:meth:`Pager.result` is then ``None``, and the caller asks once without paging). A query of more
than ``cap`` matches is refused as too large, as an unpaged answer over the byte limit is.

Pages are separate queries: a study deleted on the server while they are fetched can shift a later
page by one, so one match can be missed (never listed twice); a new search sees it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from viewer.core.errors import PacsResponseTooLargeError

T = TypeVar("T")

Fetch = Callable[[int, int], Sequence[T]]  # (offset, count) -> the matches at offset, at most count


@dataclass(frozen=True)
class PagePlan:
    first: int  # matches in the first page (a table shows them while the rest come)
    size: int  # matches in the second page; each later one holds twice its predecessor's, up to max_size
    max_size: int
    in_flight: int  # requests at once
    limit: int | None  # the query's own limit on the matches (None: all)
    cap: int  # more matches than this: refused (a hostile or runaway answer)


class Pager(Generic[T]):
    """Pages of one query for :meth:`work` to fetch from several threads (one fetch function each);
    :meth:`result` puts them together once every thread has finished."""

    def __init__(
        self,
        plan: PagePlan,
        key: Callable[[T], str],
        on_first_page: Callable[[list[T]], None] | None = None,
    ) -> None:
        self.plan = plan
        self._key = key
        self._on_first_page = on_first_page
        self._lock = threading.Lock()
        self._next = 0
        self._claimed = 0  # pages handed out
        self._pages: dict[int, list[T]] = {}
        self._end: int | None = None  # the answer ends here (a short page came)
        self._whole: list[T] | None = None  # the server ignored limit: this is the whole answer
        self._offset_ignored = False
        self._error: Exception | None = None

    # --- fetching (any thread) --------------------------------------------------------------------
    def work(self, fetch: Fetch[T]) -> None:
        """Fetch pages with ``fetch`` until none is left (or another thread failed)."""
        while (claim := self._claim()) is not None:
            offset, count = claim
            try:
                rows = list(fetch(offset, count))
            except Exception as exc:  # raised again by result(), on the caller's thread
                with self._lock:
                    self._error = self._error or exc
                return
            self._land(offset, count, rows)

    def _finished(self) -> bool:
        return (
            self._error is not None
            or self._whole is not None
            or self._offset_ignored
            or (self._end is not None and self._next >= self._end)
        )

    def _claim(self) -> tuple[int, int] | None:
        with self._lock:
            if self._finished():
                return None
            offset = self._next
            k = self._claimed
            count = self.plan.first if k == 0 else min(self.plan.size << (k - 1), self.plan.max_size)
            if self.plan.limit is not None:
                count = min(count, self.plan.limit - offset)
                if count <= 0:
                    return None
            if offset >= self.plan.cap:
                self._error = PacsResponseTooLargeError(
                    f"More than {self.plan.cap:,} studies match: narrow the search"
                )
                return None
            self._next += count
            self._claimed += 1
            return offset, count

    def _land(self, offset: int, count: int, rows: list[T]) -> None:
        first: list[T] | None = None
        with self._lock:
            if len(rows) > count:  # the server ignores limit: any page it sends holds every match
                self._whole = self._whole if self._whole is not None else rows
                return
            self._pages[offset] = rows
            if len(rows) < count:
                end = offset + len(rows)
                self._end = end if self._end is None else min(self._end, end)
            if 0 in self._pages and self._repeats_first_page(offset):
                self._offset_ignored = True
            if offset == 0 and len(rows) == count and not self._finished():
                first = rows
        if first is not None and self._on_first_page is not None:
            self._on_first_page(first)

    def _repeats_first_page(self, landed: int) -> bool:
        """Whether a later page holds a match of the first page (the server ignored offset)."""
        firsts = {self._key(row) for row in self._pages[0]}
        later = [self._pages[landed]] if landed else [rows for at, rows in self._pages.items() if at]
        return any(self._key(row) in firsts for rows in later for row in rows)

    # --- the answer (the caller's thread, after every worker ended) ------------------------------
    def result(self) -> list[T] | None:
        """Every match in order, each once; ``None`` when the server ignored ``offset`` (ask once
        without paging). Raises the first error a fetch raised."""
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._whole is not None:
                pages: list[list[T]] = [self._whole]
            elif self._offset_ignored:
                return None
            else:
                end = self._end if self._end is not None else self._next
                pages = [rows for at, rows in sorted(self._pages.items()) if at < end]
        seen: set[str] = set()
        answer: list[T] = []
        for rows in pages:
            for row in rows:
                key = self._key(row)
                if key not in seen:
                    seen.add(key)
                    answer.append(row)
        return answer if self.plan.limit is None else answer[: self.plan.limit]
