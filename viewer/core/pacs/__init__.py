"""PACS access (issue 13): DICOMweb and DIMSE clients behind one protocol, and a bounded local cache of
retrieved instances that the ordinary local loader opens. Qt-free."""

from viewer.core.pacs.cache import InstanceCache
from viewer.core.pacs.dicomweb import DicomWebClient
from viewer.core.pacs.dimse import DimseClient, StorageScp
from viewer.core.pacs.models import (
    InstanceFailure,
    InstanceMatch,
    QueryLevel,
    RetrievedInstance,
    RetrieveMethod,
    RetrieveReport,
    SeriesMatch,
    StoreOutcome,
    StudyMatch,
    StudyQuery,
)
from viewer.core.pacs.node import AuthKind, LocalAe, PacsNode
from viewer.core.pacs.protocol import PacsClient, retrieve_study

__all__ = [
    "AuthKind",
    "DicomWebClient",
    "DimseClient",
    "InstanceCache",
    "InstanceFailure",
    "InstanceMatch",
    "LocalAe",
    "PacsClient",
    "PacsNode",
    "QueryLevel",
    "RetrieveMethod",
    "RetrieveReport",
    "RetrievedInstance",
    "SeriesMatch",
    "StorageScp",
    "StoreOutcome",
    "StudyMatch",
    "StudyQuery",
    "retrieve_study",
]
