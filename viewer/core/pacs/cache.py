"""A bounded local folder of retrieved instances that the ordinary local loader opens.

Layout: ``<root>/<study key>/<series key>/``, every key a SHA-256 prefix of the node name and UIDs, so
no file or folder name holds patient data (or a UID). Folders are 0700, files 0600. A series folder
holds one file per instance, ``<instance key>.dcm`` (C-GET, C-MOVE, the Storage SCP), or one pack per
WADO-RS retrieve round, ``<random>.pack`` with its ``.index`` (:mod:`viewer.core.pacs.cache_pack`), or
both. A file per instance is written whole under a temporary name and renamed into place; a pack member
counts once its index line is written after its bytes: either way a reader never sees half an instance
(a leftover ``.part`` file is removed the next time its series is written). The cache is evicted oldest
study first (by the last time a study was written or opened) down to its byte budget; packs count like
any file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from viewer.core.constants import PACS_CACHE_BYTES, PACS_MAX_INSTANCE_BYTES
from viewer.core.dicom import pack as pack_format
from viewer.core.dicom.header import frame_bytes
from viewer.core.errors import DicomError, PacsResponseError, PacsResponseTooLargeError
from viewer.core.pacs import cache_index, cache_pins
from viewer.core.pacs.cache_pack import PackWriter
from viewer.core.pacs.header_scan import ScannedHeader, scan_header
from viewer.core.pacs.models import RetrievedInstance
from viewer.core.paths import user_data_path
from viewer.core.review.fileutil import private_dir

logger = logging.getLogger(__name__)

_STAMP = cache_index.STAMP
_PIXEL_DATA = BaseTag(0x7FE00010)
_DEFER_BYTES = 64 * 1024
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)  # POSIX / Windows


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class InstanceHeader:
    """What the cache checks about an arrived instance before keeping it."""

    sop_instance_uid: str
    series_uid: str
    study_uid: str
    transfer_syntax: str
    frames: int = 1


def inspect_instance(data: bytes) -> InstanceHeader:
    """Read a Part-10 instance's header and check its pixel data is all there; raise
    :class:`PacsResponseError`.

    Native pixel data must hold Rows x Columns x Samples x Bits/8 x Frames bytes; encapsulated pixel data
    must be a well-formed fragment sequence. The message names the defect, never a patient value.
    """
    if len(data) > PACS_MAX_INSTANCE_BYTES:
        raise PacsResponseTooLargeError(
            f"An instance of {len(data) / 1e9:.1f} GB exceeds the "
            f"{PACS_MAX_INSTANCE_BYTES / 1024**3:.0f} GB limit"
        )
    try:
        header = read_header(data)
    except PacsResponseError:
        raise
    except Exception as exc:  # pydicom raises many types on damaged input
        raise PacsResponseError(f"The instance is not a readable DICOM file ({type(exc).__name__})") from exc
    return check_header(header)


def read_header(data: bytes) -> ScannedHeader:
    """The header values :func:`check_header` needs: scanned from the bytes
    (:func:`~viewer.core.pacs.header_scan.scan_header`), or, for what the scan leaves to pydicom, from
    :func:`parse_instance`. Raises what pydicom raises on bytes that are not a readable instance, and
    :class:`PacsResponseError` for one that lacks a UID the check needs."""
    header = scan_header(data)
    return header if header is not None else header_of(parse_instance(data), data)


def parse_instance(data: bytes) -> Dataset:
    """Parse a Part-10 instance for :func:`header_of`: values over :data:`_DEFER_BYTES` (the pixel
    data) are located in ``data``, not copied out of it. Raises what pydicom raises."""
    ds = dcmread(io.BytesIO(data), force=False, defer_size=_DEFER_BYTES)
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        ds = dcmread(io.BytesIO(data), force=False)  # its offsets are into the inflated stream
    return ds


def _pixel_data(ds: Dataset, data: bytes | None) -> memoryview | None:
    """The pixel data value: the bytes where :func:`parse_instance` located it in ``data`` (as many as
    ``data`` holds), else the parsed value."""
    if _PIXEL_DATA not in ds:
        return None
    raw = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if data is not None and isinstance(raw, RawDataElement) and raw.value is None:
        start = raw.value_tell
        return memoryview(data)[start : start + raw.length]
    value = ds.get("PixelData")
    return None if value is None else memoryview(bytes(value))


def header_of(ds: Dataset, data: bytes | None = None) -> ScannedHeader:
    """The values :func:`check_header` needs from an already parsed instance (``data``: the bytes it was
    parsed from by :func:`parse_instance`); :class:`PacsResponseError` when a UID or image value is
    missing or unreadable."""
    try:
        sop = str(ds.SOPInstanceUID)
        series = str(ds.SeriesInstanceUID)
        study = str(ds.StudyInstanceUID)
        ts = UID(str(ds.file_meta.TransferSyntaxUID))
        pixels = _pixel_data(ds, data)
    except Exception as exc:
        raise PacsResponseError(f"The instance lacks a required element ({type(exc).__name__})") from exc
    try:
        return ScannedHeader(
            sop_instance_uid=sop,
            series_uid=series,
            study_uid=study,
            transfer_syntax=ts,
            rows=int(ds.get("Rows", 0)),
            columns=int(ds.get("Columns", 0)),
            samples_per_pixel=int(ds.get("SamplesPerPixel", 1)),
            bits_allocated=int(ds.get("BitsAllocated", 16)),
            frames=int(ds.get("NumberOfFrames", 1) or 1),
            pixels=pixels,
        )
    except Exception as exc:
        raise PacsResponseError(
            f"The instance has an unreadable image element ({type(exc).__name__})"
        ) from exc


def check_header(header: ScannedHeader) -> InstanceHeader:
    """The checks of :func:`inspect_instance` on a header already read."""
    pixels = header.pixels
    if pixels is not None:
        try:
            encapsulated = header.transfer_syntax.is_encapsulated
        except ValueError:  # pydicom does not know the syntax: its pixel data cannot be read
            raise PacsResponseError(
                "The instance's transfer syntax is unknown: its pixels cannot be read"
            ) from None
        if encapsulated and header.fragments_whole:
            pass  # the scan walked every item (a fragment per frame, the delimiter there)
        elif encapsulated:
            try:
                n = sum(1 for _ in generate_fragments(bytes(pixels)))
            except Exception as exc:
                raise PacsResponseError(f"Encapsulated pixel data is damaged ({type(exc).__name__})") from exc
            if n == 0:
                raise PacsResponseError("Encapsulated pixel data holds no fragment")
        else:
            need = (
                frame_bytes(header.rows, header.columns, header.samples_per_pixel, header.bits_allocated)
                * header.frames
            )
            if len(pixels) < need:
                raise PacsResponseError(f"Pixel data truncated: {len(pixels)} of {need} bytes")
    return InstanceHeader(
        header.sop_instance_uid,
        header.series_uid,
        header.study_uid,
        str(header.transfer_syntax),
        max(1, header.frames) if pixels is not None else 1,
    )


def check_dataset(ds: Dataset, data: bytes | None = None) -> InstanceHeader:
    """The checks of :func:`inspect_instance` on an already parsed instance (``data``: the bytes it was
    parsed from by :func:`parse_instance`)."""
    return check_header(header_of(ds, data))


class InstanceCache:
    """The retrieved-instance cache. Thread-safe; one per application is enough."""

    def __init__(self, root: Path | None = None, *, budget_bytes: int = PACS_CACHE_BYTES) -> None:
        self.root = private_dir(root if root is not None else user_data_path() / "pacs-cache")
        self.budget_bytes = budget_bytes
        self._lock = threading.Lock()
        self._pinned: dict[Path, tuple[int, int | None]] = {}  # count, cross-process pin fd
        self.last_eviction: EvictionReport | None = None

    # --- layout -----------------------------------------------------------------------------------
    def study_folder(self, node_name: str, study_uid: str) -> Path:
        return self.root / _key("study", node_name, study_uid)

    def series_folder(self, node_name: str, study_uid: str, series_uid: str) -> Path:
        """The series' folder (created 0700, stale ``.part`` files and damaged packs removed, the study
        marked as used)."""
        study = private_dir(self.study_folder(node_name, study_uid))
        folder = private_dir(study / _key("series", series_uid))
        for stale in folder.glob(".part-*"):
            with contextlib.suppress(OSError):
                stale.unlink()
        self._drop_damaged_packs(folder)
        self.touch(study, writing=True)
        return folder

    def _drop_damaged_packs(self, folder: Path) -> None:
        """Remove the packs of ``folder`` that are damaged (see :func:`pack.read_index`): their
        instances are not counted as cached, so the retrieve about to run fetches them again."""
        for path in self.packs(folder):
            try:
                damaged = bool(pack_format.read_index(path).problems)
            except DicomError:
                damaged = True
            if damaged:
                logger.warning("PACS cache: a damaged pack is removed; its instances are fetched again")
                for name in (pack_format.index_path(path), path):
                    with contextlib.suppress(OSError):
                        name.unlink()
        # an index without its pack: of a writer killed at its start
        for index in folder.glob(f"*{pack_format.PACK_SUFFIX}{pack_format.INDEX_SUFFIX}"):
            if not index.with_name(index.name[: -len(pack_format.INDEX_SUFFIX)]).exists():
                with contextlib.suppress(OSError):
                    index.unlink()

    def cached_series_folders(
        self, node_name: str, study_uid: str, series_uids: Iterable[str] = ()
    ) -> list[Path]:
        """The series folders of a study (``series_uids`` only, when given) holding at least one
        instance now; nothing is created."""
        study = self.study_folder(node_name, study_uid)
        wanted = [study / _key("series", uid) for uid in series_uids]
        try:
            folders = wanted or sorted(p for p in study.iterdir() if p.is_dir())
        except OSError:
            return []
        return [f for f in folders if self.has_instances(f)]

    @staticmethod
    def instance_path(folder: Path, sop_instance_uid: str) -> Path:
        return folder / f"{_key('instance', sop_instance_uid)}.dcm"

    # --- contents ---------------------------------------------------------------------------------
    def cached(self, folder: Path, series_uid: str, sop_uids: Iterable[str]) -> dict[str, RetrievedInstance]:
        """The instances among ``sop_uids`` already complete in ``folder``: their own files (only ever
        there whole, see :meth:`put`) and the indexed members of its packs."""
        packed = self.packed(folder, series_uid)
        found: dict[str, RetrievedInstance] = {}
        for uid in sop_uids:
            path = self.instance_path(folder, uid)
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            if size > 0:
                found[uid] = RetrievedInstance(uid, series_uid, path, "", size)
            elif uid in packed:
                found[uid] = packed[uid]
        return found

    @staticmethod
    def packs(folder: Path) -> list[Path]:
        """The packs in ``folder`` (by name)."""
        try:
            return sorted(p for p in folder.iterdir() if p.name.endswith(pack_format.PACK_SUFFIX))
        except OSError:
            return []

    def packed(self, folder: Path, series_uid: str) -> dict[str, RetrievedInstance]:
        """Every instance indexed in ``folder``'s packs (the first pack's when two hold one); a damaged
        pack or index line counts nothing (logged by type)."""
        found: dict[str, RetrievedInstance] = {}
        for path in self.packs(folder):
            try:
                index = pack_format.read_index(path)
            except DicomError as exc:
                logger.warning("PACS cache: a damaged pack is not counted (%s)", type(exc).__name__)
                continue
            if index.problems:
                logger.warning("PACS cache: %d damaged pack index line(s) not counted", len(index.problems))
            for e in index.entries:
                found.setdefault(
                    e.sop_instance_uid,
                    RetrievedInstance(
                        e.sop_instance_uid, series_uid, path, e.transfer_syntax, e.length, e.frames, e.member
                    ),
                )
        return found

    def open_pack(self, folder: Path) -> PackWriter:
        """A new pack in ``folder`` for one retrieve round (:meth:`put` and co. with ``pack=``)."""
        return PackWriter(folder)

    def put(
        self, folder: Path, data: bytes, *, expect_series: str | None = None, pack: PackWriter | None = None
    ) -> RetrievedInstance:
        """Check ``data`` (a Part-10 instance) and write it into ``folder`` atomically (into ``pack``
        when given)."""
        return self._write(folder, inspect_instance(data), data, expect_series, pack)

    def put_header(
        self,
        folder: Path,
        header: ScannedHeader,
        data: bytes,
        *,
        expect_series: str | None = None,
        pack: PackWriter | None = None,
    ) -> RetrievedInstance:
        """Check an instance whose header was read by :func:`read_header` from ``data`` and write
        ``data`` (the bytes as the server sent them) into ``folder`` atomically (into ``pack`` when
        given)."""
        return self._write(folder, check_header(header), data, expect_series, pack)

    def has_instances(self, folder: Path) -> bool:
        """Whether ``folder`` holds at least one complete instance (a file, or an indexed pack member)."""
        return any(folder.glob("*.dcm")) or bool(self.packed(folder, ""))

    def put_dataset(
        self,
        folder: Path,
        ds: Dataset,
        *,
        expect_series: str | None = None,
        data: bytes | None = None,
        pack: PackWriter | None = None,
    ) -> RetrievedInstance:
        """Check an instance already parsed and write it. The bytes the server sent are written as they
        came: ``data`` when the caller has them, else ``FileDataset.buffer`` when pydicom kept it, else
        the dataset is encoded again in its own transfer syntax."""
        head = check_dataset(ds, data)
        buffer = getattr(ds, "buffer", None)
        if data is not None:
            pass
        elif isinstance(buffer, io.BytesIO):
            data = buffer.getvalue()
        else:
            out = io.BytesIO()
            try:
                ds.save_as(out, enforce_file_format=True)
            except Exception as exc:
                raise PacsResponseError(
                    f"The instance cannot be written back ({type(exc).__name__})"
                ) from exc
            data = out.getvalue()
        return self._write(folder, head, data, expect_series, pack)

    def _write(
        self,
        folder: Path,
        head: InstanceHeader,
        data: bytes,
        expect_series: str | None,
        pack: PackWriter | None = None,
    ) -> RetrievedInstance:
        if expect_series is not None and head.series_uid != expect_series:
            raise PacsResponseError("The server sent an instance of another series than the one asked for")
        if pack is not None:
            return pack.add(head.sop_instance_uid, head.series_uid, head.transfer_syntax, head.frames, data)
        path = self.instance_path(folder, head.sop_instance_uid)
        # the temporary name is the final one's plus the writing process and thread (two writers of one
        # instance never share it); O_EXCL: a leftover of a killed process is removed, not written into
        tmp = folder / f".part-{path.stem}-{os.getpid()}-{threading.get_ident():x}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600)
        except FileExistsError:
            os.unlink(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o600)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return RetrievedInstance(
            head.sop_instance_uid, head.series_uid, path, head.transfer_syntax, len(data), head.frames
        )

    # --- budget -----------------------------------------------------------------------------------
    def touch(self, study_folder: Path, *, writing: bool = False) -> None:
        """Mark a study as used now (its stamp and the index); ``writing``: its files are about to change,
        so the next eviction check measures it again."""
        stamp = study_folder / _STAMP
        stamp.touch(mode=0o600, exist_ok=True)
        now = time.time()
        os.utime(stamp, (now, now))
        with self._lock, cache_pins.locked(self.root / cache_index.INDEX_LOCK):
            entries = cache_index.load(self.root)
            if entries is None:
                entries = cache_index.reconciled(self.root)
            entry = entries.get(study_folder.name)
            if entry is None:
                entries[study_folder.name] = cache_index.StudyEntry(0, now, dirty=True)
            else:
                entry.used = now
                entry.dirty = entry.dirty or writing
            cache_index.save(self.root, entries)

    def pin(self, study_folder: Path) -> None:
        """Keep ``study_folder`` from eviction (a retrieve, a study on screen or under review) until
        :meth:`unpin`. Pins count; the first also takes the cross-process pin
        (:mod:`viewer.core.pacs.cache_pins`), which ends with this process at the latest."""
        with self._lock:
            held = self._pinned.get(study_folder)
            if held is not None:
                self._pinned[study_folder] = (held[0] + 1, held[1])
                return
            self._pinned[study_folder] = (1, None)
        fd = cache_pins.acquire_shared(study_folder)
        with self._lock:
            count, _ = self._pinned.get(study_folder, (1, None))
            self._pinned[study_folder] = (count, fd)

    def unpin(self, study_folder: Path) -> None:
        with self._lock:
            count, fd = self._pinned.get(study_folder, (0, None))
            if count > 1:
                self._pinned[study_folder] = (count - 1, fd)
                return
            self._pinned.pop(study_folder, None)
        cache_pins.release(fd)

    @contextlib.contextmanager
    def lease(self, study_folder: Path) -> Iterator[Path]:
        """:meth:`pin` for the ``with`` block."""
        self.pin(study_folder)
        try:
            yield study_folder
        finally:
            self.unpin(study_folder)

    def is_pinned(self, study_folder: Path) -> bool:
        """Whether this cache, or any process, pins ``study_folder`` now."""
        with self._lock:
            if study_folder in self._pinned:
                return True
        with cache_pins.exclusive(study_folder) as free:
            return not free

    def size_bytes(self) -> int:
        """The bytes of every cached file (walks the cache: for tests and reports, not eviction)."""
        return sum(cache_index.tree_size(p) for p in self.root.iterdir() if p.is_dir())

    def evict(self) -> EvictionReport:
        """Remove whole studies, least recently used first, until the cache fits its budget. Pinned
        studies (this process's or another's) are never removed: when only they are left over the
        budget, every file is kept and the report says by how much the cache is over it. Reads the
        index (one entry per study) and measures only the studies written since the last check."""
        with self._lock, cache_pins.locked(self.root / cache_index.INDEX_LOCK):
            entries = cache_index.reconciled(self.root)
            for name, entry in entries.items():
                if entry.dirty:  # written since measured: measure it (only its own files)
                    entry.bytes = cache_index.tree_size(self.root / name)
                    entry.dirty = self._pinned_anywhere(self.root / name)  # maybe still being written
            total = sum(e.bytes for e in entries.values())
            removed: list[Path] = []
            kept_pinned = 0
            for name, entry in sorted(entries.items(), key=lambda item: item[1].used):
                if total <= self.budget_bytes:
                    break
                study = self.root / name
                if self._pinned_here(study):
                    kept_pinned += 1
                    continue
                with cache_pins.exclusive(study) as free:
                    if not free:
                        kept_pinned += 1
                        continue
                    shutil.rmtree(study, ignore_errors=True)
                total -= entry.bytes
                del entries[name]
                removed.append(study)
            cache_index.save(self.root, entries)
            report = EvictionReport(tuple(removed), total, self.budget_bytes, kept_pinned)
            self.last_eviction = report
        if removed:
            logger.info(
                "PACS cache: evicted %d studies to stay within %d MB", len(removed), self.budget_bytes >> 20
            )
        if report.over_budget_bytes:
            logger.warning(
                "PACS cache: %d MB over its %d MB budget; %d studies in use are kept",
                report.over_budget_bytes >> 20,
                self.budget_bytes >> 20,
                kept_pinned,
            )
        return report

    def _pinned_here(self, study_folder: Path) -> bool:
        return study_folder in self._pinned  # the caller holds self._lock

    def _pinned_anywhere(self, study_folder: Path) -> bool:
        if self._pinned_here(study_folder):
            return True
        with cache_pins.exclusive(study_folder) as free:
            return not free


@dataclass(frozen=True)
class EvictionReport:
    """What an eviction check did: the study folders removed, the bytes left, the budget, and how many
    studies over the budget were kept because they are pinned (in use)."""

    removed: tuple[Path, ...]
    total_bytes: int
    budget_bytes: int
    pinned_kept: int = 0

    @property
    def over_budget_bytes(self) -> int:
        return max(0, self.total_bytes - self.budget_bytes)
