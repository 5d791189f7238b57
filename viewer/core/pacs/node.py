"""What Slicewise needs to know about one PACS: its DIMSE address and AE titles, its DICOMweb URL, and
how to authenticate. Secrets are kept out of ``repr`` (and so out of logs and tracebacks)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

from viewer.core.constants import PACS_CONNECT_TIMEOUT_S, PACS_DEFAULT_CALLING_AE, PACS_READ_TIMEOUT_S
from viewer.core.errors import PacsConfigError

# PS3.5 8.2: AE is 16 characters of the default repertoire, no backslash or control characters
_AE_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class AuthKind(str, Enum):
    """How the DICOMweb server wants the client to authenticate."""

    NONE = "none"
    BASIC = "basic"  # username + password
    BEARER = "bearer"  # a token in ``secret``


def check_ae_title(title: str, what: str) -> str:
    if not _AE_RE.match(title) or not title.strip():
        raise PacsConfigError(
            f"{what} AE title {title!r} is not valid: 1-16 printable ASCII characters, no backslash"
        )
    return title


@dataclass(frozen=True)
class PacsNode:
    """One PACS. ``host``/``port``/``called_ae`` are its DIMSE side; ``dicomweb_url`` its DICOMweb root
    (e.g. ``http://pacs:8042/dicom-web``). Either side may be absent."""

    name: str
    host: str = ""
    port: int = 104
    called_ae: str = "ANY-SCP"
    calling_ae: str = PACS_DEFAULT_CALLING_AE
    dicomweb_url: str = ""
    auth: AuthKind = AuthKind.NONE
    username: str = ""
    secret: str = field(default="", repr=False)  # password (basic) or token (bearer): never logged
    connect_timeout_s: float = PACS_CONNECT_TIMEOUT_S
    read_timeout_s: float = PACS_READ_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.host:
            if not 1 <= self.port <= 65535:
                raise PacsConfigError(f"PACS {self.name!r}: port {self.port} is not in 1-65535")
            check_ae_title(self.called_ae, "Called")
            check_ae_title(self.calling_ae, "Calling")
        if self.dicomweb_url:
            parts = urlsplit(self.dicomweb_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise PacsConfigError(f"PACS {self.name!r}: DICOMweb URL must start with http:// or https://")
        if self.auth is AuthKind.BASIC and not self.username:
            raise PacsConfigError(f"PACS {self.name!r}: basic authentication needs a user name")
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise PacsConfigError(f"PACS {self.name!r}: timeouts must be positive")

    @property
    def dimse_address(self) -> str:
        """``host:port`` of the DIMSE side, as messages show it."""
        return f"{self.host}:{self.port}"

    @property
    def web_address(self) -> str:
        """``host:port`` of the DICOMweb side, as messages show it."""
        parts = urlsplit(self.dicomweb_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"{parts.hostname}:{port}"


@dataclass(frozen=True)
class LocalAe:
    """Slicewise's own Storage SCP, the C-MOVE destination: its AE title, and where it listens."""

    ae_title: str = PACS_DEFAULT_CALLING_AE
    host: str = "0.0.0.0"
    port: int = 11112

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title, "Storage SCP")
        if not 0 <= self.port <= 65535:
            raise PacsConfigError(f"Storage SCP port {self.port} is not in 0-65535")
