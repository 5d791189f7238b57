"""``load_paths``: discover, read headers in parallel, group and sort into a :class:`LoadReport`."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path

from viewer.core.codes import summarise
from viewer.core.dicom.grouping import build_tree
from viewer.core.dicom.header import ARCHIVE_CODE, HeaderRecord, read_header
from viewer.core.dicom.isolated import warm_async as warm_decoders
from viewer.core.dicom.model import LoadReport, ResultFile, SkippedFile, SliceSource, Stack
from viewer.core.dicom.pixels import is_fast_path
from viewer.core.dicom.pool import POOL_MIN_SLICES, wants_pool
from viewer.core.dicom.preread import PreRead
from viewer.core.dicom.sources import ArchiveCache, Discovery, discover, expand_archive

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]
ChunkFn = Callable[[list[HeaderRecord]], None]
ProvisionalFn = Callable[[Stack], None]

# Header parsing is pure Python and holds the GIL. Measured on 300 page-cached files (2 cores, median
# of 4 fresh processes): in the calling thread 0.085 s, 1 worker thread 0.095 s, 2 threads 0.13 s,
# 4 threads 0.17 s, a 2-process spawn pool 0.40 s (start-up dominates). One worker thread keeps the
# caller free to poll cancel and report progress at almost no cost. benchmarks/bench_load.py re-measures.
SCAN_THREADS = 1
CHUNK = 16  # files per task: fewer futures, still a cancel check every few milliseconds
PREREAD_MIN_FILES = 2 * CHUNK  # fewer files: reading their pixels during the scan gains nothing


def _read_chunk(
    items: Sequence[tuple[int, SliceSource]], archives: ArchiveCache, cancel: CancelFn | None
) -> list[list[HeaderRecord] | SkippedFile]:
    out: list[list[HeaderRecord] | SkippedFile] = []
    for order, source in items:
        if cancel is not None and cancel():
            break
        try:
            out.append(read_header(source, order, archives))
        except Exception as exc:  # read_header reports problems itself; this is the last line of defence
            logger.warning("Header reader failed unexpectedly: %s", type(exc).__name__)
            out.append(SkippedFile(source.display_name, "E-READ", f"Unreadable file ({type(exc).__name__})"))
    return out


def scan_headers(
    sources: Sequence[SliceSource],
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    offset: int = 0,
    total: int | None = None,
    on_chunk: ChunkFn | None = None,
) -> tuple[list[HeaderRecord], list[SkippedFile], bool]:
    """Read every source's header on a thread pool: (records, skipped, cancelled).

    ``on_chunk(records)`` is called on the calling thread with each chunk's records as it finishes
    (while later chunks are still being read).
    """
    total = len(sources) + offset if total is None else total
    records: list[HeaderRecord] = []
    skipped: list[SkippedFile] = []
    archives = ArchiveCache()
    done = offset
    cancelled = False
    indexed = list(enumerate(sources))
    chunks = [indexed[i : i + CHUNK] for i in range(0, len(indexed), CHUNK)]
    results: dict[int, list[list[HeaderRecord] | SkippedFile]] = {}
    try:
        with ThreadPoolExecutor(max_workers=SCAN_THREADS, thread_name_prefix="dicom-scan") as pool:
            futures: dict[Future[list[list[HeaderRecord] | SkippedFile]], int] = {
                pool.submit(_read_chunk, chunk, archives, cancel): k for k, chunk in enumerate(chunks)
            }
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                for fut in finished:
                    chunk_result = fut.result()
                    results[futures[fut]] = chunk_result
                    done += len(chunk_result)
                    if on_chunk is not None:
                        on_chunk([r for item in chunk_result if isinstance(item, list) for r in item])
                if cancel is not None and cancel():
                    cancelled = True
                    for fut in pending:
                        fut.cancel()
                    break
                if progress is not None and finished:
                    progress(done, total)
    finally:
        archives.close()
    for k in sorted(results):
        for item in results[k]:
            if isinstance(item, SkippedFile):
                skipped.append(item)
            else:
                records.extend(item)
    return records, skipped, cancelled


class _EarlyWork:
    """What ``load_paths`` starts from the chunks of headers, before the scan ends: the decoder
    processes of a compressed volume that will be loaded whole (``whole_volume``), the provisional
    stack (``on_provisional``), and for a whole-volume load the reads of plain pixels (``preread``)."""

    def __init__(
        self,
        files: int,
        whole_volume: bool,
        on_provisional: ProvisionalFn | None,
        preread: PreRead | None = None,
    ) -> None:
        self.files = files
        self.whole_volume = whole_volume
        self.on_provisional = on_provisional
        self.preread = preread
        self.started = not (whole_volume or on_provisional is not None)

    def __call__(self, records: list[HeaderRecord]) -> None:
        if not records:
            return
        if self.preread is not None:
            self.preread.offer(records)
        if self.started:
            return
        self.started = True
        if self.whole_volume and self.files >= 2 * POOL_MIN_SLICES and not is_fast_path(records[0].info):
            # A whole compressed volume follows: start the decoder processes now, during the scan
            # (otherwise they start after it, which favours the first slice).
            warm_decoders(bulk=True)
        if self.on_provisional is not None:
            stack = provisional_stack(records)
            if stack is not None:
                self.on_provisional(stack)


def provisional_stack(records: Sequence[HeaderRecord]) -> Stack | None:
    """The first stack of a few records (the first files read), sorted among themselves: something to
    show while the rest are scanned. Each slice keeps its own header's position; its index is only
    among these records, so a viewer must replace this stack with the scan's own when it ends."""
    try:
        patients, _ = build_tree(list(records))
    except Exception as exc:  # a provisional view is optional: the full scan reports problems
        logger.debug("No provisional stack: %s", type(exc).__name__)
        return None
    for patient in patients:
        for study in patient.studies:
            for series in study.series:
                for stack in series.stacks:
                    if stack.slices:
                        return stack
    return None


