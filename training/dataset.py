"""Folders of DICOM studies + an RSNA 2019 label CSV -> cached, preprocessed per-study arrays.

Reading goes through the viewer's core (``load_paths`` -> stacks sorted along the slice normal ->
``StackVolume.load_all`` -> ``viewer.core.preprocess.preprocess`` with the stack's geometry), so
training and the viewer see identical pixels. Labels are matched to slices by SOPInstanceUID. Each
study's preprocessed array is cached as an ``.npz`` (float16) keyed by the stack, the slice UIDs and
the preprocessing spec; its acquisition facts (pixel spacing, thickness, field of view, matrix,
slices) are kept for the model's ``trained_range`` metadata.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.errors import LabelFormatError, LabelMatchError, NoDicomFoundError
from viewer.core.constants import RSNA_CLASSES
from viewer.core.preprocess import (
    PreprocessSpec,
    SliceGeometry,
    geometry_from_stack,
    model_slice_order,
    preprocess,
)

log = logging.getLogger(__name__)

K = len(RSNA_CLASSES)


# ------------------------------------------------------------------------------------------------ labels
def read_labels(path: Path) -> dict[str, np.ndarray]:
    """Read an RSNA 2019 label file into ``{sop_instance_uid: float32[6]}`` (RSNA_CLASSES order).

    Exact duplicate rows are dropped (the RSNA file has some); a duplicate with a different label,
    a missing subtype, an unknown subtype or a label other than 0/1 raises :class:`LabelFormatError`.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelFormatError(f"label file not found: {path.name}")
    values: dict[tuple[str, str], int] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != ["ID", "Label"]:
            raise LabelFormatError(
                f"label file must have the header 'ID,Label' (RSNA 2019 format), got {header!r:.80}"
            )
        for line_no, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) != 2:
                raise LabelFormatError(f"line {line_no}: expected 2 columns, got {len(row)}")
            ident, label = row[0].strip(), row[1].strip()
            sop, _, subtype = ident.rpartition("_")
            if not sop or subtype not in RSNA_CLASSES:
                raise LabelFormatError(
                    f"line {line_no}: ID must be '<image id>_<subtype>' with subtype one of "
                    f"{', '.join(RSNA_CLASSES)}"
                )
            if label not in ("0", "1", "0.0", "1.0"):
                raise LabelFormatError(f"line {line_no}: label must be 0 or 1, got {label!r:.20}")
            value = int(float(label))
            key = (sop, subtype)
            if key in values and values[key] != value:
                raise LabelFormatError(f"line {line_no}: conflicting duplicate label for one image")
            values[key] = value
    per_sop: dict[str, np.ndarray] = {}
    seen: dict[str, int] = {}
    for (sop, subtype), value in values.items():
        vec = per_sop.setdefault(sop, np.zeros(K, dtype=np.float32))
        vec[RSNA_CLASSES.index(subtype)] = value
        seen[sop] = seen.get(sop, 0) + 1
    incomplete = sum(1 for n in seen.values() if n != K)
    if incomplete:
        raise LabelFormatError(
            f"{incomplete} image(s) lack some of the {K} labels ({', '.join(RSNA_CLASSES)})"
        )
    if not per_sop:
        raise LabelFormatError("label file has no rows")
    return per_sop


# ---------------------------------------------------------------------------------------------- series
@dataclass(frozen=True)
class SeriesRef:
    """One sorted greyscale stack: its key, patient, slice UIDs and a way to read its HU."""

    key: str
    patient_key: str  # a hash of the PatientID (never logged in clear)
    sop_uids: tuple[str, ...]
    read_hu: Callable[[], np.ndarray]  # -> (S, rows, cols) float32 HU, in sop_uids order
    geometry: SliceGeometry | None = None  # None when the stack has no PixelSpacing
    matrix: int = 0  # max(rows, columns)

    def acquisition(self) -> dict[str, float]:
        """Pixel spacing, thickness, field of view, matrix and slice count (for ``trained_range``)."""
        out: dict[str, float] = {"matrix": float(self.matrix), "slices": float(len(self.sop_uids))}
        g = self.geometry
        if g is not None:
            out["pixel_spacing_mm"] = float(max(g.pixel_spacing))
            out["field_of_view_mm"] = float(max(g.pixel_spacing) * self.matrix)
            if g.positions is not None and len(g.positions) > 1:
                spacing = float(np.median(np.abs(np.diff(g.positions))))
                out["slice_thickness_mm"] = float(g.thickness or spacing)
            elif g.thickness:
                out["slice_thickness_mm"] = float(g.thickness)
        return out


def _patient_key(patient_id: str, fallback: str) -> str:
    return hashlib.sha1((patient_id or fallback).encode()).hexdigest()[:12]


def find_series(data_dir: Path) -> list[SeriesRef]:
    """All greyscale stacks under ``data_dir``, slices sorted by the viewer's core."""
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise NoDicomFoundError(f"data folder not found: {data_dir.name}")
    refs = _find_series_viewer(data_dir)
    if not refs:
        raise NoDicomFoundError(f"no readable greyscale DICOM series found under {data_dir.name}")
    return refs


