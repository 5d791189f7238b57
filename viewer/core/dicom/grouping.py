"""Group header records into Patient -> Study -> Series -> Stack, sort slices and flag geometry problems."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from viewer.core.constants import SPACING_TOLERANCE, TILT_TOLERANCE_DEG
from viewer.core.dicom.header import HeaderRecord
from viewer.core.dicom.model import Patient, Series, SliceInfo, Stack, Study

ORIENTATION_DECIMALS = 3  # IOPs equal to 1e-3 belong to one stack
POSITION_EPS = 1e-3  # mm: two slices closer than this share a position


def _source_key(info: SliceInfo) -> tuple[str, str, int]:
    return (str(info.source.path), info.source.member or "", info.source.frame)


def _iop_key(iop: tuple[float, ...] | None) -> tuple[float, ...] | None:
    return None if iop is None else tuple(round(v, ORIENTATION_DECIMALS) + 0.0 for v in iop)


def _normal(iop: Sequence[float]) -> np.ndarray | None:
    row, col = np.asarray(iop[:3], dtype=float), np.asarray(iop[3:6], dtype=float)
    n = np.cross(row, col)
    norm = float(np.linalg.norm(n))
    return None if norm < 1e-6 else n / norm


def orientation_name(iop: Sequence[float] | None) -> str:
    if iop is None:
        return "unknown orientation"
    n = _normal(iop)
    if n is None:
        return "unknown orientation"
    axis = int(np.argmax(np.abs(n)))
    if abs(n[axis]) < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def sort_slices(slices: Sequence[SliceInfo]) -> tuple[list[SliceInfo], str, list[str], float | None]:
    """Sort one stack's slices: (sorted slices with ``location``, sort method, warnings, spacing).

    Deterministic whatever the input order: ties break on InstanceNumber, then the source path.
    """
    items = sorted(slices, key=_source_key)
    warnings: list[str] = []
    geometric = bool(items) and all(s.position is not None and s.orientation is not None for s in items)
    if geometric and len({_iop_key(s.orientation) for s in items}) > 1:
        geometric = False
        warnings.append("Inconsistent orientations: sorted by instance number; not reconstructable")
    normal = None
    if geometric:
        mid = items[len(items) // 2]
        assert mid.orientation is not None
        normal = _normal(mid.orientation)
        if normal is None:
            geometric = False
            warnings.append("Degenerate ImageOrientationPatient: sorted by instance number")
    if geometric and normal is not None:
        locs = [float(np.dot(normal, s.position)) for s in items]  # type: ignore[arg-type]
        if len(items) > 1 and max(locs) - min(locs) < POSITION_EPS:
            geometric = False
            warnings.append("All slices share one position: sorted by instance number")
        else:
            located = [replace(s, location=loc) for s, loc in zip(items, locs, strict=True)]
            located.sort(
                key=lambda s: (
                    round(s.location or 0.0, 4),
                    s.instance_number if s.instance_number is not None else math.inf,
                    _source_key(s),
                )
            )
            spacing = _geometry_warnings(located, normal, warnings)
            return located, "position", warnings, spacing
    if items and all(s.instance_number is not None for s in items):
        items.sort(key=lambda s: (s.instance_number, _source_key(s)))
        return items, "instance_number", warnings, None
    return items, "file_order", warnings, None


def _geometry_warnings(slices: list[SliceInfo], normal: np.ndarray, warnings: list[str]) -> float | None:
    if len(slices) < 2:
        return slices[0].slice_thickness if slices else None
    locs = np.array([s.location for s in slices], dtype=float)
    diffs = np.diff(locs)
    same = int(np.sum(diffs < POSITION_EPS))
    if same:
        warnings.append(f"{same} slice(s) share a position with another (duplicates or a 4D series)")
    steps = diffs[diffs >= POSITION_EPS]
    if steps.size == 0:
        return None
    spacing = float(np.median(steps))
    ratio = steps / spacing
    multiples = np.rint(ratio)
    gap_mask = (multiples >= 2) & (np.abs(ratio - multiples) < 0.1 * multiples)
    if gap_mask.any():
        missing = int(np.sum(multiples[gap_mask] - 1))
        warnings.append(
            f"{missing} missing slice(s): gap of up to {float(steps[gap_mask].max()):.2f} mm "
            f"where the spacing is {spacing:.2f} mm"
        )
    regular = steps[~gap_mask]
    if regular.size and (float(regular.max()) - float(regular.min())) > SPACING_TOLERANCE * spacing:
        warnings.append(f"Irregular slice spacing ({float(regular.min()):.2f}–{float(regular.max()):.2f} mm)")
    first, last = np.asarray(slices[0].position), np.asarray(slices[-1].position)
    direction = last - first
    dist = float(np.linalg.norm(direction))
    if dist > POSITION_EPS:
        cos = abs(float(np.dot(direction / dist, normal)))
        angle = math.degrees(math.acos(min(1.0, cos)))
        if angle > TILT_TOLERANCE_DEG:
            warnings.append(f"Gantry tilt {angle:.1f}° (slices are sheared along the slice normal)")
    return spacing


def _is_localizer(info: SliceInfo) -> bool:
    return "LOCALIZER" in info.image_type


def _dedupe(records: list[HeaderRecord]) -> tuple[list[HeaderRecord], int]:
    seen: set[tuple[str, int]] = set()
    kept, dropped = [], 0
    for rec in sorted(records, key=lambda r: (r.order, r.info.source.frame)):
        uid = rec.info.sop_instance_uid
        key = (uid, rec.info.source.frame)
        if uid and key in seen:
            dropped += 1
            continue
        seen.add(key)
        kept.append(rec)
    return kept, dropped


def build_stacks(records: list[HeaderRecord]) -> list[Stack]:
    """Split one series' records into sorted stacks (main stack first, keyed SeriesInstanceUID[#n])."""
    records, dropped = _dedupe(records)
    first = records[0]
    groups: dict[tuple[Any, ...], list[SliceInfo]] = defaultdict(list)
    for rec in records:
        info = rec.info
        key = (_is_localizer(info), _iop_key(info.orientation), info.rows, info.columns, info.is_color)
        groups[key].append(info)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1]), str(kv[0])))
    main_key = ordered[0][0]
    main_size = len(ordered[0][1])
    stacks: list[Stack] = []
    for n, (key, infos) in enumerate(ordered):
        localizer, iop, rows, cols, color = key
        label = ""
        if n:
            if localizer or (
                iop != main_key[1] and len(infos) <= max(3, main_size // 10) and not main_key[0]
            ):
                label = "localizer"
            elif iop != main_key[1]:
                label = orientation_name(infos[0].orientation)
            elif (rows, cols) != (main_key[2], main_key[3]):
                label = f"{rows}x{cols}"
            else:
                label = "colour" if color else "greyscale"
        elif localizer:
            label = "localizer"
        sorted_slices, method, warnings, spacing = sort_slices(infos)
        if n == 0 and dropped:
            warnings.insert(
                0, f"{dropped} duplicate instance(s) ignored (same SOPInstanceUID; kept the first)"
            )
        if n == 0 and len(ordered) > 1:
            extra = sum(len(v) for _, v in ordered[1:])
            warnings.append(f"Series split: {extra} image(s) in {len(ordered) - 1} other stack(s)")
        stacks.append(
            Stack(
                uid=first.series_uid if n == 0 else f"{first.series_uid}#{n}",
                series_instance_uid=first.series_uid,
                study_instance_uid=first.study_uid,
                modality=first.modality,
                series_description=first.series_description,
                series_number=first.series_number,
                slices=tuple(sorted_slices),
                sort_method=method,
                warnings=tuple(warnings),
                label=label,
                slice_spacing=spacing,
                frame_of_reference_uid=first.frame_of_reference_uid,
            )
        )
    return stacks


def build_tree(records: list[HeaderRecord]) -> tuple[Patient, ...]:
    """Patient -> Study -> Series -> Stack, each level in first-seen (file) order."""
    by_patient: dict[tuple[str, str], dict[str, dict[str, list[HeaderRecord]]]] = {}
    for rec in sorted(records, key=lambda r: (r.order, r.info.source.frame)):
        series_uid = rec.series_uid or f"unknown-series-{rec.info.source.path.parent.name}"
        study_uid = rec.study_uid or "unknown-study"
        if not rec.series_uid or not rec.study_uid:
            rec = replace(rec, series_uid=series_uid, study_uid=study_uid)
        studies = by_patient.setdefault((rec.patient_id, rec.patient_name), {})
        studies.setdefault(study_uid, {}).setdefault(series_uid, []).append(rec)
    patients = []
    for studies in by_patient.values():
        study_objs = []
        for series_map in studies.values():
            series_objs = []
            for recs in series_map.values():
                first = recs[0]
                series_objs.append(
                    Series(
                        series_instance_uid=first.series_uid,
                        modality=first.modality,
                        description=first.series_description,
                        number=first.series_number,
                        stacks=tuple(build_stacks(recs)),
                    )
                )
            series_objs.sort(key=lambda s: s.number if s.number is not None else math.inf)
            any_rec = next(iter(series_map.values()))[0]
            study_objs.append(
                Study(
                    study_instance_uid=any_rec.study_uid,
                    date=any_rec.study_date,
                    description=any_rec.study_description,
                    accession_number=any_rec.accession,
                    series=tuple(series_objs),
                )
            )
        rec0 = next(iter(next(iter(studies.values())).values()))[0]
        patients.append(
            Patient(
                patient_id=rec0.patient_id,
                name=rec0.patient_name,
                birth_date=rec0.birth_date,
                sex=rec0.sex,
                studies=tuple(study_objs),
            )
        )
    return tuple(patients)
