"""The DICOM Segmentation of a ``slice_segmentation`` result (highdicom): binary, one segment per class.

Each segment's property type is the class's finding code (:mod:`viewer.core.airesults.codes`: SNOMED CT
where verified), its category SCT 49755003 "Morphologically abnormal structure", its algorithm the
model (name, version, SHA-256 as a parameter; family DCM 123110 "Artificial Intelligence"). Frames
are the source slices holding a segment (empty frames omitted), each referencing its source image
(SOP Instance UID) and carrying its plane position. highdicom wants the source images as datasets: they
are made from the result's recorded grid (Rows, Columns, PixelSpacing, ImagePositionPatient per slice,
ImageOrientationPatient, FrameOfReferenceUID) and the source series' UIDs and identity, so no file is
read again. Identity as for the AI SR (:mod:`viewer.core.airesults.identity`): de-identified unless asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from viewer.core.airesults import codes as c
from viewer.core.airesults.ai_sr import (
    MANUFACTURER,
    SHA_PARAMETER,
    AIObjectError,
    contributing_equipment,
)
from viewer.core.airesults.identity import (
    SourceSeries,
    add_optional_identity,
    evidence_item,
    mark_deidentified,
    object_uids,
    stable_uid,
)
from viewer.core.airesults.writer import write_dataset
from viewer.core.constants import RSNA_CLASS_COLORS
from viewer.core.tasks.slice_segmentation import SegmentationPrediction

SEG_SERIES_NUMBER: Final = 9903
SEG_SERIES_DESCRIPTION: Final = "Slicewise AI segmentation (research use only, unverified)"
SEGMENT_CATEGORY: Final = hd.sr.CodedConcept("49755003", "SCT", "Morphologically abnormal structure")


def seg_uids(pred: SegmentationPrediction, include_identity: bool) -> tuple[str, str]:
    """(SeriesInstanceUID, SOPInstanceUID): the same model, slices and result give the same UIDs."""
    digest = [float(v) for v in pred.voxel_counts()]
    return object_uids(
        "seg",
        pred.model_sha256,
        pred.stack_uid,
        pred.slice_uids,
        pred.study_instance_uid,
        include_identity,
        digest,
    )


def source_images(
    pred: SegmentationPrediction, source: SourceSeries, include_identity: bool
) -> list[Dataset]:
    """One pixel-free dataset per source slice with what highdicom reads from a source image."""
    grid = pred.grid
    if grid.pixel_spacing is None or grid.orientation is None or not grid.frame_of_reference_uid:
        raise AIObjectError("The stack has no PixelSpacing, orientation or frame of reference: no SEG")
    if any(p is None for p in grid.positions):
        raise AIObjectError("A slice of the stack has no ImagePositionPatient: no SEG")
    images = []
    for uid, position in zip(source.slice_uids, grid.positions):
        ds = evidence_item(source, uid, source.sop_class_uid, source.series_instance_uid, include_identity)
        ds.Modality = grid.modality
        ds.Rows, ds.Columns = grid.rows, grid.columns
        ds.PixelSpacing = list(grid.pixel_spacing)
        ds.ImageOrientationPatient = list(grid.orientation)
        ds.ImagePositionPatient = list(position) if position is not None else []
        ds.FrameOfReferenceUID = grid.frame_of_reference_uid
        if grid.slice_thickness:
            ds.SliceThickness = grid.slice_thickness
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        images.append(ds)
    return images


def _display_color(name: str) -> hd.color.CIELabColor | None:
    """The class's colour in the viewer (timeline, findings), so the SEG's segments match it anywhere."""
    rgb = RSNA_CLASS_COLORS.get(name)
    if rgb is None:
        return None
    return hd.color.CIELabColor.from_rgb(*(int(rgb[i : i + 2], 16) for i in (1, 3, 5)))


def segment_descriptions(pred: SegmentationPrediction) -> list[hd.seg.SegmentDescription]:
    algorithm = hd.AlgorithmIdentificationSequence(
        name=pred.model_name[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=pred.model_version[:64],
        parameters={"model_sha256": pred.model_sha256},
    )
    return [
        hd.seg.SegmentDescription(
            segment_number=k + 1,
            segment_label=name[:64],
            segmented_property_category=SEGMENT_CATEGORY,
            segmented_property_type=c.class_code(name),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=stable_uid(f"slicewise/seg-segment/{pred.model_sha256}/{pred.stack_uid}/{name}"),
            tracking_id=f"AI {name}"[:64],
            display_color=_display_color(name),
        )
        for k, name in enumerate(pred.class_names)
    ]


def build_seg(
    pred: SegmentationPrediction, source: SourceSeries, *, include_identity: bool = False
) -> hd.seg.Segmentation:
    """The binary DICOM SEG of ``pred`` on ``source`` (de-identified unless ``include_identity``)."""
    if tuple(source.slice_uids) != tuple(pred.slice_uids) or not source.slice_uids:
        raise AIObjectError(
            f"The segmentation covers {len(pred.slice_uids)} slices but the source series lists "
            f"{len(source.slice_uids)} (or other UIDs): the SEG would reference the wrong images"
        )
    masks = pred.masks()  # (S, rows, columns, K) bool
    series_uid, instance_uid = seg_uids(pred, include_identity)
    seg = hd.seg.Segmentation(
        source_images=source_images(pred, source, include_identity),
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(pred),
        series_instance_uid=series_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=pred.model_name[:64],
        software_versions=pred.model_version[:64],
        device_serial_number=pred.model_sha256[:16],
        series_description=SEG_SERIES_DESCRIPTION,
        content_label="ICH_AI",
        content_description=f"{pred.model_name} {pred.model_version} {SHA_PARAMETER}{pred.model_sha256}"[:64],
        omit_empty_frames=bool(np.any(masks)),  # an all-empty result keeps its frames (SEG needs one)
        contributing_equipment=[
            contributing_equipment(pred.model_name, pred.model_version, pred.model_sha256)
        ],
    )
    if not include_identity:
        mark_deidentified(seg, "Slicewise: identifiers omitted, UIDs retained")
    else:
        add_optional_identity(seg, source)
    return seg


def write_seg(
    pred: SegmentationPrediction, source: SourceSeries, folder: Path | str, *, include_identity: bool = False
) -> Path:
    """Write the SEG as ``<SOPInstanceUID>.dcm`` in ``folder``; returns its path."""
    return write_dataset(build_seg(pred, source, include_identity=include_identity), Path(folder))
