"""Seeded mutation fuzzer for the DICOM read path: header scan, codestream checks, decoder processes.

Every mutant of a real file (pydicom's test files, one or more per transfer syntax) goes through what
the viewer does: ``load_paths`` in this process, then each frame through the decoder process
(``run_isolated``; raw uncompressed frames read here). Counted:

- exceptions outside ``viewer.core.errors.SlicewiseError`` (must be 0);
- hangs: a mutant still running after ``--hang-s`` seconds (must be 0);
- crashes of the viewer's process: a batch subprocess that dies (must be 0);
- silently wrong slices: a frame we return that differs from an independent decode of the same
  mutant (another decoder, in its own capped process) where that one succeeds, or, for a cut-short
  mutant, from the intact original (must be 0). Lossy JPEG mutants that differ from the original
  only in quantisation-table values are valid streams on which libjpeg builds legitimately
  disagree (16-bit dequantisation overflow): counted apart, as ``quantisation_disagreements``; a
  damaged baseline JPEG frame that matches Pillow's decode but not pylibjpeg's is counted as
  ``references_disagree`` (the two reference libjpegs differ there, GDCM agrees with one);
- peak memory: this process's and every decoder process's VmHWM (decoders are capped per frame).

``--pooled`` checks the whole-volume load instead (``StackVolume.load_all``: the decoder pool and the
slice decoder process writing modality values into the shared memfd volume): each stack is
``STACK_SLICES`` copies of a greyscale file of one transfer syntax (own UIDs and positions; the big
endian stack is read by threads, not the pool), of which ``MUTATED_PER_STACK`` are mutated inside
their pixel data only (so they stay in the stack). A
slice the volume shows must equal the single-slice path's result and an independent decode with
pydicom's rescale (the intact original's after a truncation); a slice the volume marks bad that the
single-slice path decodes is counted as ``pool_refused`` (must be 0).

``python tools/fuzz_decoders.py --mutants 10000 --seed 1`` (about 10 minutes on two cores) prints one
line per batch and a JSON summary (``--pooled --mutants 6000``: 500 stacks, about 2 minutes);
``tests/core/test_fuzz_decoders.py`` runs a short seeded batch of each.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEEDS: dict[str, tuple[str, ...]] = {
    "jpeg-baseline": ("SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_jpeg_no_color_transform.dcm"),
    "jpeg-extended": ("JPGExtended.dcm",),
    "jpeg-lossless": ("SC_rgb_jpeg_gdcm.dcm", "JPEG-LL.dcm"),
    "jpeg-ls": ("MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm", "SC_rgb_jls_lossy_line.dcm"),
    "jpeg2000": ("MR_small_jp2klossless.dcm", "693_J2KI.dcm"),
    "rle": ("MR_small_RLE.dcm", "SC_rgb_rle_2frame.dcm"),
    "deflate": ("image_dfl.dcm",),
    "explicit-le": ("MR_small.dcm", "CT_small.dcm"),
    "implicit-le": ("MR_small_implicit.dcm",),
    "explicit-be": ("MR_small_bigendian.dcm",),
}
# The independent decoder per syntax: another library than the one the viewer uses.
REFERENCE_PLUGIN = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg",
    "1.2.840.10008.1.2.4.80": "gdcm",
    "1.2.840.10008.1.2.4.81": "gdcm",
    "1.2.840.10008.1.2.4.90": "gdcm",
    "1.2.840.10008.1.2.4.91": "gdcm",
    "1.2.840.10008.1.2.5": "pydicom",
}
# On damaged lossy JPEG data the libjpeg implementations differ among themselves (Richter's libjpeg
# in pylibjpeg, libjpeg-turbo in Pillow, IJG 6b in GDCM): a frame that matches either is not wrong.
SECOND_REFERENCE = {"1.2.840.10008.1.2.4.50": "pillow"}
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.91"}
LOSSY_TOLERANCE = 8  # IDCT / wavelet rounding differs between decoders on intact lossy data
PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
REFERENCE_CAP = 2 * 1024**3  # the reference decoder's own address-space allowance per frame


@dataclass
class Tally:
    mutants: int = 0
    by_syntax: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)  # ok / refused at scan / refused at decode
    codes: Counter[str] = field(default_factory=Counter)
    foreign_exceptions: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    quantisation_disagreements: list[str] = field(default_factory=list)
    references_disagree: list[str] = field(default_factory=list)
    compared: int = 0
    pooled_stacks: int = 0  # --pooled: stacks loaded by load_all through the decoder pool
    pooled_slices: int = 0
    pool_refused: list[str] = field(default_factory=list)  # refused pooled, decoded as a single slice
    peak_viewer_rss: int = 0
    peak_decoder_rss: int = 0
    peak_reference_rss: int = 0

    def merge(self, other: dict[str, object]) -> None:
        self.mutants += int(other["mutants"])  # type: ignore[call-overload]
        for name in ("by_syntax", "outcomes", "codes"):
            getattr(self, name).update(other[name])
        lists = ("foreign_exceptions", "hangs", "crashes", "wrong", "quantisation_disagreements")
        for name in (*lists, "references_disagree", "pool_refused"):
            getattr(self, name).extend(other[name])  # type: ignore[arg-type]
        for name in ("compared", "pooled_stacks", "pooled_slices"):
            setattr(self, name, getattr(self, name) + int(other[name]))  # type: ignore[call-overload]
        for name in ("peak_viewer_rss", "peak_decoder_rss", "peak_reference_rss"):
            setattr(self, name, max(getattr(self, name), int(other[name])))  # type: ignore[call-overload]


def testdata(name: str) -> Path:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    if found is None:
        raise FileNotFoundError(name)
    return Path(str(found))


# --- mutation ----------------------------------------------------------------------------------------
OPERATORS = ("flip", "flip", "field", "truncate", "truncate", "header", "splice", "insert")
PIXEL_OPERATORS = tuple(op for op in OPERATORS if op != "header")  # the slice stays in its stack


def mutate(data: bytes, rng: random.Random, operators: tuple[str, ...] = OPERATORS) -> tuple[bytes, str]:
    """One mutant of ``data`` and the operator's name ("truncate" keeps the header intact)."""
    start = data.rfind(PIXEL_DATA_TAG)
    pixels = start if start > 0 else len(data) // 2
    op = rng.choice(operators)
    buf = bytearray(data)
    if op == "flip":  # a few bytes inside the pixel data (codestream headers sit near its start)
        near_start = rng.random() < 0.5
        lo = pixels
        hi = min(len(buf), pixels + 400) if near_start else len(buf)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(lo, hi)] = rng.randrange(256)
    elif op == "field":  # an extreme 16/32-bit value in the first bytes of the codestream
        pos = rng.randrange(pixels, min(len(buf) - 4, pixels + 300))
        value = rng.choice(
            [0, 1, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, rng.randrange(1 << 32)]
        )
        width = rng.choice([2, 4])
        order = rng.choice("<>")
        struct.pack_into(f"{order}{'H' if width == 2 else 'I'}", buf, pos, value & ((1 << (8 * width)) - 1))
    elif op == "truncate":
        buf = buf[: rng.randrange(pixels + 12, len(buf))] if len(buf) > pixels + 13 else buf[:-1]
    elif op == "header":  # anywhere before the pixel data
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(128, max(129, pixels))] = rng.randrange(256)
    elif op == "splice":  # drop a run of bytes inside the pixel data
        a = rng.randrange(pixels, len(buf))
        del buf[a : a + rng.randint(1, 64)]
    else:  # insert random bytes inside the pixel data
        a = rng.randrange(pixels, len(buf))
        buf[a:a] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(buf), op


