"""Group header records into Patient -> Study -> Series -> Stack, sort slices and flag geometry problems."""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from viewer.core.constants import SPACING_TOLERANCE, TILT_TOLERANCE_DEG
from viewer.core.dicom.duplicates import CompareFn, Resolution, resolve_duplicates, same_pixels
from viewer.core.dicom.header import HeaderRecord
from viewer.core.dicom.model import Patient, Series, SkippedFile, SliceInfo, Stack, Study
from viewer.core.geometry.orientation import classify_normal

ORIENTATION_DECIMALS = 3  # IOPs equal to 1e-3 belong to one stack
POSITION_EPS = 1e-3  # mm: two slices closer than this share a position


def _source_key(info: SliceInfo) -> tuple[str, str, int]:
    return (str(info.source.path), info.source.member or "", info.source.frame)


@functools.lru_cache(maxsize=1024)  # a series repeats one orientation: rounded once, not per slice
def _iop_key(iop: tuple[float, ...] | None) -> tuple[float, ...] | None:
    return None if iop is None else tuple(round(v, ORIENTATION_DECIMALS) + 0.0 for v in iop)


def slice_normal(iop: Sequence[float]) -> np.ndarray | None:
    """The unit slice normal (row x column direction) of an ImageOrientationPatient; None if degenerate."""
    row, col = np.asarray(iop[:3], dtype=float), np.asarray(iop[3:6], dtype=float)
    n = np.cross(row, col)
    norm = float(np.linalg.norm(n))
    return None if norm < 1e-6 else n / norm


def orientation_name(iop: Sequence[float] | None) -> str:
    n = slice_normal(iop) if iop is not None else None
    return "unknown orientation" if n is None else classify_normal(n).value


def _with_location(info: SliceInfo, location: float) -> SliceInfo:
    """``dataclasses.replace(info, location=location)`` without running ``__init__`` again (SliceInfo
    has some 30 fields: replace cost ~30 us a slice, a tenth of a 1,000-slice scan). SliceInfo has no
    ``__post_init__``, so copying the instance dict is the same object."""
    new = object.__new__(SliceInfo)
    new.__dict__.update(info.__dict__)
    new.__dict__["location"] = location
    return new


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
        normal = slice_normal(mid.orientation)
        if normal is None:
            geometric = False
            warnings.append("Degenerate ImageOrientationPatient: sorted by instance number")
    if geometric and normal is not None:
        locs = (np.asarray([s.position for s in items], dtype=np.float64) @ normal).tolist()
        if len(items) > 1 and max(locs) - min(locs) < POSITION_EPS:
            geometric = False
            warnings.append("All slices share one position: sorted by instance number")
        else:
            located = [_with_location(s, loc) for s, loc in zip(items, locs, strict=True)]
            located.sort(
                key=lambda s: (
                    round(s.location or 0.0, 4),
                    s.instance_number if s.instance_number is not None else math.inf,
                    _source_key(s),
                )
            )
            spacing = _geometry_warnings(located, normal, warnings)
            return located, "position", warnings, spacing
    if any(s.position is None for s in items):
        warnings.extend(_unpositioned_duplicates(items))
    if items and all(s.instance_number is not None for s in items):
        items.sort(key=lambda s: (s.instance_number, _source_key(s)))
        return items, "instance_number", warnings, None
    return items, "file_order", warnings, None


def _unpositioned_duplicates(items: Sequence[SliceInfo]) -> list[str]:
    """Without ImagePositionPatient (CR, US, ...), the instance number is the only hint of where an image
    goes: different files with the same one (or with none) are likely the same image twice, as for
    slices that share a position. Frames of one multi-frame file do not count."""
    files: dict[int | None, set[tuple[str, str]]] = defaultdict(set)
    for s in items:
        files[s.instance_number].add(s.source.file_key)
    same = sum(len(f) - 1 for n, f in files.items() if n is not None)
    unnumbered = len(files.get(None, ())) - 1 if None in files else 0
    out = []
    if same > 0:
        out.append(
            f"{same} image(s) without position data share an instance number with another "
            "(duplicates or re-encodings of one image?)"
        )
    if unnumbered > 0:
        out.append(
            f"{unnumbered + 1} images have neither position data nor an instance number: shown in file "
            "order (duplicates or re-encodings of one image?)"
        )
    return out