def _find_series_viewer(data_dir: Path) -> list[SeriesRef]:
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.volume import StackVolume

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*Invalid value for VR UI.*")  # RSNA "ID_..." UIDs
        report = load_paths([data_dir])
    refs: list[SeriesRef] = []
    for patient in report.patients:
        for study in patient.studies:
            for series in study.series:
                for stack in series.stacks:
                    if stack.is_color or len(stack) == 0 or stack.label == "localizer":
                        continue

                    def read(stack: object = stack) -> np.ndarray:
                        vol = StackVolume(stack)  # type: ignore[arg-type]
                        try:
                            return vol.load_all()
                        finally:
                            vol.close()

                    geometry = geometry_from_stack(stack) if stack.slices[0].pixel_spacing else None
                    refs.append(
                        SeriesRef(
                            key=stack.uid,
                            patient_key=_patient_key(patient.patient_id, study.study_instance_uid),
                            sop_uids=tuple(s.sop_instance_uid for s in stack.slices),
                            read_hu=read,
                            geometry=geometry,
                            matrix=max(stack.rows, stack.columns),
                        )
                    )
    return refs


# ---------------------------------------------------------------------------------------------- items
@dataclass(frozen=True)
class StudyItem:
    """A labelled stack ready for training: its cached input array and per-slice labels."""

    key: str
    patient_key: str
    labels: np.ndarray  # (S, 6) float32
    mask: np.ndarray  # (S,) float32, 1 where the slice has labels
    cache_path: Path
    acquisition: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def load(self) -> np.ndarray:
        """(S, 3, size, size) float16 preprocessed slices."""
        with np.load(self.cache_path) as z:
            return z["x"]


def _cache_key(ref: SeriesRef, spec: PreprocessSpec) -> str:
    blob = json.dumps([ref.key, ref.sop_uids, spec.to_metadata()])
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def preprocess_ref(ref: SeriesRef, spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """(model input (S, C, size, size) float32 in the model's slice order, that order as stack indices)."""
    x = preprocess(ref.read_hu(), spec, ref.geometry)
    order = model_slice_order(ref.geometry if spec.version >= 2 else None, len(x))
    return x[order], order


def build_items(
    data_dir: Path,
    labels_csv: Path,
    cache_dir: Path,
    *,
    spec: PreprocessSpec,
    progress: bool = False,
) -> list[StudyItem]:
    """Match labels to slices, preprocess each labelled stack once and cache it (model slice order)."""
    labels = read_labels(labels_csv)
    refs = find_series(data_dir)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    matched = [r for r in refs if any(s in labels for s in r.sop_uids)]
    if not matched:
        raise LabelMatchError(
            f"none of the {len(labels)} labelled images matches a slice of the {len(refs)} DICOM "
            "series found (labels are matched by SOPInstanceUID)"
        )
    items: list[StudyItem] = []
    iterator: Iterable[SeriesRef] = matched
    if progress:
        from tqdm import tqdm

        iterator = tqdm(matched, desc="preprocess", unit="study")
    for ref in iterator:
        if spec.version >= 2 and ref.geometry is None:
            log.warning("skipping a stack without PixelSpacing (version-2 preprocessing works in mm)")
            continue
        order = model_slice_order(ref.geometry if spec.version >= 2 else None, len(ref.sop_uids))
        sops = [ref.sop_uids[i] for i in order]
        lab = np.stack([labels.get(s, np.zeros(K, np.float32)) for s in sops]).astype(np.float32)
        mask = np.array([s in labels for s in sops], dtype=np.float32)
        path = cache_dir / f"{_cache_key(ref, spec)}.npz"
        if not path.is_file():
            x, _ = preprocess_ref(ref, spec)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, x=x.astype(np.float16))
            tmp.replace(path)
        items.append(StudyItem(ref.key, ref.patient_key, lab, mask, path, ref.acquisition()))
    log.info("%d labelled stacks (%d slices)", len(items), sum(len(i) for i in items))
    return items


def split_items(
    items: Sequence[StudyItem], *, seed: int, val_frac: float = 0.15, test_frac: float = 0.15
) -> tuple[list[StudyItem], list[StudyItem], list[StudyItem]]:
    """Deterministic train/val/test split by patient (all stacks of a patient land together)."""
    patients = sorted({i.patient_key for i in items})
    order = np.random.default_rng(seed).permutation(len(patients))
    n = len(patients)
    n_test = round(n * test_frac) if test_frac > 0 else 0
    n_val = round(n * val_frac) if val_frac > 0 else 0
    if n >= 3:
        n_test = max(n_test, 1 if test_frac > 0 else 0)
        n_val = max(n_val, 1 if val_frac > 0 else 0)
    role: dict[str, str] = {}
    for rank, idx in enumerate(order):
        role[patients[idx]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    train = [i for i in items if role[i.patient_key] == "train"]
    val = [i for i in items if role[i.patient_key] == "val"]
    test = [i for i in items if role[i.patient_key] == "test"]
    return train, val, test
