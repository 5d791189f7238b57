"""The ``trained_range`` metadata: what acquisitions a model was trained on, and rewriting it into a model.

``acquisition_range`` reduces per-stack acquisition facts (``SeriesRef.acquisition``: pixel spacing,
slice thickness, field of view, matrix, slice count) to ``{key: [min, max]}``; training calls it on its
training stacks. ``folder_range`` does the same for the labelled stacks of a DICOM folder (the training
set of a model exported before the key existed). ``write_trained_range`` stores a range in an exported
model through :func:`training.export.rewrite_metadata` (metadata only; the graph and weights are kept
byte for byte), after checking it parses as the viewer parses it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from viewer.core.applicability.codes import RANGE_KEYS, parse_trained_range

INTEGER_KEYS = ("matrix", "slices")


def acquisition_range(
    facts: Iterable[Mapping[str, float]], keys: Sequence[str] = RANGE_KEYS
) -> dict[str, list[float]]:
    """``{key: [min, max]}`` over the stacks' acquisition facts (keys no stack has are left out)."""
    facts = list(facts)
    out: dict[str, list[float]] = {}
    for key in keys:
        values = [float(f[key]) for f in facts if key in f]
        if values:
            lo, hi = min(values), max(values)
            out[key] = [int(lo), int(hi)] if key in INTEGER_KEYS else [round(lo, 4), round(hi, 4)]
    return out


def folder_range(
    data_dir: Path, labels_csv: Path, keys: Sequence[str] = RANGE_KEYS
) -> dict[str, list[float]]:
    """The range over the labelled stacks under ``data_dir`` (labels matched by SOPInstanceUID)."""
    from training.dataset import find_series, read_labels

    labels = read_labels(labels_csv)
    refs = [r for r in find_series(data_dir) if any(s in labels for s in r.sop_uids)]
    return acquisition_range((r.acquisition() for r in refs), keys)


def write_trained_range(
    model_path: Path, value: Mapping[str, Sequence[float]], *, out: Path | None = None
) -> Path:
    """Store ``value`` as the model's ``trained_range`` (metadata only). ValueError when it does not parse
    as the viewer's applicability check reads it, or names a key the check does not know."""
    from training.export import rewrite_metadata

    unknown = sorted(set(value) - set(RANGE_KEYS))
    if unknown:
        raise ValueError(f"trained_range keys {unknown} unknown; known: {', '.join(RANGE_KEYS)}")
    encoded = {
        k: [float(v) if k not in INTEGER_KEYS else int(v) for v in value[k]] for k in RANGE_KEYS if k in value
    }
    parse_trained_range(json.dumps(encoded))  # raises ValueError on [low > high], non-numbers, ...
    return rewrite_metadata(model_path, {"trained_range": encoded}, out=out)
