"""Where the AI node stores its results, from one command-line value:

- ``dicom://CALLED_AE@host:port``: C-STORE (the node's own AE title calls, unless told otherwise);
- ``http(s)://host:port/dicom-web``: STOW-RS (basic auth when a user name is given; the password or
  bearer token comes from a file or the environment, never from the command line).
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from viewer.core.ainode.node import StoreProtocol
from viewer.core.errors import PacsConfigError
from viewer.core.pacs.node import AuthKind, PacsNode


def parse_store_target(
    spec: str, *, calling_ae: str, username: str = "", secret: str = ""
) -> tuple[PacsNode, StoreProtocol]:
    parts = urlsplit(spec)
    if parts.scheme == "dicom":
        if not parts.username or not parts.hostname or parts.port is None:
            raise PacsConfigError(f"--store-to {spec!r}: write dicom://CALLED_AE@host:port")
        node = PacsNode(
            name="store-to",
            host=parts.hostname,
            port=parts.port,
            called_ae=unquote(parts.username),
            calling_ae=calling_ae,
        )
        return node, StoreProtocol.DIMSE
    if parts.scheme in ("http", "https"):
        if parts.username or parts.password:
            raise PacsConfigError("--store-to: put the user in --store-user and the password in a file")
        auth = AuthKind.BASIC if username else (AuthKind.BEARER if secret else AuthKind.NONE)
        node = PacsNode(name="store-to", dicomweb_url=spec, auth=auth, username=username, secret=secret)
        return node, StoreProtocol.DICOMWEB
    raise PacsConfigError(
        f"--store-to {spec!r}: use dicom://CALLED_AE@host:port (C-STORE) or http(s)://.../dicom-web (STOW-RS)"
    )
