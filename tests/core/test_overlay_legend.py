"""The results overlay's legend model (viewer.core.foreign.legend): which segments a stack shows, in which
colour, and the scale of fractional SEGs and Parametric Maps, from objects written by highdicom."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.sr.coding import Code

from tests.factories import write_ct_series
from tests.result_objects import SEG_LABELS, blob_masks, source_datasets, write_parametric_map, write_seg
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import Stack
from viewer.core.foreign.legend import LegendScale, format_value, legend_groups
from viewer.core.foreign.match import PlacedSeg, place
from viewer.core.foreign.seg import read_seg

N, SIZE = 6, 64


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Stack]]:
    root = tmp_path_factory.mktemp("legend")
    paths = write_ct_series(root / "ct", N, rows=SIZE, columns=SIZE, shuffle=False)
    return paths, list(load_paths([root / "ct"]).all_stacks())


def _placed(path: Path, stacks: list[Stack]) -> PlacedSeg:
    (p,) = place([read_seg(dcmread(path))], stacks)
    assert isinstance(p, PlacedSeg)
    return p


def test_binary_seg_lists_its_segments_in_their_colours_without_a_scale(
    series: tuple[list[Path], list[Stack]], tmp_path: Path
) -> None:
    paths, stacks = series
    placed = _placed(write_seg(source_datasets(paths), tmp_path, blob_masks(N, SIZE, SIZE, [2, 3])), stacks)
    uid = stacks[0].uid
    (group,) = legend_groups([placed], uid)
    assert [r.label for r in group.rows] == list(SEG_LABELS)
    red, blue = (r.color for r in group.rows)
    assert red[0] > 200 and red[2] < 60 and blue[2] > 200 and blue[0] < 60  # CIELab read back as sRGB
    assert group.scale is None and not any(r.ramp for r in group.rows)
    assert group.title == "Other vendor segmentation"
    # an unticked segment leaves the legend; another stack shows none of it
    (only,) = legend_groups([placed], uid, frozenset({(placed.obj.sop_instance_uid, 2)}))
    assert [r.label for r in only.rows] == ["Haemorrhage"]
    assert legend_groups([placed], "another stack") == ()
    both_hidden = frozenset({(placed.obj.sop_instance_uid, 1), (placed.obj.sop_instance_uid, 2)})
    assert legend_groups([placed], uid, both_hidden) == ()


def test_a_segment_with_no_mask_on_the_stack_is_not_listed(
    series: tuple[list[Path], list[Stack]], tmp_path: Path
) -> None:
    paths, stacks = series
    masks = blob_masks(N, SIZE, SIZE, [2])
    masks[..., 1] = False  # segment 2 described, but empty everywhere
    placed = _placed(write_seg(source_datasets(paths), tmp_path, masks), stacks)
    (group,) = legend_groups([placed], stacks[0].uid)
    assert [r.label for r in group.rows] == ["Haemorrhage"]


def test_fractional_seg_gets_colour_bars_with_a_0_to_1_scale(
    series: tuple[list[Path], list[Stack]], tmp_path: Path
) -> None:
    paths, stacks = series
    masks = np.zeros((N, SIZE, SIZE, 2), dtype=np.float32)
    masks[2, 10:20, 10:20, 0] = 0.6
    masks[3, 30:40, 30:40, 1] = 0.3
    placed = _placed(write_seg(source_datasets(paths), tmp_path, masks, fractional=True), stacks)
    (group,) = legend_groups([placed], stacks[0].uid)
    assert all(r.ramp for r in group.rows) and len(group.rows) == 2
    assert group.scale == LegendScale("0", "0.5", "1", "")


def test_parametric_map_scale_is_its_own_range_and_unit(
    series: tuple[list[Path], list[Stack]], tmp_path: Path
) -> None:
    paths, stacks = series
    values = np.zeros((N, SIZE, SIZE), dtype=np.float32)
    values[2, 10:20, 10:20] = 40.0
    values[2, 14, 14] = 250.0
    unit = Code("mL/(100.g.min)", "UCUM", "mL/(100g.min)")
    path = write_parametric_map(source_datasets(paths), tmp_path, values, unit=unit, value_range=(0.0, 250.0))
    placed = _placed(path, stacks)
    assert placed.obj.value_range == (0.0, 250.0) and placed.obj.unit == "mL/(100.g.min)"
    (group,) = legend_groups([placed], stacks[0].uid)
    assert [(r.label, r.ramp) for r in group.rows] == [("PROB", True)]
    assert group.scale == LegendScale("0", "125", "250", "mL/(100.g.min)")
    # a probability map without a unit reads 0 - 1 with no unit
    values[2, 14, 14] = 1.0
    plain = _placed(write_parametric_map(source_datasets(paths), tmp_path / "p", values / 40.0), stacks)
    assert legend_groups([plain], stacks[0].uid)[0].scale == LegendScale("0", "0.5", "1", "")


def test_an_integer_parametric_map_scale_is_in_real_world_values(
    series: tuple[list[Path], list[Stack]], tmp_path: Path
) -> None:
    """Stored 0..400 with slope 0.5 and intercept -10: the colour bar reads -10 to 190 (what the values
    mean), the overlay's alpha still spans the stored range."""
    paths, stacks = series
    stored = np.zeros((N, SIZE, SIZE), dtype=np.uint16)
    stored[2, 10:20, 10:20] = 100
    stored[2, 14, 14] = 400
    path = write_parametric_map(
        source_datasets(paths), tmp_path, stored, unit=Code("HU", "UCUM", "Hounsfield unit"),
        value_range=(0, 400), slope=0.5, intercept=-10.0,
    )
    placed = _placed(path, stacks)
    assert placed.obj.value_range == (-10.0, 190.0)
    (group,) = legend_groups([placed], stacks[0].uid)
    assert group.scale == LegendScale("-10", "90", "190", "HU")
    (frame,) = next(iter(placed.layers.values()))
    assert float(frame.mask.max()) == 1.0 and float(frame.mask[12, 12]) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (-0.0, "0"), (0.5, "0.5"), (1.0, "1"), (12.5, "12.5"), (1234.0, "1.23e+03")],
)
def test_tick_labels(value: float, text: str) -> None:
    assert format_value(value) == text
