"""Header facts the display relies on (issue 12): invalid PixelSpacing, ISO 2022 names, lossy copies,
projection series, the CT default window, stack keys across loads, decode codes in messages."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_charset_files
from pydicom.uid import generate_uid

from tests.factories import make_ct_slice, write_ct_series
from viewer.core.codes import code_in, describe
from viewer.core.constants import WINDOW_PRESETS
from viewer.core.dicom.catalogue import rekey_report, stack_owner
from viewer.core.dicom.header import read_header
from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.model import SliceSource
from viewer.core.dicom.volume import StackVolume


def _write(path: Path, ds: pydicom.Dataset) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _slice(**kw: object) -> pydicom.Dataset:
    hu = np.full((16, 16), 40, dtype=np.int16)
    hu[0, :8] = 500
    uids = dict(study_uid=generate_uid(), series_uid=generate_uid(), frame_of_reference_uid=generate_uid())
    uids.update(kw)  # type: ignore[arg-type]
    return make_ct_slice(hu, position=(0.0, 0.0, 0.0), **uids)  # type: ignore[arg-type]


@pytest.mark.parametrize("spacing", [["0", "0"], ["-0.2", "0.2"], ["0.3", "0"]])
def test_zero_or_negative_pixel_spacing_is_missing_and_said(tmp_path: Path, spacing: list[str]) -> None:
    ds = _slice()
    ds.Modality = "CR"
    ds.PixelSpacing = spacing
    path = _write(tmp_path / "cr.dcm", ds)
    records = read_header(SliceSource(path), 0)
    assert isinstance(records, list)
    assert records[0].info.pixel_spacing is None
    report = load_paths([path])
    (stack,) = report.all_stacks()
    assert stack.slices[0].pixel_spacing is None
    assert any("PixelSpacing" in w and "pixels" in w for w in stack.warnings)


def test_positive_pixel_spacing_is_kept(tmp_path: Path) -> None:
    path = _write(tmp_path / "ct.dcm", _slice())
    records = read_header(SliceSource(path), 0)
    assert isinstance(records, list)
    assert records[0].info.pixel_spacing == (0.5, 0.5)


@pytest.mark.parametrize("name", ["chrH31.dcm", "chrH32.dcm", "chrX1.dcm", "chrX2.dcm"])
def test_names_in_other_character_sets_as_pydicom_decodes_them(tmp_path: Path, name: str) -> None:
    src = Path(get_charset_files(name)[0])
    path = tmp_path / name
    shutil.copy(src, path)
    expected = str(pydicom.dcmread(src).PatientName)
    records = read_header(SliceSource(path), 0)
    assert isinstance(records, list)
    assert records[0].patient_name == expected
    assert "\x1b" not in records[0].patient_name and "$B" not in records[0].patient_name


def test_lossy_flag_and_ratio_reach_the_slice(tmp_path: Path) -> None:
    ds = _slice()
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "338"
    lossy = read_header(SliceSource(_write(tmp_path / "lossy.dcm", ds)), 0)
    plain = read_header(SliceSource(_write(tmp_path / "plain.dcm", _slice())), 0)
    assert isinstance(lossy, list) and isinstance(plain, list)
    assert lossy[0].info.lossy and lossy[0].info.lossy_ratio == pytest.approx(338)
    assert not plain[0].info.lossy and plain[0].info.lossy_ratio is None


def test_patient_age_reaches_the_study(tmp_path: Path) -> None:
    ds = _slice()
    ds.PatientAge = "045Y"
    (patient,) = load_paths([_write(tmp_path / "a.dcm", ds)]).patients
    assert patient.studies[0].patient_age == "045Y"


def _rotating_mip(
    folder: Path, n: int = 7, image_type: tuple[str, ...] = ("DERIVED", "SECONDARY", "MIP")
) -> str:
    """``n`` projections of one volume, rotated about the patient's S-I axis (one series)."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k in range(n):
        angle = np.pi * k / n
        row = (float(np.cos(angle)), float(np.sin(angle)), 0.0)
        ds = _slice(study_uid=study, series_uid=series, frame_of_reference_uid=frame)
        ds.ImageOrientationPatient = [*row, 0.0, 0.0, -1.0]
        ds.ImageType = list(image_type)
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = "MIP rotating"
        _write(folder / f"p{(k * 5) % n}.dcm", ds)  # file order differs from instance order
    return series