def _geometry_warnings(slices: list[SliceInfo], normal: np.ndarray, warnings: list[str]) -> float | None:
    if len(slices) < 2:
        return slices[0].slice_thickness if slices else None
    locs = np.array([s.location for s in slices], dtype=float)
    diffs = np.diff(locs)
    same_mask = diffs < POSITION_EPS
    same = int(np.sum(same_mask))
    if same:
        # counted per file: frames of one multi-frame object are one instance, not "40 duplicates"
        files = {slices[k + 1].source.file_key for k in np.flatnonzero(same_mask)}
        where = f" in {len(files)} file(s)" if len(files) < same else ""
        warnings.append(f"{same} slice(s){where} share a position with another (duplicates or a 4D series)")
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


# ImageType values (3rd and later) of projection images: MIP/MinIP renderings, rotating projections.
PROJECTION_TYPES = frozenset(
    {"MIP", "MINIP", "MIN IP", "MAX IP", "PROJECTION IMAGE", "PROJECTION", "ROTATION"}
)
MIN_PROJECTIONS = 3


def _shared_axis(orientations: Sequence[tuple[float, ...]]) -> bool:
    """True when every orientation keeps one image axis (row or column direction) fixed: the views
    of a rotation about that axis, as a rotating MIP's are."""
    for start in (0, 3):
        axes = np.array([o[start : start + 3] for o in orientations], dtype=float)
        if np.all(np.abs(axes @ axes[0]) > 1 - 1e-3):
            return True
    return False


def is_projection_series(records: Sequence[HeaderRecord]) -> bool:
    """A series of projections of one volume from different angles (a rotating MIP): one image per
    orientation, same size, no positions that order them; played as one stack (cine), not split.

    Recognised by its ImageType (DERIVED/.../MIP, PROJECTION IMAGE), or, when nothing says so, by its
    geometry: at least three single-image orientations that rotate about one shared image axis."""
    infos = [r.info for r in records if not _is_localizer(r.info)]
    if len(infos) < MIN_PROJECTIONS or len({(i.rows, i.columns, i.is_color) for i in infos}) > 1:
        return False
    if any(i.orientation is None for i in infos):
        return False
    by_iop: dict[Any, int] = defaultdict(int)
    for i in infos:
        by_iop[_iop_key(i.orientation)] += 1
    if len(by_iop) < MIN_PROJECTIONS:
        return False
    typed = all(PROJECTION_TYPES.intersection(i.image_type[2:]) for i in infos)
    if typed:
        return True
    return max(by_iop.values()) == 1 and _shared_axis([i.orientation for i in infos])  # type: ignore[misc]


def sort_projections(slices: Sequence[SliceInfo]) -> list[SliceInfo]:
    """Projections in acquisition order: InstanceNumber, then file order."""
    return sorted(
        slices,
        key=lambda s: (s.instance_number if s.instance_number is not None else math.inf, _source_key(s)),
    )


def _stack_warnings(
    infos: Sequence[SliceInfo], records: dict[tuple[str, str], HeaderRecord], resolution: Resolution
) -> list[str]:
    """Per-file facts about one stack's files: duplicates ignored, UID clashes, header notes."""
    keys = {i.source.file_key for i in infos}
    warnings = []
    dropped = sum(resolution.dropped.get(k, 0) for k in keys)
    if dropped:
        warnings.append(
            f"{dropped} duplicate file(s) ignored (same SOP Instance UID and image as a file shown here; "
            "the load report says which copy was used and why)"
        )
    clashing = sum(1 for k in keys if resolution.variant.get(k) == 0)
    if clashing:
        warnings.append(
            f"{clashing} image(s) share their SOP Instance UID with a different image (size, frame count or "
            "pixels): that one is kept in a separate stack"
        )
    if any(resolution.variant.get(k, 0) > 0 for k in keys):
        warnings.append(
            "Same SOP Instance UIDs as images of another stack of this series, but a different image "
            "(size, frame count or pixels): kept apart, never merged"
        )
    notes: dict[str, int] = {}
    for k in sorted(keys):
        for note in records[k].notes:
            notes[note] = notes.get(note, 0) + 1
    warnings.extend(f"{n} file(s) with {note}" for note, n in notes.items())
    return warnings


