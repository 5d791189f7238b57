"""The AI node's Storage SCP: CT and MR image storage (the common transfer syntaxes) and C-ECHO, from the
allowed calling AE titles only; every instance goes through :meth:`AiNode.ingest` (spool + queue, durable)
before the C-STORE response is sent. When the sender releases its association normally, the series it
sent are analysed after the node's short release quiet time instead of the full quiet time.

Answers: 0x0000 stored (or already received: the first copy is kept); 0xC000 the instance cannot be
understood (not DICOM, no UIDs, truncated pixels); 0xA700 the node could not keep it (disk, database), so
the sender keeps it and tries again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    MRImageStorage,
    Verification,
)

from viewer.core.ainode.node import AiNode
from viewer.core.errors import AiNodeError, PacsResponseError
from viewer.core.pacs.dimse import STORAGE_TRANSFER_SYNTAXES
from viewer.core.pacs.node import LocalAe

log = logging.getLogger(__name__)

STORAGE_SOP_CLASSES = (
    CTImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    MRImageStorage,
    EnhancedMRImageStorage,
)
STATUS_OK, STATUS_OUT_OF_RESOURCES, STATUS_CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


class IntakeScp:
    """Listens for C-STORE on ``local`` and hands every instance to ``node``."""

    def __init__(self, node: AiNode, local: LocalAe, *, allowed_calling_aes: Sequence[str] = ()) -> None:
        self.node = node
        self.local = local
        self.allowed = tuple(allowed_calling_aes)
        self._server: Any = None
        self._lock = threading.Lock()
        self.received = 0
        self.duplicates = 0
        self.refused = 0

    def start(self) -> int:
        """Start listening; returns the port (useful when ``local.port`` is 0)."""
        ae = AE(ae_title=self.local.ae_title)
        ae.maximum_pdu_size = 0
        for sop in STORAGE_SOP_CLASSES:
            ae.add_supported_context(sop, list(STORAGE_TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification)
        if self.allowed:
            ae.require_calling_aet = list(self.allowed)
        else:
            log.warning("AI node: no --allow given, every calling AE title may store")
        try:
            self._server = ae.start_server(
                (self.local.host, self.local.port),
                block=False,
                evt_handlers=[
                    (evt.EVT_C_STORE, self._on_store),
                    (evt.EVT_REJECTED, self._on_rejected),
                    (evt.EVT_RELEASED, self._on_released),
                    (evt.EVT_ABORTED, self._on_lost),
                    (evt.EVT_CONN_CLOSE, self._on_lost),
                ],
            )
        except OSError as exc:
            raise AiNodeError(
                f"Cannot listen on {self.local.host}:{self.local.port} ({exc.strerror or type(exc).__name__})"
            ) from None
        port = int(self._server.server_address[1])
        log.info("AI node: Storage SCP %s listening on port %d", self.local.ae_title, port)
        return port

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()

    def __enter__(self) -> IntakeScp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_rejected(self, event: Any) -> None:
        calling = str(getattr(event.assoc.requestor, "ae_title", "") or "")
        log.warning("AI node: association from calling AE %r refused (not in --allow)", calling)

    def _on_released(self, event: Any) -> None:
        self.node.association_released(id(event.assoc))

    def _on_lost(self, event: Any) -> None:  # after a release this finds nothing left to forget
        self.node.association_lost(id(event.assoc))

    def _on_store(self, event: Any) -> int:
        try:
            data = event.encoded_dataset(include_meta=True)
            outcome = self.node.ingest(data, association=id(event.assoc))
        except PacsResponseError as exc:
            with self._lock:
                self.refused += 1
            log.warning("AI node: an instance was refused: %s", exc)
            return STATUS_CANNOT_UNDERSTAND
        except (OSError, sqlite3.Error, AiNodeError) as exc:
            log.error("AI node: could not keep an instance (%s); the sender will retry", type(exc).__name__)
            return STATUS_OUT_OF_RESOURCES
        with self._lock:
            if outcome.value == "new":
                self.received += 1
            else:
                self.duplicates += 1
        return STATUS_OK
