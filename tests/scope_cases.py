"""DICOM series for the applicability tests: heads (plain, CTA, reformats) and bodies (chest, abdomen).

Heads come from the training generator (``training.synth.render_study``, numpy only); bodies are drawn
here (lungs at -800 HU inside ribs, abdomen with liver, bowel gas and spine). Each writer returns the
folder it wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from tests.factories import make_ct_slice, write_slice

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
HEAD_SIZE = 128  # px: the generator's 230-260 mm field of view at ~1.9 mm per pixel
# what the tests' model metadata says it was trained on (covers the generator and the demo study)
TRAINED_RANGE = {
    "pixel_spacing_mm": [0.4, 2.1],
    "slice_thickness_mm": [4.5, 5.5],
    "field_of_view_mm": [200.0, 270.0],
    "matrix": [128, 512],
    "slices": [8, 60],
    "noise_hu": [3.0, 6.0],  # the generator's standard noise (the demo: 3-3.5)
}


def synthetic_head(seed: int, n_slices: int = 16, size: int = HEAD_SIZE) -> tuple[np.ndarray, float]:
    """(S, size, size) HU of a normal-or-not synthetic head, and its pixel spacing in mm."""
    from training.synth import SynthConfig, render_study

    study = render_study(np.random.default_rng(seed), n_slices, SynthConfig(size=size))
    return study.hu, float(study.pixel_spacing)


def write_volume(
    folder: Path,
    hu: np.ndarray,
    *,
    spacing: tuple[float, float],
    positions: Sequence[Sequence[float]],
    orientation: Sequence[float] = AXIAL,
    thickness: float = 5.0,
    modality: str = "CT",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    contrast_agent: str | None = None,
    body_part: str | None = None,
) -> Path:
    """Write ``hu`` (S, rows, cols) as one series, slice ``i`` at ``positions[i]``."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for i, img in enumerate(hu):
        ds = make_ct_slice(
            np.clip(np.rint(img), -1024, 3000).astype(np.int16),
            position=positions[i],
            orientation=orientation,
            instance_number=i + 1,
            study_uid=study,
            series_uid=series,
            frame_of_reference_uid=frame,
            spacing=spacing,
            thickness=thickness,
            image_type=image_type,
        )
        ds.Modality = modality
        if contrast_agent is not None:
            ds.ContrastBolusAgent = contrast_agent
        if body_part is not None:
            ds.BodyPartExamined = body_part
        write_slice(folder / f"{i:03d}.dcm", ds)
    return folder


def axial_positions(
    n: int, rows: int, cols: int, ps: float, dz: float = 5.0
) -> list[tuple[float, float, float]]:
    return [(-(cols - 1) / 2 * ps, -(rows - 1) / 2 * ps, dz * i) for i in range(n)]


def write_head(folder: Path, seed: int = 11, **kwargs: object) -> Path:
    hu, ps = synthetic_head(seed)
    n, rows, cols = hu.shape
    return write_volume(folder, hu, spacing=(ps, ps), positions=axial_positions(n, rows, cols, ps), **kwargs)  # type: ignore[arg-type]


def add_vessels(hu: np.ndarray, ps: float, seed: int = 0) -> np.ndarray:
    """CTA: eight 5 mm vessels at 280-300 HU in every slice, inside the brain."""
    rng = np.random.default_rng(seed)
    out = hu.copy()
    _, rows, cols = hu.shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    cy, cx = rows / 2, cols / 2
    for z in range(hu.shape[0]):
        for k in range(8):
            angle = 2 * np.pi * k / 8 + rng.uniform(-0.2, 0.2)
            r_mm = rng.uniform(15.0, 40.0)
            vy, vx = cy + np.sin(angle) * r_mm / ps, cx + np.cos(angle) * r_mm / ps
            vessel = (yy - vy) ** 2 + (xx - vx) ** 2 <= (2.5 / ps) ** 2
            out[z][vessel] = rng.uniform(280.0, 300.0)
    return out


def write_cta(folder: Path, seed: int = 12) -> Path:
    hu, ps = synthetic_head(seed)
    hu = add_vessels(hu, ps)
    n, rows, cols = hu.shape
    return write_volume(folder, hu, spacing=(ps, ps), positions=axial_positions(n, rows, cols, ps))


