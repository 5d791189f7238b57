"""trained_range: computed from training studies, written into an exported model's metadata only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from training.cli import main  # noqa: E402
from training.export import read_metadata  # noqa: E402
from training.trained_range import acquisition_range, folder_range, write_trained_range  # noqa: E402
from viewer.core.inference.model import parse_metadata  # noqa: E402
from viewer.core.paths import bundled_model_path  # noqa: E402


def _graph_bytes(path: Path) -> bytes:
    return onnx.load(str(path), load_external_data=False).graph.SerializeToString()


def test_acquisition_range_is_min_max_per_fact() -> None:
    facts = [
        {"matrix": 512.0, "slices": 30.0, "pixel_spacing_mm": 0.46, "field_of_view_mm": 235.52},
        {
            "matrix": 256.0,
            "slices": 24.0,
            "pixel_spacing_mm": 0.98,
            "field_of_view_mm": 250.88,
            "slice_thickness_mm": 5.0,
        },
    ]
    assert acquisition_range(facts) == {
        "pixel_spacing_mm": [0.46, 0.98],
        "slice_thickness_mm": [5.0, 5.0],
        "field_of_view_mm": [235.52, 250.88],
        "matrix": [256, 512],
        "slices": [24, 30],
    }
    assert acquisition_range(facts, ("field_of_view_mm",)) == {"field_of_view_mm": [235.52, 250.88]}


def test_folder_range_reads_the_training_studies(tiny_data: tuple[Path, Path]) -> None:
    data, labels = tiny_data
    rng = folder_range(data, labels)
    assert rng["matrix"] == [64, 64] and rng["slice_thickness_mm"] == [5.0, 5.0]
    assert 8 <= rng["slices"][0] <= rng["slices"][1] <= 10
    assert 230.0 <= rng["field_of_view_mm"][0] <= rng["field_of_view_mm"][1] <= 260.0


def test_write_keeps_the_graph_and_the_other_metadata(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    shutil.copyfile(bundled_model_path(), model)
    before = read_metadata(model)
    value = {"field_of_view_mm": [230.07, 259.96], "slice_thickness_mm": [5.0, 5.0], "slices": [24, 40]}
    rc = main(["trained-range", str(model), "--range", json.dumps(value), "--write"])
    assert rc == 0
    after = read_metadata(model)
    assert after.pop("trained_range") == value
    before.pop("trained_range", None)
    assert after == before
    assert _graph_bytes(model) == _graph_bytes(bundled_model_path())
    raw = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    info = parse_metadata(raw, model, "0" * 64)  # the viewer reads it back
    assert info.trained_range is not None and info.trained_range.field_of_view_mm == (230.07, 259.96)
    assert info.trained_range.matrix is None


@pytest.mark.parametrize(
    "value",
    [
        {"field_of_view_mm": [260.0, 230.0]},
        {"slices": [24]},
        {"field_of_view": [1.0, 2.0]},
        {"matrix": ["a", 1]},
    ],
)
def test_bad_ranges_are_refused_and_nothing_is_written(tmp_path: Path, value: dict[str, object]) -> None:
    model = tmp_path / "m.onnx"
    shutil.copyfile(bundled_model_path(), model)
    with pytest.raises(ValueError):
        write_trained_range(model, value)  # type: ignore[arg-type]
    assert model.read_bytes() == bundled_model_path().read_bytes()
