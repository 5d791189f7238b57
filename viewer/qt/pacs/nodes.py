"""PACS nodes kept between runs: their addresses in the settings file, their secrets elsewhere.

Each node is one JSON object under ``pacs/nodes`` (name, protocol, DICOMweb URL, host, port, AE titles,
auth kind, user name). The password or token goes to a :class:`~viewer.core.pacs.secrets.SecretStore`
(the OS keyring, else a 0600 file): the settings file never holds one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from viewer.core.constants import PACS_DEFAULT_CALLING_AE
from viewer.core.errors import PacsConfigError
from viewer.core.location import SourceKind
from viewer.core.pacs.node import AuthKind, PacsNode
from viewer.core.pacs.secrets import SecretStore, default_secret_store
from viewer.qt.settings import Settings

if TYPE_CHECKING:
    from viewer.core.pacs import PacsClient
    from viewer.core.pacs.dimse import StorageScpPool

logger = logging.getLogger(__name__)


class NodeProtocol(str, Enum):
    """Which side of a node the viewer talks to."""

    DICOMWEB = "DICOMweb"
    DIMSE = "DIMSE (C-GET)"
    DIMSE_MOVE = "DIMSE (C-MOVE)"  # the PACS sends to Slicewise's Storage SCP (calling AE, receive port)

    @property
    def is_dimse(self) -> bool:
        return self is not NodeProtocol.DICOMWEB


DEFAULT_RECEIVE_PORT = 11112  # where Slicewise's Storage SCP listens for C-MOVE (the DICOM registered port)


@dataclass(frozen=True)
class NodeEntry:
    """A node as the settings keep it; ``node.secret`` is filled from the secret store on load."""

    node: PacsNode
    protocol: NodeProtocol
    receive_port: int = DEFAULT_RECEIVE_PORT  # C-MOVE: our Storage SCP's port, known to the PACS

    def __post_init__(self) -> None:
        if not 1 <= self.receive_port <= 65535:
            raise PacsConfigError(f"PACS {self.name!r}: receive port {self.receive_port} is not in 1-65535")

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def source_kind(self) -> SourceKind:
        """How a study retrieved through this node is recorded (viewer.core.location.SourceRef)."""
        return SourceKind.DICOMWEB if self.protocol is NodeProtocol.DICOMWEB else SourceKind.DIMSE

    def address(self) -> str:
        return (
            self.node.dicomweb_url
            if self.protocol is NodeProtocol.DICOMWEB
            else f"{self.node.called_ae}@{self.node.dimse_address}"
        )


def make_client(entry: NodeEntry, receivers: StorageScpPool | None = None) -> PacsClient:
    """A new client for ``entry`` (create one per thread: DICOMweb sessions are not shared). C-MOVE
    nodes retrieve into the Storage SCP of ``receivers`` listening as the node's calling AE on its
    receive port (started on first use, accepting only the node's own AE title)."""
    from viewer.core.pacs import DicomWebClient, DimseClient  # loaded when a PACS is first used
    from viewer.core.pacs.dimse import RetrieveMethod
    from viewer.core.pacs.node import LocalAe

    if entry.protocol is NodeProtocol.DICOMWEB:
        return DicomWebClient(entry.node)
    if entry.protocol is NodeProtocol.DIMSE_MOVE:
        if receivers is None:
            raise PacsConfigError(f"PACS {entry.name!r}: C-MOVE needs Slicewise's Storage SCP")
        local = LocalAe(entry.node.calling_ae, "0.0.0.0", entry.receive_port)
        scp = receivers.get(local, allowed_calling_aes=[entry.node.called_ae])
        return DimseClient(entry.node, storage=scp, method=RetrieveMethod.MOVE)
    return DimseClient(entry.node)


def _to_json(entry: NodeEntry) -> dict[str, object]:
    n = entry.node
    return {
        "name": n.name,
        "protocol": entry.protocol.value,
        "dicomweb_url": n.dicomweb_url,
        "host": n.host,
        "port": n.port,
        "called_ae": n.called_ae,
        "calling_ae": n.calling_ae,
        "auth": n.auth.value,
        "username": n.username,
        "receive_port": entry.receive_port,
    }


def _from_json(item: dict[str, object], secret: str) -> NodeEntry:
    node = PacsNode(
        name=str(item["name"]),
        host=str(item.get("host", "")),
        port=int(str(item.get("port", 104))),
        called_ae=str(item.get("called_ae", "ANY-SCP")),
        calling_ae=str(item.get("calling_ae", PACS_DEFAULT_CALLING_AE)),
        dicomweb_url=str(item.get("dicomweb_url", "")),
        auth=AuthKind(str(item.get("auth", "none"))),
        username=str(item.get("username", "")),
        secret=secret,
    )
    protocol = NodeProtocol(str(item.get("protocol", NodeProtocol.DICOMWEB.value)))
    return NodeEntry(node, protocol, int(str(item.get("receive_port", DEFAULT_RECEIVE_PORT))))


class NodeStore:
    """Add, replace, remove and list nodes; secrets go to ``secrets``, the rest to ``settings``."""

    def __init__(self, settings: Settings, secrets: SecretStore | None = None) -> None:
        self.settings = settings
        self.secrets = secrets or default_secret_store()

    def _raw(self) -> list[dict[str, object]]:
        try:
            items = json.loads(self.settings.pacs_nodes_json)
        except ValueError:
            logger.warning("PACS nodes in the settings are malformed; ignoring them")
            return []
        return [i for i in items if isinstance(i, dict) and i.get("name")] if isinstance(items, list) else []

    def entries(self) -> list[NodeEntry]:
        out = []
        for item in self._raw():
            try:
                out.append(_from_json(item, self.secrets.get(str(item["name"]))))
            except (PacsConfigError, ValueError, KeyError) as exc:
                logger.warning("Skipping an unusable PACS node in the settings (%s)", type(exc).__name__)
        return out

    def names(self) -> list[str]:
        return [str(i["name"]) for i in self._raw()]

    def get(self, name: str) -> NodeEntry | None:
        return next((e for e in self.entries() if e.name == name), None)

    def save(self, entry: NodeEntry, *, replaces: str | None = None) -> None:
        """Add ``entry`` (or replace the node named ``replaces``); its secret goes to the secret store."""
        old = replaces if replaces is not None else entry.name
        items = [i for i in self._raw() if i.get("name") not in (old, entry.name)]
        if entry.name != old and entry.name in self.names():
            raise PacsConfigError(f"A PACS node named {entry.name!r} already exists")
        items.append(_to_json(entry))
        self.settings.pacs_nodes_json = json.dumps(items)
        self.settings.sync()
        if old != entry.name:
            self.secrets.delete(old)
        self.secrets.set(entry.name, entry.node.secret if entry.node.auth is not AuthKind.NONE else "")

    def remove(self, name: str) -> None:
        items = [i for i in self._raw() if i.get("name") != name]
        self.settings.pacs_nodes_json = json.dumps(items)
        self.settings.sync()
        self.secrets.delete(name)
