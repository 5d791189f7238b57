"""Write synthetic but standards-valid DICOM series for tests (plain pydicom, no torch)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

CANARY_NAME = "CANARY^PATIENT"
CANARY_ID = "CANARY-ID-0042"


def make_ct_slice(
    hu: np.ndarray,
    *,
    position: Sequence[float],
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    instance_number: int = 1,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
    spacing: tuple[float, float] = (0.5, 0.5),
    thickness: float = 5.0,
    patient_name: str = CANARY_NAME,
    patient_id: str = CANARY_ID,
    series_description: str = "Head 5mm",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    window: tuple[float, float] | None = (80.0, 40.0),
    study_date: str = "20260101",
    study_description: str = "CT Head",
    modality: str = "CT",
) -> FileDataset:
    """One CT slice storing ``hu`` as int16 with slope 1 / intercept -1024."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = study_date
    ds.StudyDescription = study_description
    ds.SeriesDescription = series_description
    ds.SeriesNumber = 2
    ds.Modality = modality
    ds.ImageType = list(image_type)
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [spacing[0], spacing[1]]
    ds.SliceThickness = thickness
    ds.Rows, ds.Columns = hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = 1
    ds.RescaleIntercept = -1024
    if window is not None:
        ds.WindowWidth, ds.WindowCenter = window
    ds.PixelData = (np.asarray(hu) + 1024).astype(np.int16).tobytes()
    return ds


def write_ct_series(
    folder: Path,
    n_slices: int = 20,
    *,
    rows: int = 64,
    columns: int = 64,
    spacing_z: float = 5.0,
    shuffle: bool = True,
    random_names: bool = True,
    seed: int = 0,
    positions: Sequence[float] | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_name: str = CANARY_NAME,
    patient_id: str = CANARY_ID,
    study_date: str = "20260101",
    study_description: str = "CT Head",
    series_description: str = "Head 5mm",
    modality: str = "CT",
) -> list[Path]:
    """Write an axial CT series whose slice ``k`` has HU value ``k`` in its top-left pixel (``modality``
    only relabels it, e.g. "MR" for protocol tests).

    Returns the paths in true (ascending z) order, whatever names and write order were used.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    for_uid = generate_uid()
    zs = list(positions) if positions is not None else [k * spacing_z for k in range(n_slices)]
    order = list(range(len(zs)))
    write_order = order[:]
    if shuffle:
        rng.shuffle(write_order)
    paths: dict[int, Path] = {}
    yy, xx = np.mgrid[0:rows, 0:columns]
    disc = ((yy - rows / 2) ** 2 + (xx - columns / 2) ** 2) < (min(rows, columns) * 0.4) ** 2
    for k in write_order:
        hu = np.where(disc, 30, -1000).astype(np.int16)
        hu[0, 0] = k
        ds = make_ct_slice(
            hu,
            position=(-16.0, -16.0, zs[k]),
            instance_number=k + 1,
            study_uid=study_uid,
            series_uid=series_uid,
            frame_of_reference_uid=for_uid,
            patient_name=patient_name,
            patient_id=patient_id,
            study_date=study_date,
            study_description=study_description,
            series_description=series_description,
            modality=modality,
        )
        name = f"{rng.getrandbits(48):012x}.dcm" if random_names else f"slice_{k:04d}.dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths[k] = path
    return [paths[k] for k in order]


def write_slice(path: Path, ds: FileDataset) -> Path:
    """Save one dataset as a DICOM file (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_localizer(
    path: Path,
    *,
    study_uid: str,
    series_uid: str,
    rows: int = 64,
    columns: int = 64,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "LOCALIZER"),
    orientation: Sequence[float] = (0, 1, 0, 0, 0, -1),
) -> Path:
    """A sagittal scout image in an existing series (LOCALIZER in ImageType unless told otherwise)."""
    hu = np.full((rows, columns), -500, dtype=np.int16)
    ds = make_ct_slice(
        hu,
        position=(0.0, -16.0, 100.0),
        orientation=orientation,
        instance_number=999,
        study_uid=study_uid,
        series_uid=series_uid,
        frame_of_reference_uid=generate_uid(),
        image_type=image_type,
    )
    return write_slice(path, ds)


def write_tilted_series(
    folder: Path, n_slices: int = 12, *, tilt_deg: float = 15.0, seed: int = 0
) -> list[Path]:
    """An axial series whose positions shear along y (gantry tilt), top-left pixel = slice index."""
    shift = float(np.tan(np.radians(tilt_deg))) * 5.0
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    rng = random.Random(seed)
    order = list(range(n_slices))
    rng.shuffle(order)
    paths: dict[int, Path] = {}
    for k in order:
        hu = np.full((32, 32), 20, dtype=np.int16)
        hu[0, 0] = k
        ds = make_ct_slice(
            hu,
            position=(-16.0, -16.0 + k * shift, k * 5.0),
            instance_number=n_slices - k,  # deliberately reversed: geometry must win
            study_uid=study_uid,
            series_uid=series_uid,
            frame_of_reference_uid=for_uid,
        )
        paths[k] = write_slice(folder / f"{rng.getrandbits(40):010x}", ds)
    return [paths[k] for k in range(n_slices)]


def write_bomb_header(path: Path, *, rows: int = 65535, columns: int = 65535, bits: int = 32) -> Path:
    """A ~2 KB file whose header declares rows x columns x bits (17.2 GB by default) and holds 4 bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.PatientName = CANARY_NAME
    ds.PatientID = CANARY_ID
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.ImageComments = "x" * 1500  # pad the header to about 2 KB
    ds.PixelData = b"\0\0\0\0"
    return write_slice(path, ds)


def truncate_file(path: Path, drop_bytes: int) -> int:
    """Cut ``drop_bytes`` off the end of ``path``; returns the new size."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - drop_bytes])
    return len(data) - drop_bytes


def compress_files(paths: Sequence[Path], transfer_syntax: str = "1.2.840.10008.1.2.5") -> None:
    """Re-encode files in place (default RLE Lossless; JPEG 2000 lossless needs pylibjpeg-openjpeg)."""
    from pydicom import dcmread

    for path in paths:
        ds = dcmread(path)
        ds.compress(transfer_syntax)
        ds.save_as(path, enforce_file_format=True)


def write_geometry_series(
    folder: Path,
    hu: np.ndarray,
    *,
    positions: Sequence[Sequence[float]],
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (0.5, 0.5),
    frame_of_reference_uid: str | None = None,
    study_uid: str | None = None,
    series_description: str = "Geometry",
    seed: int = 0,
) -> list[Path]:
    """A series of ``hu[k]`` (``(N, rows, cols)``) at ``positions[k]`` with one IOP, written in random order
    under random names (tilted, flipped, oblique or unevenly spaced stacks). Returns paths in ``k`` order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    order = list(range(len(positions)))
    rng.shuffle(order)
    paths: dict[int, Path] = {}
    for k in order:
        ds = make_ct_slice(
            np.asarray(hu[k], dtype=np.int16),
            position=positions[k],
            orientation=orientation,
            instance_number=k + 1,
            study_uid=study_uid,
            series_uid=series_uid,
            frame_of_reference_uid=for_uid,
            spacing=spacing,
            series_description=series_description,
        )
        paths[k] = write_slice(folder / f"{rng.getrandbits(40):010x}.dcm", ds)
    return [paths[k] for k in range(len(positions))]