@pytest.mark.parametrize(
    "image_type", [("DERIVED", "SECONDARY", "MIP"), ("DERIVED", "PRIMARY", "PROJECTION IMAGE"), ()]
)
def test_rotating_projection_series_is_one_playable_stack(
    tmp_path: Path, image_type: tuple[str, ...]
) -> None:
    _rotating_mip(tmp_path, image_type=image_type or ("DERIVED", "SECONDARY", "REFORMATTED"))
    stacks = load_paths([tmp_path]).all_stacks()
    assert len(stacks) == 1
    (stack,) = stacks
    assert len(stack) == 7 and stack.label == ""
    assert [s.instance_number for s in stack.slices] == list(range(1, 8))
    assert not any("localizer" in w for w in stack.warnings)


def test_axial_series_with_a_localizer_still_splits(tmp_path: Path) -> None:
    paths = write_ct_series(tmp_path / "s", 12)
    ds = pydicom.dcmread(paths[0])
    ds.SOPInstanceUID = generate_uid()
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    _write(tmp_path / "s" / "scout.dcm", ds)
    assert sorted(len(s) for s in load_paths([tmp_path]).all_stacks()) == [1, 12]


def test_ct_without_header_window_opens_in_the_brain_window(tmp_path: Path) -> None:
    ds = _slice()
    del ds.WindowWidth, ds.WindowCenter
    (stack,) = load_paths([_write(tmp_path / "ct.dcm", ds)]).all_stacks()
    volume = StackVolume(stack)
    try:
        assert volume.default_window() == WINDOW_PRESETS["brain"]
    finally:
        volume.close()


def test_mr_without_header_window_uses_its_data_range(tmp_path: Path) -> None:
    ds = _slice()
    del ds.WindowWidth, ds.WindowCenter
    ds.Modality = "MR"
    (stack,) = load_paths([_write(tmp_path / "mr.dcm", ds)]).all_stacks()
    volume = StackVolume(stack)
    try:
        window = volume.default_window()
    finally:
        volume.close()
    low, high = window.levels
    assert low >= 40 - 1 and high <= 500 + 1 and window != WINDOW_PRESETS["brain"]


def test_two_loads_of_one_series_uid_under_two_patients_get_two_keys(tmp_path: Path) -> None:
    series, study = generate_uid(), generate_uid()
    write_ct_series(tmp_path / "a", 3, series_uid=series, study_uid=study, patient_id="A", patient_name="A^A")
    write_ct_series(tmp_path / "b", 4, series_uid=series, study_uid=study, patient_id="B", patient_name="B^B")
    first, second = load_paths([tmp_path / "a"]), load_paths([tmp_path / "b"])
    assert first.all_stacks()[0].uid == second.all_stacks()[0].uid == series  # each load alone
    (patient,) = first.patients
    open_owners = {
        st.uid: stack_owner(patient, study_obj, st)
        for study_obj in patient.studies
        for se in study_obj.series
        for st in se.stacks
    }
    renamed = rekey_report(second, open_owners)
    (stack,) = renamed.all_stacks()
    assert stack.uid == f"{series}@1" and len(stack) == 4
    assert renamed.stacks_by_uid == {stack.uid: stack}
    assert second.all_stacks()[0].uid == series  # the original report is left alone
    again = rekey_report(load_paths([tmp_path / "a"]), open_owners)  # the same series opened again
    assert again.all_stacks()[0].uid == series


def test_codes_named_in_decode_messages() -> None:
    assert code_in("Decoding x took longer than 5 s and was stopped (E-TIMEOUT)") == "E-TIMEOUT"
    assert code_in("frame 2 needs 1,024 (E-TRUNC-PIXEL)") == "E-TRUNC-PIXEL"
    assert code_in("pylibjpeg: Unable to decode the pixel data") == "E-DECODE"
    assert describe(code_in("nothing known")) == "cannot be decoded"
