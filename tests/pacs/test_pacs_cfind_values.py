"""C-FIND identifiers become table rows exactly as through pydicom's Dataset (no server needed).

The study query reads each identifier's values with ``pydicom.values.convert_value`` straight from its
raw elements; on pydicom's character-set test files (Japanese, Korean, Chinese, Greek, Hebrew, Arabic,
Russian, German, French, ISO 2022 escapes) encoded and decoded as pynetdicom carries them, the rows
must equal those read through Dataset attribute access.
"""

from __future__ import annotations

import copy
import io

import pytest
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from viewer.core.dicom.rawheader import parse_dataset
from viewer.core.pacs.dimse import _i, _multi, _s, _study_match
from viewer.core.pacs.models import StudyMatch

CHARSET_FILES = sorted(get_charset_files("chr*.dcm"))


def _identifier(source: Dataset, implicit: bool) -> Dataset:
    """A study-level C-FIND answer holding the file's character set and patient name, as pynetdicom
    decodes it."""
    return decode(io.BytesIO(_encoded(source, implicit)), implicit, True)


def _encoded(source: Dataset, implicit: bool) -> bytes:
    """That answer's identifier as received (the bytes the raw header reader reads)."""
    ds = Dataset()
    if "SpecificCharacterSet" in source:
        ds.SpecificCharacterSet = source.SpecificCharacterSet
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = source.get("PatientName", "")
    ds.PatientID = "ID\\2"  # a multi-value
    ds.StudyDate = "20260101"
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.StudyDescription = "CT HEAD"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.ModalitiesInStudy = ["CT", "SR"]
    ds.NumberOfStudyRelatedSeries = 3
    ds.NumberOfStudyRelatedInstances = ""
    data = encode(ds, implicit, True)
    assert data is not None
    return data


def _through_dataset(found: list[Dataset]) -> list[StudyMatch]:
    return [
        StudyMatch(
            study_uid=_s(item, "StudyInstanceUID"),
            patient_name=_s(item, "PatientName"),
            patient_id=_s(item, "PatientID"),
            study_date=_s(item, "StudyDate"),
            study_time=_s(item, "StudyTime"),
            accession_number=_s(item, "AccessionNumber"),
            study_description=_s(item, "StudyDescription"),
            modalities=_multi(item, "ModalitiesInStudy"),
            num_series=_i(item, "NumberOfStudyRelatedSeries"),
            num_instances=_i(item, "NumberOfStudyRelatedInstances"),
        )
        for item in found
    ]


@pytest.mark.parametrize("implicit", [False, True])
def test_rows_equal_those_read_through_the_dataset(implicit: bool) -> None:
    found = [_identifier(dcmread(path), implicit) for path in CHARSET_FILES]
    rows = [row for item in copy.deepcopy(found) if (row := _study_match(item)) is not None]
    assert rows == _through_dataset(found)
    assert any(not row.patient_name.isascii() for row in rows)  # the character sets were decoded
    assert rows[0].modalities == ("CT", "SR") and rows[0].num_series == 3 and rows[0].num_instances is None
    assert rows[0].patient_id == "ID\\2"


@pytest.mark.filterwarnings("ignore:Failed to decode byte string")  # a name under a charset not its own
@pytest.mark.parametrize("implicit", [False, True])
def test_values_kept_across_an_answer_give_the_same_rows(implicit: bool) -> None:
    """The study query converts each (tag, encoded value, character set) once an answer and reuses it:
    an answer mixing every character set, each identifier twice, gives the rows read through the Dataset
    (a value kept without its character set would give the next file's name in the wrong one)."""
    found = [_identifier(dcmread(path), implicit) for path in CHARSET_FILES for _ in range(2)]
    same_bytes = [_identifier(dcmread(path), implicit) for path in CHARSET_FILES]
    raw_name = same_bytes[-1].get_item(0x00100010)  # one encoded name, as received, under every charset
    assert raw_name is not None and isinstance(raw_name.value, bytes) and not raw_name.value.isascii()
    for item in same_bytes:
        item[0x00100010] = raw_name
    answer = found + same_bytes
    seen: dict = {}
    rows = [row for item in copy.deepcopy(answer) if (row := _study_match(item, seen)) is not None]
    assert rows == _through_dataset(answer)
    assert seen  # values were kept
    assert len({row.patient_name for row in rows[len(found):]}) > 1  # decoded by each one's charset


@pytest.mark.filterwarnings("ignore:Failed to decode byte string")
@pytest.mark.parametrize("implicit", [False, True])
def test_rows_read_from_the_received_bytes_equal_those_read_through_the_dataset(implicit: bool) -> None:
    """The study query reads each answer's bytes with the raw header reader (no pydicom Dataset): the
    same rows, one by one and with the values of an answer kept across it (every character set, each
    identifier twice)."""
    sources = [dcmread(path) for path in CHARSET_FILES for _ in range(2)]
    encoded = [_encoded(source, implicit) for source in sources]
    headers = [parse_dataset(data, implicit) for data in encoded]
    assert all(header is not None for header in headers)
    reference = _through_dataset([decode(io.BytesIO(data), implicit, True) for data in encoded])
    alone = [_study_match(header) for header in headers if header is not None]
    seen: dict = {}
    kept = [_study_match(header, seen) for header in headers if header is not None]
    assert alone == kept == reference
    assert any(row is not None and not row.patient_name.isascii() for row in kept)
