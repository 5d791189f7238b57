"""The header's VOI LUT Function and VOI LUT Sequence, read and turned into a display ramp (issue 14).

Checked against pydicom's own ``apply_voi_lut`` on the real files: pydicom's ``vlut_04.dcm`` (a VOI LUT
Sequence) and a SIGMOID CT slice written here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import generate_uid

from tests.factories import make_ct_slice, write_slice
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import SliceInfo
from viewer.core.dicom.voi import VoiFunction, display_ramp, voi_function


def vlut_file() -> Path:
    found = get_testdata_file("vlut_04.dcm")
    assert found is not None
    return Path(str(found))


def write_voi_ct(path: Path, function: str, window: tuple[float, float] = (80.0, 40.0)) -> Path:
    """One CT slice whose HU run from -100 to 200 along each row, with a VOI LUT Function."""
    hu = np.tile(np.linspace(-100, 200, 64).round().astype(np.int16), (64, 1))
    ds = make_ct_slice(hu, position=(0, 0, 0), study_uid=generate_uid(), series_uid=generate_uid(),
                       frame_of_reference_uid=generate_uid(), window=window)
    ds.VOILUTFunction = function
    return write_slice(path, ds)


def _info(path: Path) -> SliceInfo:
    (stack,) = load_paths([path]).all_stacks()
    return stack.slices[0]


def test_voi_lut_sequence_is_read_as_pydicom_decodes_it() -> None:
    info = _info(vlut_file())
    ds = pydicom.dcmread(vlut_file())
    assert info.voi_lut is not None and info.voi_lut.first_mapped == 0 and info.voi_lut.bits == 16
    assert np.array_equal(info.voi_lut.values(), np.asarray(ds.VOILUTSequence[0].LUTData))
    ramp = display_ramp(info.window, info.voi_function, info.voi_lut)
    assert ramp is not None and ramp.levels == (0.0, 256.0) and ramp.label == "VOI LUT"
    # every stored value, looked up through the ramp, gives pydicom's VOI output (as a fraction)
    values = np.arange(256)
    expected = apply_voi_lut(values, ds).astype(np.float64) / 65535.0
    assert np.allclose(ramp.values[values], expected, atol=1e-6)


def test_sigmoid_ramp_matches_pydicom_on_the_real_file(tmp_path: Path) -> None:
    path = write_voi_ct(tmp_path / "sig.dcm", "SIGMOID")
    info = _info(path)
    assert info.voi_function == VoiFunction.SIGMOID and info.voi_lut is None
    ramp = display_ramp(info.window, info.voi_function, info.voi_lut)
    assert ramp is not None and ramp.label.endswith("SIGMOID")
    ds = pydicom.dcmread(path)
    hu = apply_modality_lut(ds.pixel_array, ds)[0]
    out = apply_voi_lut(hu, ds)  # pydicom's output range for this file: the rescaled stored range
    y_min, y_max = -(2**15) - 1024, 2**15 - 1 - 1024
    expected = (out - y_min) / (y_max - y_min)
    low, high = ramp.levels
    index = np.clip(((hu - low) / (high - low) * len(ramp.values)).astype(int), 0, len(ramp.values) - 1)
    assert np.allclose(ramp.values[index], expected, atol=2e-3)
    assert expected.min() < 0.01 and expected.max() > 0.99  # the file spans the whole curve


def test_linear_exact_and_plain_linear(tmp_path: Path) -> None:
    info = _info(write_voi_ct(tmp_path / "exact.dcm", "LINEAR_EXACT", window=(0.5, 40.0)))
    assert info.voi_function == VoiFunction.LINEAR_EXACT
    ramp = display_ramp(info.window, info.voi_function, info.voi_lut)
    assert ramp is not None and ramp.levels == pytest.approx((39.75, 40.25))  # a width under 1 is kept
    assert ramp.values[0] < 0.01 and ramp.values[-1] > 0.99
    assert display_ramp(_info(write_voi_ct(tmp_path / "lin.dcm", "LINEAR")).window, VoiFunction.LINEAR,
                        None) is None  # shown as the plain linear window
    assert voi_function("bogus") == VoiFunction.LINEAR and voi_function(None) == VoiFunction.LINEAR