# --- reference decoding (runs inside a capped decoder process via DecoderProcess.call) -------------
def reference_decode(path: str, index: int | None, plugin: str | None) -> np.ndarray | str:
    from pydicom.pixels import pixel_array

    from viewer.core.dicom.limits import address_space_limit

    try:
        with warnings.catch_warnings(), address_space_limit(REFERENCE_CAP):
            warnings.simplefilter("ignore")
            kwargs = {"decoding_plugin": plugin} if plugin else {}
            return np.asarray(pixel_array(path, index=index, **kwargs))
    except BaseException as exc:  # the reference failing is not ours to count
        return f"{type(exc).__name__}"


def peak_rss() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# --- one batch, in this process (the "viewer") -------------------------------------------------------
class Batch:
    def __init__(self, workdir: Path, hang_s: float) -> None:
        from viewer.core.dicom.worker import DecoderProcess

        self.workdir = workdir
        self.hang_s = hang_s
        self.tally = Tally()
        self._reference: DecoderProcess | None = None
        self.originals: dict[tuple[str, int], np.ndarray | None] = {}
        self.current: dict[str, object] = {"label": "", "since": time.monotonic()}  # for the watchdog

    def touch(self, label: str) -> None:
        """Start the hang clock for ``label``."""
        self.current.update(label=label, since=time.monotonic())

    def reference(
        self, path: Path, index: int | None, syntax: str, plugin: str | None = None
    ) -> np.ndarray | None:
        from viewer.core.dicom.worker import DecoderProcess, DecoderStartError

        plugin = plugin or REFERENCE_PLUGIN.get(syntax)
        for _ in range(2):
            try:
                if self._reference is None or not self._reference.alive:
                    self._reference = DecoderProcess()
                self._note_reference_peak()
                result = self._reference.call(reference_decode, str(path), index, plugin, timeout=30)
                return result if isinstance(result, np.ndarray) else None
            except (TimeoutError, EOFError, OSError, DecoderStartError, RuntimeError):
                if self._reference is not None:
                    self._reference.kill()
                self._reference = None
        return None

    def _note_reference_peak(self) -> None:
        if self._reference is not None and self._reference.alive:
            try:
                peak = int(self._reference.call(peak_rss, timeout=10))  # type: ignore[call-overload]
                self.tally.peak_reference_rss = max(self.tally.peak_reference_rss, peak)
            except (TimeoutError, EOFError, OSError, RuntimeError):
                pass

    def note_decoder_peak(self) -> None:
        from viewer.core.dicom import isolated, pool

        for pid in isolated.decoder_pids() + pool.pool_pids():
            try:
                with open(f"/proc/{pid}/status", encoding="ascii") as fh:
                    for line in fh:
                        if line.startswith("VmHWM:"):
                            peak = int(line.split()[1]) * 1024
                            self.tally.peak_decoder_rss = max(self.tally.peak_decoder_rss, peak)
            except OSError:
                pass

    def ours(self, info: object) -> tuple[np.ndarray | None, str | None, bool]:
        from viewer.core.dicom.isolated import run_isolated
        from viewer.core.dicom.model import SliceInfo
        from viewer.core.dicom.pixels import is_fast_path, read_raw
        from viewer.core.errors import SlicewiseError

        assert isinstance(info, SliceInfo)
        if is_fast_path(info):
            try:
                return read_raw(info), None, True
            except SlicewiseError as exc:
                return None, str(exc), False
        results = run_isolated([(0, info)], grey_only=False)
        assert results is not None
        ((_, arr, err, pending),) = results
        return arr, err, pending

    def run_one(self, label: str, path: Path, syntax_name: str, op: str, original: Path) -> None:
        from viewer.core.dicom.loader import load_paths
        from viewer.core.errors import SlicewiseError

        tally = self.tally
        tally.mutants += 1
        tally.by_syntax[syntax_name] += 1
        try:
            report = load_paths([path])
        except SlicewiseError as exc:
            tally.outcomes["refused-at-scan"] += 1
            tally.codes[type(exc).__name__] += 1
            return
        except Exception as exc:
            tally.foreign_exceptions.append(f"{label} scan {type(exc).__name__}: {str(exc)[:120]}")
            return
        stacks = report.all_stacks()
        if not stacks:
            tally.outcomes["refused-at-scan"] += 1
            for skipped in report.skipped:
                tally.codes[skipped.code] += 1
            return
        for stack in stacks:
            for info in stack.slices[:4]:
                try:
                    arr, err, pending = self.ours(info)
                except SlicewiseError as exc:
                    arr, err, pending = None, str(exc), False
                except Exception as exc:
                    tally.foreign_exceptions.append(f"{label} decode {type(exc).__name__}: {str(exc)[:120]}")
                    continue
                if err is not None or arr is None:
                    tally.outcomes["refused-at-decode"] += 1
                    code = err.rsplit("(", 1)[-1].rstrip(")") if err and err.endswith(")") else "other"
                    tally.codes[code if code.startswith("E-") else "decode-error"] += 1
                    continue
                tally.outcomes["decoded"] += 1
                self.compare(label, path, info, arr, pending, op, original)
        self.note_decoder_peak()

    def compare(
        self, label: str, path: Path, info: object, arr: np.ndarray, pending: bool, op: str, original: Path
    ) -> None:
        from viewer.core.dicom.model import SliceInfo

        assert isinstance(info, SliceInfo)
        if not pending and info.samples_per_pixel == 1:
            return  # a Modality LUT already applied: not comparable with raw references
        if info.photometric == "PALETTE COLOR":
            return
        self.check(label, path, info, arr, op, original, (str(original), info.source.frame))

    def check(
        self,
        label: str,
        path: Path,
        info: object,
        arr: np.ndarray,
        op: str,
        original: Path,
        intact_key: tuple[str, int],
        lut: Callable[[np.ndarray], np.ndarray] | None = None,
        rtol: float = 0.0,
    ) -> None:
        """``arr`` (what we show for ``info`` of the mutant ``path``) against the intact original's
        decode after a truncation and against an independent decode of the mutant; ``lut`` maps a
        reference decode to ``arr``'s values (the modality LUT for a whole-volume slice), ``rtol``
        allows float32 rounding there."""
        from viewer.core.dicom.model import SliceInfo

        assert isinstance(info, SliceInfo)
        index = info.source.frame if info.number_of_frames > 1 else None
        syntax = info.transfer_syntax_uid
        tolerance = LOSSY_TOLERANCE if syntax in LOSSY else 0

        def same(ref: np.ndarray) -> bool:
            return _same(arr, ref if lut is None else lut(ref), tolerance, rtol)

        if op == "truncate":  # the header is intact: a frame we show must be the original's
            if intact_key not in self.originals:
                self.originals[intact_key] = self.reference(original, index, syntax)
            intact = self.originals[intact_key]
            if intact is not None and not same(intact):
                self.tally.wrong.append(f"{label} differs from the intact original after truncation")
                return
        ref = self.reference(path, index, syntax)
        if ref is None:
            return
        self.tally.compared += 1
        if not same(ref):
            plugin = REFERENCE_PLUGIN.get(syntax, "pydicom")
            second = SECOND_REFERENCE.get(syntax)
            other = self.reference(path, index, syntax, second) if second else None
            if other is not None and same(other):
                self.tally.references_disagree.append(f"{label}: {second} agrees, {plugin} does not")
                return
            if syntax in LOSSY and only_quantisation_changed(original.read_bytes(), path.read_bytes()):
                # A valid stream with other quantisation values: dequantised coefficients overflow
                # 16 bits, and each libjpeg build wraps or saturates in its own way (no right answer).
                self.tally.quantisation_disagreements.append(f"{label} differs from the {plugin} decode")
            else:
                self.tally.wrong.append(f"{label} differs from the {plugin} decode")

    # --- whole-volume loads through the decoder pool (--pooled) ----------------------------------
    def run_stack(self, label: str, folder: Path, ops: dict[str, str], intact: Path) -> None:
        """Load the stack in ``folder`` as the viewer does (``load_paths``, ``StackVolume.load_all``:
        the decoder pool writing into the shared volume) and check every slice: a slice the volume
        shows must be what the single-slice path shows and what an independent decode shows (the
        intact original's after a truncation); one it marks bad is counted ``pool_refused`` where the
        single-slice path decodes it. ``ops``: file name -> operator ("intact" for unchanged slices);
        ``intact``: the folder of the unmutated slices (same names)."""
        from viewer.core.dicom.loader import load_paths
        from viewer.core.dicom.pool import POOL_MIN_SLICES, pool_work
        from viewer.core.dicom.volume import StackVolume
        from viewer.core.errors import SlicewiseError

        tally = self.tally
        mutants = sum(op != "intact" for op in ops.values())
        tally.mutants += mutants
        try:
            stacks = load_paths([folder]).all_stacks()
        except Exception as exc:
            tally.foreign_exceptions.append(f"{label} scan {type(exc).__name__}: {str(exc)[:120]}")
            return
        seen = {info.source.path.name for stack in stacks for info in stack.slices}
        lost = [name for name, op in ops.items() if op != "intact" and name not in seen]
        tally.outcomes["refused-at-scan"] += len(lost)
        for stack in stacks:
            if stack.is_color:
                continue
            pooled = sum(1 for info in stack.slices if pool_work(info)) >= POOL_MIN_SLICES
            try:
                with StackVolume(stack) as vol:
                    volume = vol.load_all()
                    bad = dict(vol.bad_slices)
            except SlicewiseError as exc:
                tally.codes[type(exc).__name__] += 1
                continue
            except Exception as exc:
                tally.foreign_exceptions.append(f"{label} load_all {type(exc).__name__}: {str(exc)[:120]}")
                continue
            if pooled:
                tally.pooled_stacks += 1
                tally.pooled_slices += len(stack)
            for i, info in enumerate(stack.slices):
                name = info.source.path.name
                op = ops.get(name, "?")
                self.touch(f"{label} {name}")
                where = f"{label} {name} {op}"
                self.check_volume_slice(where, info, volume[i], bad.get(i), op, intact / name)
        self.note_decoder_peak()

    def check_volume_slice(
        self, label: str, info: object, shown: np.ndarray, error: str | None, op: str, original: Path
    ) -> None:
        from viewer.core.dicom.model import SliceInfo
        from viewer.core.dicom.pixels import to_modality
        from viewer.core.errors import SlicewiseError

        assert isinstance(info, SliceInfo)
        tally = self.tally
        try:
            arr, err, pending = self.ours(info)
        except SlicewiseError as exc:
            arr, err, pending = None, str(exc), False
        if error is not None:
            tally.outcomes["refused-at-decode"] += 1
            code = error.rsplit("(", 1)[-1].rstrip(")") if error.endswith(")") else "other"
            tally.codes[code if code.startswith("E-") else "decode-error"] += 1
            if err is None:
                tally.pool_refused.append(f"{label}: {code}")
            return
        tally.outcomes["decoded"] += 1
        if err is not None or arr is None:
            tally.wrong.append(f"{label} shown by load_all, refused as a single slice ({err})")
            return
        single = to_modality(arr, info, dtype=shown.dtype) if pending else arr
        if not _same(shown, single, 0, 1e-6):
            tally.wrong.append(f"{label} differs between load_all and the single-slice path")
            return
        if not pending:
            return  # a Modality LUT: the references give stored values
        rtol = 0.0 if shown.dtype.kind == "i" else 1e-5
        slope, intercept = float(info.rescale_slope), float(info.rescale_intercept)

        def modality(ref: np.ndarray) -> np.ndarray:  # pydicom's own rescale, not ours
            return ref.astype(np.float64) * slope + intercept

        self.check(label, info.source.path, info, shown, op, original, (str(original), 0), modality, rtol)

    def close(self) -> None:
        if self._reference is not None:
            self._note_reference_peak()
            self._reference.kill()
        self.note_decoder_peak()
        self.tally.peak_viewer_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def only_quantisation_changed(original: bytes, mutant: bytes) -> bool:
    """True if ``mutant`` differs from ``original`` only inside JPEG DQT segments (same length)."""
    if len(original) != len(mutant):
        return False
    diffs = [i for i, (a, b) in enumerate(zip(original, mutant)) if a != b]
    soi = original.find(b"\xff\xd8", original.rfind(PIXEL_DATA_TAG))
    if soi < 0 or not diffs:
        return False
    tables: list[range] = []
    pos = soi + 2
    while pos + 4 <= len(original) and original[pos] == 0xFF and original[pos + 1] != 0xDA:
        (length,) = struct.unpack_from(">H", original, pos + 2)
        if original[pos + 1] == 0xDB:
            tables.append(range(pos + 5, pos + 2 + length))  # the table values, not Lq/Pq/Tq
        pos += 2 + length
    return all(any(i in table for table in tables) for i in diffs)


