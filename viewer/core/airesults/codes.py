"""Coded concepts of the AI result objects, each with where it comes from.

Standard codes wherever one could be checked offline; the private scheme ``99SLICEWISE`` (DICOM
PS3.3 8.2: private coding schemes start with "99") only where no standard code could be verified or
none exists (Slicewise's own applicability codes, the reader's verdict). Sources:

- DICOM PS3.16 (the DCM and SCT codes that ship in pydicom's ``pydicom.sr.codedict``, generated from
  PS3.16): looked up with ``codes.<scheme>.<Name>`` so a typo cannot slip in.
- SCT 21454007 and 274100004: the NLM VSAC value set 2.16.840.1.113883.3.117.1.7.1.212
  "Hemorrhagic Stroke" (The Joint Commission), SNOMED CT 2019-03.
- SCT 35486000 "Subdural intracranial hemorrhage": SNOMED CT, as mapped to ICD-10-CM I62.00 in
  public SNOMED-ICD crosswalk tables (two independent tables agree).
- 99IHE 1630 "Processing Algorithm": IHE Radiology AI Results (AIR) profile, Contributing Equipment.

Epidural and intraventricular haemorrhage: no SNOMED CT code could be verified offline (the public
tables disagree), so they keep a ``99SLICEWISE`` finding type; intraventricular also carries the
verified finding site SCT 35764002 "Brain ventricle". TODO: replace both with the SNOMED CT concepts
once checked in a SNOMED CT browser.
"""

from __future__ import annotations

from typing import Final

import highdicom as hd
from pydicom.sr.codedict import codes

from viewer.core.applicability.codes import Scope

PRIVATE_SCHEME: Final = "99SLICEWISE"


def _private(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, PRIVATE_SCHEME, meaning)


def _code(code: object) -> hd.sr.CodedConcept:
    """A pydicom ``Code`` (from PS3.16) as a highdicom concept."""
    return hd.sr.CodedConcept.from_code(code)  # type: ignore[arg-type]


# --- findings: one finding type per model class ------------------------------------------------
CLASS_CODES: Final[dict[str, hd.sr.CodedConcept]] = {
    # DICOM PS3.16 (pydicom codes.SCT.IntracranialHemorrhage)
    "any": hd.sr.CodedConcept("1386000", "SCT", "Intracranial hemorrhage"),
    # VSAC 2.16.840.1.113883.3.117.1.7.1.212 "Hemorrhagic Stroke"
    "subarachnoid": hd.sr.CodedConcept("21454007", "SCT", "Subarachnoid intracranial hemorrhage"),
    # VSAC 2.16.840.1.113883.3.117.1.7.1.212: "Cerebral hemorrhage" = intraparenchymal (intracerebral)
    "intraparenchymal": hd.sr.CodedConcept("274100004", "SCT", "Cerebral hemorrhage"),
    # SNOMED CT (ICD-10-CM I62.00 crosswalk)
    "subdural": hd.sr.CodedConcept("35486000", "SCT", "Subdural intracranial hemorrhage"),
    # not verified offline: private until checked (see the module docstring)
    "epidural": _private("EDH", "Epidural hemorrhage"),
    "intraventricular": _private("IVH", "Intraventricular hemorrhage"),
}
# Finding sites (TID 1501 row "Finding Site"), all from DICOM PS3.16 CIDs 7140/7151
CLASS_SITES: Final[dict[str, hd.sr.CodedConcept]] = {
    "subarachnoid": _code(codes.SCT.CranialSubarachnoidSpace),  # 33930006
    "intraparenchymal": _code(codes.SCT.BrainStructure),  # 12738006
    "subdural": _code(codes.SCT.Meninges),  # 1231004
    "intraventricular": _code(codes.SCT.BrainVentricle),  # 35764002
}


def class_code(name: str) -> hd.sr.CodedConcept:
    """The finding type of a model class (a private code for a class this table does not know)."""
    code = CLASS_CODES.get(name)
    return code if code is not None else _private(name.upper()[:16], name)