def load_paths(
    paths: Sequence[str | Path],
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    whole_volume: bool = False,
    on_provisional: ProvisionalFn | None = None,
) -> LoadReport:
    """Scan files, folders (recursive), zip archives and DICOMDIRs into a patient tree.

    ``progress(done, total)`` is called on the calling thread over the files scanned; ``cancel()``
    is polled often (the load stops within a fraction of a second and returns what was found,
    with ``cancelled=True``). Nothing is written to the scanned folders.

    ``whole_volume``: a whole-volume load (:meth:`StackVolume.load_all`) will follow, so a compressed
    folder's decoder processes start during the scan, and a folder of at least :data:`PREREAD_MIN_FILES`
    files has its plain 16-bit slices read during the scan (:mod:`~viewer.core.dicom.preread`): pass
    ``report.preread`` to :class:`StackVolume` to use them.
    ``on_provisional(stack)`` is called once, on the calling thread, with :func:`provisional_stack` of
    the first files read, long before a big folder's scan ends.
    """
    start = time.perf_counter()
    found = discover(paths, cancel)
    files = len(found.sources)
    preread = PreRead(files) if whole_volume and files >= PREREAD_MIN_FILES else None
    early = _EarlyWork(files, whole_volume, on_provisional, preread)
    try:
        report = _load(found, start, progress, cancel, early)
    except BaseException:
        if preread is not None:
            preread.release()
        raise
    if preread is None:
        return report
    if report.cancelled:
        preread.release()
        return report
    preread.finish()  # the reader goes on with the last reads while the caller takes the report
    return replace(report, preread=preread)


def _load(
    found: Discovery,
    start: float,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    early: _EarlyWork,
) -> LoadReport:
    skipped = list(found.skipped)
    total = len(found.sources) + len(skipped)
    if progress is not None:
        progress(len(skipped), total)
    records: list[HeaderRecord] = []
    cancelled = found.cancelled
    if not cancelled:
        records, more_skipped, cancelled = scan_headers(
            found.sources, progress=progress, cancel=cancel, offset=len(skipped), total=total, on_chunk=early
        )
        archives = [s for s in more_skipped if s.code == ARCHIVE_CODE]
        skipped.extend(s for s in more_skipped if s.code != ARCHIVE_CODE)
        if archives and not cancelled:
            inner = Discovery()
            for arc in archives:
                expand_archive(Path(arc.path), inner)
            skipped.extend(inner.skipped)
            total += len(inner.sources) + len(inner.skipped) - len(archives)
            more, more_skipped, cancelled = scan_headers(
                inner.sources,
                progress=progress,
                cancel=cancel,
                offset=total - len(inner.sources),
                total=total,
                on_chunk=early,
            )
            records.extend(more)
            skipped.extend(more_skipped)
    results = tuple(s for s in skipped if isinstance(s, ResultFile))  # others' SEG/SR/...: not skipped
    skipped = [s for s in skipped if not isinstance(s, ResultFile)]
    patients, duplicates = build_tree(records) if records else ((), [])
    skipped.extend(duplicates)
    by_uid: dict[str, Stack] = {}
    for patient in patients:
        for study in patient.studies:
            for series in study.series:
                for stack in series.stacks:
                    by_uid[stack.uid] = stack
    if any(not is_fast_path(st.slices[0]) for st in by_uid.values() if st.slices):
        # Stacks that need a decoder: start the decoder processes now, in the background. Not earlier,
        # during the scan: on two cores their start-up then delays the first slice (0.12 -> 0.27 s
        # for 300 JPEG 2000 files) and gains ~0.05 s on the full load (bench_load, j2k case).
        warm_decoders(bulk=any(wants_pool(st) for st in by_uid.values()))
    warnings = []
    if skipped:
        warnings.append(f"{len(skipped)} file(s) skipped: {summarise([s.code for s in skipped])}")
    report = LoadReport(
        patients=patients,
        skipped=tuple(skipped),
        warnings=tuple(warnings),
        files_seen=total,
        elapsed_s=time.perf_counter() - start,
        cancelled=cancelled,
        stacks_by_uid=by_uid,
        result_files=results,
    )
    logger.info("Scan: %s in %.2f s", report.summary(), report.elapsed_s)
    return report