def write_reformat(folder: Path, plane: str, seed: int = 13) -> Path:
    """The same synthetic head resliced: coronal (rows = z, cols = x) or sagittal (rows = z, cols = y)."""
    hu, ps = synthetic_head(seed)
    n, rows, cols = hu.shape
    top = 5.0 * (n - 1)
    picks = list(range(cols // 4, 3 * cols // 4, 4))
    if plane == "coronal":
        images = np.stack([hu[::-1, j, :] for j in picks])
        positions = [(-(cols - 1) / 2 * ps, (j - (rows - 1) / 2) * ps, top) for j in picks]
        orientation = CORONAL
    else:
        images = np.stack([hu[::-1, :, i] for i in picks])
        positions = [((i - (cols - 1) / 2) * ps, -(rows - 1) / 2 * ps, top) for i in picks]
        orientation = SAGITTAL
    return write_volume(
        folder,
        images,
        spacing=(5.0, ps),
        positions=positions,
        orientation=orientation,
        thickness=ps,
        image_type=("DERIVED", "SECONDARY", "REFORMATTED"),
    )


def body_volume(kind: str, n: int = 12, size: int = 256, ps: float = 1.4, seed: int = 0) -> np.ndarray:
    """(n, size, size) HU of a chest (lungs at -800 HU inside ribs) or an abdomen (liver, gas, spine)."""
    rng = np.random.default_rng(seed)
    c = (np.arange(size) - (size - 1) / 2) * ps
    y, x = np.meshgrid(c, c, indexing="ij")
    out = np.empty((n, size, size), dtype=np.float32)
    for z in range(n):
        img = np.full((size, size), -1000.0, dtype=np.float32)
        body = (x / 170) ** 2 + (y / 120) ** 2 < 1
        img[body] = -100.0  # fat
        img[(x / 155) ** 2 + (y / 105) ** 2 < 1] = 40.0  # muscle and organs
        img[x**2 + (y - 85) ** 2 < 18**2] = 700.0  # vertebral body
        if kind == "chest":
            for side in (-1, 1):
                img[((x - side * 70) / 55) ** 2 + ((y + 5) / 80) ** 2 < 1] = -800.0  # lungs
            img[(x / 40) ** 2 + ((y + 5) / 45) ** 2 < 1] = 40.0  # heart and mediastinum
            for angle in np.linspace(0, 2 * np.pi, 16, endpoint=False) + 0.1 * z:
                rx, ry = 150 * np.cos(angle), 105 * np.sin(angle)
                img[(x - rx) ** 2 + (y - ry) ** 2 < 6**2] = 800.0  # ribs
        else:
            img[((x + 60) / 70) ** 2 + (y / 60) ** 2 < 1] = 60.0  # liver
            for _ in range(6):
                gx, gy = rng.uniform(-40, 90), rng.uniform(-60, 40)
                img[(x - gx) ** 2 + (y - gy) ** 2 < rng.uniform(6, 14) ** 2] = -1000.0  # bowel gas
            img[((x - 60) / 20) ** 2 + ((y - 40) / 30) ** 2 < 1] = 150.0  # enhancing kidney
        out[z] = img + rng.normal(0, 5, img.shape).astype(np.float32)
    return out


def write_body(folder: Path, kind: str) -> Path:
    hu = body_volume(kind)
    n, rows, cols = hu.shape
    return write_volume(
        folder,
        hu,
        spacing=(1.4, 1.4),
        positions=axial_positions(n, rows, cols, 1.4),
        body_part="CHEST" if kind == "chest" else "ABDOMEN",
    )


def write_ct_small_stack(folder: Path, n: int = 20) -> Path:
    """pydicom's CT_small.dcm (a contrast body slice) stacked ``n`` times at 5 mm."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    src = dcmread(str(get_testdata_file("CT_small.dcm")))
    series = generate_uid()
    for i in range(n):
        ds = src.copy()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series
        ds.InstanceNumber = i + 1
        pos = [float(v) for v in src.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 5.0 * i]
        folder.mkdir(parents=True, exist_ok=True)
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
    return folder


def write_mr(folder: Path) -> Path:
    hu, ps = synthetic_head(14, n_slices=8)
    n, rows, cols = hu.shape
    return write_volume(
        folder, hu, spacing=(ps, ps), positions=axial_positions(n, rows, cols, ps), modality="MR"
    )


def write_localizers(folder: Path, n: int = 3) -> Path:
    """A scout series: ``n`` sagittal projection images marked LOCALIZER."""
    hu, ps = synthetic_head(15, n_slices=8)
    images = np.stack([hu[::-1, :, hu.shape[2] // 2]] * n)
    positions = [(float(i), -100.0, 100.0) for i in range(n)]
    return write_volume(
        folder,
        images,
        spacing=(5.0, ps),
        positions=positions,
        orientation=SAGITTAL,
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
    )


def dicomdir_ct_series() -> list[Path]:
    """The two 16x16 CT series of pydicom-data's ``dicomdirtests`` ("Routine Brain", "SmartScore")."""
    from pydicom.data import get_testdata_file

    root = Path(str(get_testdata_file("dicomdirtests", read=False)))
    return [root / "77654033" / "CT2", root / "98892001" / "CT5N"]


def simple_head_series(folder: Path, n: int, size: int = 256, ps: float = 0.9) -> Path:
    """An axial head-like CT of ``n`` slices, cheap to write at any length: a 6 mm skull ring (1000 HU)
    around brain (30 HU), 230 mm field of view at 256 px; slice ``k`` has HU ``k`` in its top-left pixel
    (as ``tests.factories.write_ct_series``)."""
    c = (np.arange(size) - (size - 1) / 2) * ps
    y, x = np.meshgrid(c, c, indexing="ij")
    r = np.hypot(x / 1.0, y / 1.2)
    base = np.where(r < 78, 30.0, -1000.0)
    base[(r >= 72) & (r < 78)] = 1000.0
    hu = np.repeat(base[None].astype(np.float32), n, axis=0)
    hu[:, 0, 0] = np.arange(n) % 1000
    return write_volume(folder, hu, spacing=(ps, ps), positions=axial_positions(n, size, size, ps))