def build_stacks(
    records: list[HeaderRecord], uid: str | None = None, resolution: Resolution | None = None
) -> list[Stack]:
    """Split one series' records into sorted stacks (main stack first, keyed ``uid``[#n]).

    ``uid`` defaults to the SeriesInstanceUID; ``resolution`` (duplicates) is computed when not given.
    """
    if resolution is None:
        resolution = resolve_duplicates(records)
        records = resolution.records
    first = records[0]
    base = uid or first.series_uid
    by_file = {rec.file_key: rec for rec in records}
    projections = is_projection_series(records)
    groups: dict[tuple[Any, ...], list[SliceInfo]] = defaultdict(list)
    for rec in records:
        info = rec.info
        variant = resolution.variant.get(rec.file_key, 0)
        iop = "projections" if projections and not _is_localizer(info) else _iop_key(info.orientation)
        geometry = (iop, info.rows, info.columns, info.is_color)
        key = (_is_localizer(info), variant, *geometry)
        groups[key].append(info)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], -len(kv[1]), str(kv[0])))
    main_key = ordered[0][0]
    main_size = len(ordered[0][1])
    stacks: list[Stack] = []
    for n, (key, infos) in enumerate(ordered):
        localizer, variant, iop, rows, cols, color = key
        label = ""
        if variant:
            label = "UID clash" if variant == 1 else f"UID clash {variant}"
        elif n:
            if localizer or (
                iop != main_key[2] and len(infos) <= max(3, main_size // 10) and not main_key[0]
            ):
                label = "localizer"
            elif iop != main_key[2]:
                label = orientation_name(infos[0].orientation)
            elif (rows, cols) != (main_key[3], main_key[4]):
                label = f"{rows}x{cols}"
            else:
                label = "colour" if color else "greyscale"
        elif localizer:
            label = "localizer"
        if iop == "projections":
            sorted_slices, spacing = sort_projections(infos), None
            method = "instance_number" if all(i.instance_number is not None for i in infos) else "file_order"
            warnings: list[str] = []  # a projection series is one stack by design: nothing to warn about
        else:
            sorted_slices, method, warnings, spacing = sort_slices(infos)
        warnings[:0] = _stack_warnings(infos, by_file, resolution)
        if n == 0 and len(ordered) > 1:
            extra = sum(len(v) for _, v in ordered[1:])
            warnings.append(f"Series split: {extra} image(s) in {len(ordered) - 1} other stack(s)")
        stacks.append(
            Stack(
                uid=base if n == 0 else f"{base}#{n}",
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
                body_part=first.body_part,
            )
        )
    return stacks


SeriesKey = tuple[tuple[str, str], str, str]  # (patient id, name), StudyInstanceUID, SeriesInstanceUID


def build_tree(
    records: list[HeaderRecord], compare: CompareFn | None = same_pixels
) -> tuple[tuple[Patient, ...], list[SkippedFile]]:
    """Patient -> Study -> Series -> Stack, each level in first-seen (file) order, and the duplicate
    files left out (one :class:`SkippedFile` each, ``E-DUPLICATE``).

    A series is keyed by patient + study + SeriesInstanceUID: two patients (or studies) that share a
    SeriesInstanceUID give two series, whose stacks are told apart by ``@1``, ``@2`` after the UID.
    ``compare`` compares the pixels of same-UID uncompressed files (None: compare headers only).
    """
    by_patient: dict[tuple[str, str], dict[str, dict[str, list[HeaderRecord]]]] = {}
    for rec in sorted(records, key=lambda r: (r.order, r.info.source.frame)):
        series_uid = rec.series_uid or f"unknown-series-{rec.info.source.path.parent.name}"
        study_uid = rec.study_uid or "unknown-study"
        if not rec.series_uid or not rec.study_uid:
            rec = replace(rec, series_uid=series_uid, study_uid=study_uid)
        studies = by_patient.setdefault((rec.patient_id, rec.patient_name), {})
        studies.setdefault(study_uid, {}).setdefault(series_uid, []).append(rec)
    owners: dict[str, list[SeriesKey]] = defaultdict(list)
    for patient_key, studies in by_patient.items():
        for study_uid, series_map in studies.items():
            for series_uid in series_map:
                owners[series_uid].append((patient_key, study_uid, series_uid))
    stack_uid = {
        key: f"{series_uid}@{k}" if len(keys) > 1 else series_uid
        for series_uid, keys in owners.items()
        for k, key in enumerate(keys, start=1)
    }
    skipped: list[SkippedFile] = []
    patients = []
    for patient_key, studies in by_patient.items():
        study_objs = []
        for study_uid, series_map in studies.items():
            series_objs = []
            for series_uid, recs in series_map.items():
                resolution = resolve_duplicates(recs, compare)
                skipped.extend(resolution.skipped)
                uid = stack_uid[(patient_key, study_uid, series_uid)]
                first = recs[0]
                series_objs.append(
                    Series(
                        series_instance_uid=first.series_uid,
                        modality=first.modality,
                        description=first.series_description,
                        number=first.series_number,
                        stacks=tuple(build_stacks(resolution.records, uid, resolution)),
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
                    patient_age=any_rec.patient_age,
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
    return tuple(patients), skipped
