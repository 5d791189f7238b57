"""Write the AI objects of one stack into a folder, named by SOP Instance UID (no patient data)."""

from __future__ import annotations

import io
from pathlib import Path

from pydicom import Dataset

from viewer.core.airesults.ai_sr import build_ai_sr
from viewer.core.airesults.identity import SourceSeries
from viewer.core.airesults.kos import build_kos
from viewer.core.inference.results import StackPrediction
from viewer.core.review.fileutil import atomic_write_bytes


def dataset_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_dataset(ds: Dataset, folder: Path) -> Path:
    """Save ``ds`` as ``<SOPInstanceUID>.dcm`` in ``folder`` (atomically, 0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    atomic_write_bytes(path, dataset_bytes(ds))
    return path


def write_ai_objects(
    pred: StackPrediction, source: SourceSeries, folder: Path | str, *, include_identity: bool = False
) -> list[Path]:
    """Write the AI Result SR (and the KOS when a class is positive); returns the paths written."""
    folder = Path(folder)
    paths = [write_dataset(build_ai_sr(pred, source, include_identity=include_identity), folder)]
    kos = build_kos(pred, source, include_identity=include_identity)
    if kos is not None:
        paths.append(write_dataset(kos, folder))
    return paths
