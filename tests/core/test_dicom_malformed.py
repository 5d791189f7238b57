"""Small mutation sweep: truncations and byte flips end in a load or a typed error, never a crash."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from viewer.core.dicom.loader import load_paths
from viewer.core.dicom.volume import StackVolume
from viewer.core.errors import PixelDecodeError

SEEDS = ["CT_small.dcm", "MR_small_RLE.dcm", "emri_small_jpeg_ls_lossless.dcm", "eCT_Supplemental.dcm"]
KNOWN_CODES = {"E-NOT-DICOM", "E-READ", "E-NO-PIXELS", "E-TOO-LARGE", "E-DICOMDIR"}


def _exercise(folder: Path) -> tuple[int, int]:
    """Load each file in ``folder`` on its own (mutants share a SOP Instance UID: loaded together, all
    but the best copy would be set aside as duplicates) and decode every slice: (decoded, bad)."""
    good = bad = skipped = 0
    for path in sorted(folder.iterdir()):
        report = load_paths([path])
        assert {s.code for s in report.skipped} <= KNOWN_CODES
        skipped += len(report.skipped)
        for stack in report.all_stacks():
            with StackVolume(stack) as vol:
                for i in range(len(vol)):
                    try:
                        vol.get_slice(i)
                        good += 1
                    except PixelDecodeError:
                        bad += 1
                assert set(vol.bad_slices) <= set(range(len(vol)))
    assert good + bad + skipped >= 1
    return good, bad


@pytest.mark.parametrize("name", SEEDS)
def test_truncation_sweep(name: str, tmp_path: Path) -> None:
    data = Path(str(get_testdata_file(name))).read_bytes()
    for k in range(1, 16):
        (tmp_path / f"cut{k:02d}.dcm").write_bytes(data[: len(data) * k // 16])
    _, bad = _exercise(tmp_path)
    assert bad >= 1  # cuts inside the pixel data are reported as bad slices


@pytest.mark.parametrize("name", SEEDS)
def test_byte_flip_sweep(name: str, tmp_path: Path) -> None:
    data = bytearray(Path(str(get_testdata_file(name))).read_bytes())
    rng = random.Random(name)
    for k in range(12):
        mutant = bytearray(data)
        for _ in range(8):
            pos = rng.randrange(128, min(len(mutant), 4096))  # the header, where lengths and VRs live
            mutant[pos] = rng.randrange(256)
        (tmp_path / f"mut{k:02d}.dcm").write_bytes(bytes(mutant))
    _exercise(tmp_path)  # before the fix, a pylibjpeg-rle panic (a BaseException) escaped here


def test_length_inflation_does_not_allocate(tmp_path: Path) -> None:
    data = bytearray(Path(str(get_testdata_file("CT_small.dcm"))).read_bytes())
    at = data.find(b"\xe0\x7f\x10\x00")  # the Pixel Data tag
    data[at + 8 : at + 12] = (0xFFFFFFF0).to_bytes(4, "little")  # declared length ~4 GB
    (tmp_path / "inflated.dcm").write_bytes(bytes(data))
    _exercise(tmp_path)