def _same(ours: np.ndarray, ref: np.ndarray, tolerance: float, rtol: float = 0.0) -> bool:
    if ours.dtype == np.uint8 and ref.dtype != np.uint8:
        return True  # >8-bit colour scaled to 8 bits for display: not comparable
    if ours.shape != ref.shape:
        return False
    expected = ref.astype(np.float64)
    diff = np.abs(ours.astype(np.float64) - expected)
    return bool((diff <= tolerance + rtol * np.abs(expected)).all())


def seed_files() -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for syntax_name, names in SEEDS.items():
        for name in names:
            try:
                out.append((syntax_name, testdata(name)))
            except FileNotFoundError:
                continue
    return out


def run_batch(
    seed: int,
    start: int,
    count: int,
    hang_s: float = 60.0,
    *,
    exit_on_hang: bool = True,
    pooled: bool = False,
) -> Tally:
    """Mutants ``start`` .. ``start + count`` of the seeded sequence, in this process (with
    ``exit_on_hang``, a mutant running over ``hang_s`` ends the process: the driver counts a hang).
    With ``pooled``, stacks ``start`` .. ``start + count`` of ``MUTATED_PER_STACK`` mutants each,
    loaded whole (:func:`_run_stacks`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _run_batch(seed, start, count, hang_s, exit_on_hang, pooled)


def _run_batch(seed: int, start: int, count: int, hang_s: float, exit_on_hang: bool, pooled: bool) -> Tally:
    with tempfile.TemporaryDirectory(prefix="slicewise-fuzz-") as tmp:
        batch = Batch(Path(tmp), hang_s)
        current = batch.current
        done = threading.Event()

        def watchdog() -> None:
            while not done.wait(1.0):
                if time.monotonic() - current["since"] > hang_s:  # type: ignore[operator]
                    print(json.dumps({"hang": current["label"]}), flush=True)
                    os._exit(3)

        if exit_on_hang:
            threading.Thread(target=watchdog, daemon=True).start()
        try:
            if pooled:
                _run_stacks(batch, seed, start, count)
            else:
                _run_mutants(batch, seed, start, count)
        finally:
            done.set()
            batch.close()
    return batch.tally


def _run_mutants(batch: Batch, seed: int, start: int, count: int) -> None:
    seeds = seed_files()
    for n in range(start, start + count):
        rng = random.Random(f"{seed}:{n}")
        syntax_name, original = seeds[n % len(seeds)]
        data, op = mutate(original.read_bytes(), rng)
        label = f"#{n} {syntax_name} {original.name} {op}"
        batch.touch(label)
        path = batch.workdir / f"m{n}.dcm"
        path.write_bytes(data)
        batch.run_one(label, path, syntax_name, op, original)
        path.unlink()


# --- --pooled: stacks of mutants through the whole-volume load --------------------------------------
STACK_SLICES = 16  # twice POOL_MIN_SLICES: the pool and the shared volume are used
MUTATED_PER_STACK = 12  # the other slices stay intact (they must load as they are)
POOLED_SEEDS: dict[str, tuple[str, ...]] = {  # greyscale single-frame files (the pool is greyscale only)
    "jpeg-baseline": ("+baseline",),  # made from CT_small.dcm: pydicom has no greyscale baseline file
    "jpeg-extended": ("JPGExtended.dcm",),
    "jpeg-lossless": ("JPEG-LL.dcm",),
    "jpeg-ls": ("MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm"),
    "jpeg2000": ("MR_small_jp2klossless.dcm", "693_J2KI.dcm", "+j2k-lossless"),  # + CT_small.dcm re-encoded
    "rle": ("MR_small_RLE.dcm",),
    "deflate": ("image_dfl.dcm",),
    "explicit-be": ("MR_small_bigendian.dcm",),
}


def _made_seed(kind: str, dst: Path) -> Path:
    """CT_small.dcm (128 x 128, intercept -1024) as a greyscale JPEG baseline frame (Pillow's encoder,
    8-bit) or as JPEG 2000 lossless (pydicom with pylibjpeg-openjpeg)."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

    ds = dcmread(testdata("CT_small.dcm"))
    if kind == "+j2k-lossless":
        ds.compress(JPEG2000Lossless)
    else:
        from PIL import Image

        hu = ds.pixel_array.astype(np.float64)
        grey = np.clip((hu - hu.min()) / max(float(np.ptp(hu)), 1.0) * 255, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(grey, "L").save(buf, "JPEG", quality=90)
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            if keyword in ds:
                del ds[keyword]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = encapsulate([buf.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(dst, enforce_file_format=True)
    return dst


def pooled_seed_files(workdir: Path) -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for syntax_name, names in POOLED_SEEDS.items():
        for name in names:
            try:
                made = name.startswith("+")
                path = _made_seed(name, workdir / f"{name[1:]}.dcm") if made else testdata(name)
            except FileNotFoundError:
                continue
            out.append((syntax_name, path))
    return out


def write_stack(seed_file: Path, tag: str, intact: Path) -> list[bytes]:
    """``STACK_SLICES`` copies of ``seed_file`` as one series (own SOP Instance UIDs, positions 2 mm
    apart) written into ``intact``; their bytes."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    ds = dcmread(seed_file)
    intact.mkdir()
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[tag, "series"])
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    out: list[bytes] = []
    for k in range(STACK_SLICES):
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[tag, str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
        (intact / f"s{k:02d}.dcm").write_bytes(out[-1])
    return out


def _run_stacks(batch: Batch, seed: int, start: int, count: int) -> None:
    """Stacks ``start`` .. ``start + count``: each ``STACK_SLICES`` slices of one seed file,
    ``MUTATED_PER_STACK`` of them mutated inside their pixel data (the header stays, so the slice
    stays in the stack), loaded and checked by :meth:`Batch.run_stack`."""
    seeds = pooled_seed_files(batch.workdir)
    for n in range(start, start + count):
        rng = random.Random(f"{seed}:pooled:{n}")
        syntax_name, original = seeds[n % len(seeds)]
        label = f"#{n} {syntax_name} {original.name}"
        batch.touch(label)
        folder, intact = batch.workdir / f"s{n}", batch.workdir / f"s{n}-intact"
        slices = write_stack(original, f"{seed}:{n}", intact)
        mutated = set(rng.sample(range(STACK_SLICES), MUTATED_PER_STACK))
        folder.mkdir()
        ops: dict[str, str] = {}
        for k, data in enumerate(slices):
            name = f"s{k:02d}.dcm"
            if k in mutated:
                data, ops[name] = mutate(data, rng, PIXEL_OPERATORS)
            else:
                ops[name] = "intact"
            (folder / name).write_bytes(data)
        for syntax in ops.values():
            if syntax != "intact":
                batch.tally.by_syntax[syntax_name] += 1
        batch.run_stack(label, folder, ops, intact)
        shutil.rmtree(folder)
        shutil.rmtree(intact)


def _summary(tally: Tally) -> dict[str, object]:
    doc = asdict(tally)
    for name in ("by_syntax", "outcomes", "codes"):
        doc[name] = dict(sorted(getattr(tally, name).items()))
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=500, help="mutants per viewer subprocess")
    parser.add_argument("--hang-s", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON summary here too")
    parser.add_argument(
        "--pooled",
        action="store_true",
        help=f"stacks of {MUTATED_PER_STACK} mutants + {STACK_SLICES - MUTATED_PER_STACK} intact slices "
        "through the whole-volume load (decoder pool, shared volume)",
    )
    parser.add_argument("--worker", nargs=2, type=int, metavar=("START", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        import logging

        logging.getLogger("viewer").setLevel(logging.ERROR)
        tally = run_batch(args.seed, args.worker[0], args.worker[1], args.hang_s, pooled=args.pooled)
        print(json.dumps({"batch": _summary(tally)}), flush=True)
        return 0
    total = Tally()
    t0 = time.monotonic()
    per = MUTATED_PER_STACK if args.pooled else 1  # --pooled: batches count stacks
    units, batch_units = -(-args.mutants // per), max(1, args.batch // per)
    for start in range(0, units, batch_units):
        count = min(batch_units, units - start)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--seed",
            str(args.seed),
            "--hang-s",
            str(args.hang_s),
            *(["--pooled"] if args.pooled else []),
        ]
        proc = subprocess.run(
            [*cmd, "--worker", str(start), str(count)], capture_output=True, text=True, cwd=ROOT
        )
        lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        batch = next((line["batch"] for line in lines if "batch" in line), None)
        if batch is not None:
            total.merge(batch)
        else:
            hang = next((line["hang"] for line in lines if "hang" in line), None)
            if hang is not None:
                total.hangs.append(hang)
            else:
                total.crashes.append(f"batch {start}: exit {proc.returncode}: {proc.stderr[-300:]}")
        print(
            f"{total.mutants:6d} mutants  {time.monotonic() - t0:6.0f} s"
            f"  foreign {len(total.foreign_exceptions)}  hangs {len(total.hangs)}"
            f"  crashes {len(total.crashes)}  wrong {len(total.wrong)}",
            flush=True,
        )
    doc = _summary(total)
    doc["elapsed_s"] = round(time.monotonic() - t0, 1)
    text = json.dumps(doc, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    bad = total.foreign_exceptions or total.hangs or total.crashes or total.wrong
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
