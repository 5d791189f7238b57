"""Others' result objects for tests, written by highdicom: a SEG and a TID 1500 measurement report that
reference a factory series (tests/factories.py), and a GSPS written with pydicom."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

SEG_LABELS = ("Haemorrhage", "Oedema")
SEG_COLORS = ((255, 0, 0), (0, 0, 255))  # sRGB, written as CIELab


def source_datasets(paths: Sequence[Path]) -> list[FileDataset]:
    """The factory slices with the study attributes highdicom copies (the files are not changed)."""
    out = []
    for p in paths:
        ds = dcmread(p)
        for keyword, value in (
            ("AccessionNumber", ""),
            ("ReferringPhysicianName", ""),
            ("StudyID", "1"),
            ("StudyTime", "120000"),
            ("Manufacturer", "Factory"),
        ):
            if keyword not in ds:
                setattr(ds, keyword, value)
        out.append(ds)
    return out


def write_seg(
    sources: Sequence[FileDataset],
    folder: Path,
    masks: np.ndarray,
    *,
    fractional: bool = False,
    name: str = "seg.dcm",
) -> Path:
    """A SEG of ``masks`` ([slices, rows, columns, 2] bool or 0..1 float), segment 1 "Haemorrhage" red,
    2 "Oedema" blue, one frame per source slice and segment (empty frames left out by highdicom)."""
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k + 1,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Hemorrhage if k == 0 else codes.SCT.Edema,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            display_color=hd.color.CIELabColor.from_rgb(*SEG_COLORS[k]),
        )
        for k, label in enumerate(SEG_LABELS)
    ]
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=masks.astype(np.float32) if fractional else masks.astype(bool),
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL
        if fractional
        else hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=50,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Other AI Inc.",
        manufacturer_model_name="BleedSeg",
        software_versions="1.0",
        device_serial_number="1",
        series_description="Other vendor segmentation",
        max_fractional_value=255 if fractional else None,
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    seg.save_as(path)
    return path


def write_measurement_sr(
    sources: Sequence[FileDataset],
    folder: Path,
    slice_index: int,
    *,
    name: str = "sr.dcm",
    at: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """A TID 1500 report with one planar ROI group on slice ``slice_index``: a polygon (columns 10-30, rows
    10-25, moved by ``at``), its area (42 mm2) and a qualitative finding; and one image-level group
    (finding Haemorrhage on two slices)."""
    src = sources[slice_index]
    image = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=src.SOPClassUID, referenced_sop_instance_uid=src.SOPInstanceUID
    )
    polygon = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[10.0, 10.0], [30.0, 10.0], [30.0, 25.0], [10.0, 25.0], [10.0, 10.0]]) + at,
        source_image=image,
    )
    roi_group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Lesion 1"),
        referenced_region=polygon,
        finding_type=codes.SCT.Hemorrhage,
        measurements=[hd.sr.Measurement(codes.SCT.Area, 42.0, codes.UCUM.SquareMillimeter)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(codes.DCM.LevelOfSignificance, codes.SCT.Severe)
        ],
    )
    image_group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="AI slices"),
        finding_type=codes.SCT.Hemorrhage,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(s.SOPClassUID, s.SOPInstanceUID)
            for s in (sources[slice_index], sources[slice_index + 1])
        ],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(codes.SCT.Hemorrhage, codes.SCT.Present)],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=hd.sr.ObserverContext(
                codes.DCM.Person, hd.sr.PersonObserverIdentifyingAttributes(name="Reader^Other")
            )
        ),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=[roi_group, image_group],
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(sources),
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=51,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Other AI Inc.",
        series_description="Other vendor measurements",
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    sr.save_as(path)
    return path


def write_gsps(
    sources: Sequence[FileDataset],
    folder: Path,
    slice_index: int,
    *,
    name: str = "gsps.dcm",
    at: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """A GSPS with one polyline and one text on slice ``slice_index`` (moved by ``at``)."""
    src = sources[slice_index]
    ref_image = Dataset()
    ref_image.ReferencedSOPClassUID = src.SOPClassUID
    ref_image.ReferencedSOPInstanceUID = src.SOPInstanceUID
    ref_series = Dataset()
    ref_series.SeriesInstanceUID = src.SeriesInstanceUID
    ref_series.ReferencedImageSequence = [ref_image]
    obj = Dataset()
    obj.GraphicAnnotationUnits = "PIXEL"
    obj.GraphicDimensions = 2
    obj.NumberOfGraphicPoints = 3
    obj.GraphicData = [v + at[k % 2] for k, v in enumerate([5.0, 5.0, 20.0, 5.0, 20.0, 15.0])]
    obj.GraphicType = "POLYLINE"
    obj.GraphicFilled = "N"
    text = Dataset()
    text.AnchorPointAnnotationUnits = "PIXEL"
    text.UnformattedTextValue = "see here"
    text.AnchorPoint = [20.0 + at[0], 15.0 + at[1]]
    text.AnchorPointVisibility = "Y"
    annotation = Dataset()
    annotation.GraphicLayer = "READER"
    annotation.ReferencedImageSequence = [ref_image]
    annotation.GraphicObjectSequence = [obj]
    annotation.TextObjectSequence = [text]
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.11.1"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = src.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "PR"
    ds.PatientName, ds.PatientID = src.PatientName, src.PatientID
    ds.ContentLabel = "READER_NOTES"
    ds.ReferencedSeriesSequence = [ref_series]
    ds.GraphicAnnotationSequence = [annotation]
    ds.ensure_file_meta()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def blob_masks(n: int, rows: int, cols: int, slices: Sequence[int]) -> np.ndarray:
    """[n, rows, cols, 2]: segment 1 a 6x8 block at rows 20-25, columns 30-37 on ``slices``; segment 2 a
    4x4 block at rows 40-43, columns 10-13 on the first of them."""
    masks = np.zeros((n, rows, cols, 2), dtype=bool)
    for s in slices:
        masks[s, 20:26, 30:38, 0] = True
    masks[slices[0], 40:44, 10:14, 1] = True
    return masks


def write_parametric_map(
    sources: Sequence[FileDataset],
    folder: Path,
    values: np.ndarray,
    *,
    unit: Code | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    slope: float = 1.0,
    intercept: float = 0.0,
) -> Path:
    """A Parametric Map ("bleed probability", 0..1, no unit, unless given) of ``values`` ([slices, rows,
    columns]: float32, or unsigned integers stored as such with ``slope`` and ``intercept``)."""
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="PROB",
        lut_explanation="Bleed probability",
        unit=codes.UCUM.NoUnits if unit is None else unit,
        value_range=value_range,
        slope=slope,
        intercept=intercept,
    )
    pm = hd.pm.ParametricMap(
        source_images=list(sources),
        pixel_array=values if values.dtype.kind == "u" else values.astype(np.float32),
        series_instance_uid=generate_uid(),
        series_number=52,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Other AI Inc.",
        manufacturer_model_name="BleedMap",
        software_versions="1.0",
        device_serial_number="1",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        window_center=0.5,
        window_width=1.0,
        content_label="PROBMAP",
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pm.dcm"
    pm.save_as(path)
    return path