def class_for_code(value: str, scheme: str) -> str | None:
    """The model class a finding type stands for (None when unknown)."""
    for name, code in CLASS_CODES.items():
        if code.value == value and code.scheme_designator == scheme:
            return name
    return None


# --- the AI result ------------------------------------------------------------------------------
CT_HEAD: Final = _code(codes.SCT.ComputedTomographyOfHead)  # 303653007, PS3.16
# The study decision per class: Presence = Present / Absent. SCT 705057003 "Presence" is the presence
# attribute of the Open Imaging Finding Models (openimagingdata/findingmodels, e.g. subdural_hematoma);
# DCM 121071 "Finding" would clash with TID 1501's finding-type row.
PRESENCE: Final = hd.sr.CodedConcept("705057003", "SCT", "Presence")
PRESENT: Final = _code(codes.SCT.Present)  # 52101004
ABSENT: Final = _code(codes.SCT.Absent)  # 272519000
PROBABILITY: Final = _code(codes.DCM.Probability)  # 122157: the study probability of the class
KEY_OBJECT_TITLE: Final = _code(codes.DCM.OfInterest)  # 113000, CID 7010 KOS document title
NO_UNITS: Final = _code(codes.UCUM.NoUnits)  # UCUM "1"
VOLUME: Final = _code(codes.SCT.Volume)  # 118565006, TID 1500 volume measurements (CID 7470)
# UCUM milliliter (the case-sensitive UCUM code is "mL"; pydicom's table lists no plain milliliter)
MILLILITER: Final = hd.sr.CodedConcept("mL", "UCUM", "milliliter")
# IHE AIR: Contributing Equipment Purpose of Reference of an AI algorithm
PROCESSING_ALGORITHM: Final = hd.sr.CodedConcept("1630", "99IHE", "Processing Algorithm")

# private: no standard concept for these (a threshold and Slicewise's own scope decision)
SLICE_THRESHOLD: Final = _private("SLICE-THRESHOLD", "Slice flag threshold")
STUDY_THRESHOLD: Final = _private("STUDY-THRESHOLD", "Study decision threshold")
PEAK_SLICE_PROBABILITY: Final = _private("PEAK-SLICE-PROB", "Highest slice probability")
APPLICABILITY: Final = _private("APPLICABILITY", "Model applicability")
APPLICABILITY_REASON: Final = _private("APPLICABILITY-REASON", "Applicability reason")
SCOPE_CODES: Final[dict[Scope, hd.sr.CodedConcept]] = {
    Scope.IN_SCOPE: _private("IN-SCOPE", "In scope"),
    Scope.CAUTION: _private("CAUTION", "In scope with caution"),
    Scope.OUT_OF_SCOPE: _private("OUT-OF-SCOPE", "Out of scope"),
}


def scope_reason_code(code: str, message: str) -> hd.sr.CodedConcept:
    """An applicability reason (``S-…`` code) as a private concept; the meaning is the message.
    Codes longer than 16 characters go into Long Code Value (highdicom does that), never truncated."""
    return _private(code, message[:64] or code)


# --- the reader's review (IHE AIRAI-style verdict per AI finding) --------------------------------
READER_VERDICT: Final = _private("READER-VERDICT", "Reader verdict on AI finding")
VERDICT_CODES: Final[dict[str, hd.sr.CodedConcept]] = {
    "accepted": _private("ACCEPTED", "AI finding accepted"),
    "rejected": _private("REJECTED", "AI finding rejected"),
    "modified": _private("MODIFIED", "AI finding modified"),
    "uncertain": _private("UNCERTAIN", "Reader uncertain"),
    "undecided": _private("UNDECIDED", "Not yet decided"),
    "added": _private("ADDED", "Finding added by reader"),
}
REVIEW_STATUS: Final = _private("REVIEW-STATUS", "Review status")
STATUS_CODES: Final[dict[bool, hd.sr.CodedConcept]] = {
    True: _private("COMPLETE", "Review complete"),
    False: _private("IN-PROGRESS", "Review in progress"),
}
CORRECTED_TYPE: Final = _private("CORRECTED-TYPE", "Reader-corrected finding type")
