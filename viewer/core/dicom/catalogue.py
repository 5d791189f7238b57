"""Stack keys across loads: the same patient + study + series keeps its key; another owner of a
SeriesInstanceUID that is already open gets ``UID@n``, as :func:`viewer.core.dicom.grouping.build_tree`
does within one load.

A load only knows its own files, so two folders opened one after the other, each holding a different
patient's series under one SeriesInstanceUID, both key their stack by the bare UID. The viewer keeps
one catalogue of open stacks; :func:`rekey_report` renames the newcomer before it joins it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from viewer.core.dicom.model import LoadReport, Patient, Stack, Study

Owner = tuple[str, str, str, str]  # patient id, patient name, StudyInstanceUID, SeriesInstanceUID


def stack_owner(patient: Patient, study: Study, stack: Stack) -> Owner:
    """What a stack key stands for: one series of one study of one patient."""
    return (patient.patient_id, patient.name, study.study_instance_uid, stack.series_instance_uid)


def _split(uid: str) -> tuple[str, str]:
    """``"S@2#1"`` -> ``("S@2", "#1")``: the series key and the stack's place in its series."""
    base, sep, rest = uid.partition("#")
    return base, sep + rest


def rekey_report(report: LoadReport, open_owners: Mapping[str, Owner]) -> LoadReport:
    """``report`` with every stack whose key is already open for another owner renamed
    ``SeriesInstanceUID@n`` (the first n free); stacks of an owner already open keep their key (the
    same series opened twice is the same stack). Returns ``report`` itself when nothing clashes."""
    bases_open: dict[str, Owner] = {_split(uid)[0]: owner for uid, owner in open_owners.items()}
    renamed: dict[Owner, str] = {}  # owner -> new series key
    taken = set(bases_open)
    for patient in report.patients:
        for study in patient.studies:
            for series in study.series:
                for stack in series.stacks:
                    owner = stack_owner(patient, study, stack)
                    taken.add(_split(stack.uid)[0])
                    base = _split(stack.uid)[0]
                    if base in bases_open and bases_open[base] != owner and owner not in renamed:
                        renamed[owner] = ""
    if not renamed:
        return report
    for owner in renamed:
        k = 1
        while f"{owner[3]}@{k}" in taken:
            k += 1
        renamed[owner] = f"{owner[3]}@{k}"
        taken.add(renamed[owner])
    patients = []
    for patient in report.patients:
        studies = []
        for study in patient.studies:
            series_objs = []
            for series in study.series:
                stacks = []
                for stack in series.stacks:
                    new_base = renamed.get(stack_owner(patient, study, stack))
                    if new_base:
                        stack = replace(stack, uid=new_base + _split(stack.uid)[1])
                    stacks.append(stack)
                series_objs.append(replace(series, stacks=tuple(stacks)))
            studies.append(replace(study, series=tuple(series_objs)))
        patients.append(replace(patient, studies=tuple(studies)))
    out = replace(report, patients=tuple(patients), stacks_by_uid={})
    out.stacks_by_uid.update({st.uid: st for st in out.all_stacks()})
    return out
