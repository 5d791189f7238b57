"""Where PACS passwords and tokens are kept: never in the settings file.

The OS keyring (the optional ``keyring`` package, ``pip install slicewise[keyring]``) when it has a
usable backend (macOS Keychain, Windows Credential Locker, a Secret Service on Linux); otherwise a JSON
file readable by the user only (0600 in the 0700 data folder), which the node dialog says plainly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from enum import Enum
from pathlib import Path
from typing import Protocol

from viewer.core.paths import user_data_path
from viewer.core.review.fileutil import private_dir

logger = logging.getLogger(__name__)

KEYRING_SERVICE = "Slicewise PACS"
SECRETS_FILENAME = "pacs-secrets.json"


class SecretBackend(str, Enum):
    KEYRING = "keyring"
    FILE = "file"


class SecretStore(Protocol):
    backend: SecretBackend

    def get(self, node_name: str) -> str: ...

    def set(self, node_name: str, secret: str) -> None: ...

    def delete(self, node_name: str) -> None: ...

    def describe(self) -> str:
        """One sentence for the dialog: where secrets go."""
        ...


class FileSecretStore:
    """Secrets in a 0600 JSON file, written whole and renamed into place."""

    backend = SecretBackend.FILE

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or (user_data_path() / SECRETS_FILENAME)
        private_dir(self.path.parent)

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            logger.warning("PACS secrets file unreadable; starting empty")
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _write(self, data: dict[str, str]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".secrets-", dir=self.path.parent)  # 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def get(self, node_name: str) -> str:
        return self._read().get(node_name, "")

    def set(self, node_name: str, secret: str) -> None:
        data = self._read()
        if secret:
            data[node_name] = secret
        else:
            data.pop(node_name, None)
        self._write(data)

    def delete(self, node_name: str) -> None:
        data = self._read()
        if data.pop(node_name, None) is not None:
            self._write(data)

    def describe(self) -> str:
        return (
            "No system keyring is available: passwords and tokens are kept in a file only you can read "
            f"({self.path.name} in the Slicewise data folder), not encrypted."
        )


class KeyringSecretStore:
    """Secrets in the OS keyring, under the service name :data:`KEYRING_SERVICE`."""

    backend = SecretBackend.KEYRING

    def __init__(self) -> None:
        import keyring  # optional dependency, checked by usable_keyring()

        self._keyring = keyring

    def get(self, node_name: str) -> str:
        return str(self._keyring.get_password(KEYRING_SERVICE, node_name) or "")

    def set(self, node_name: str, secret: str) -> None:
        if secret:
            self._keyring.set_password(KEYRING_SERVICE, node_name, secret)
        else:
            self.delete(node_name)

    def delete(self, node_name: str) -> None:
        errors = self._keyring.errors
        with contextlib.suppress(errors.PasswordDeleteError):
            self._keyring.delete_password(KEYRING_SERVICE, node_name)

    def describe(self) -> str:
        return "Passwords and tokens are kept in the system keyring."


def usable_keyring() -> bool:
    """Whether ``keyring`` is installed and its backend can store secrets (not the 'fail' or
    plain-text backends)."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return False
    try:
        backend = keyring.get_keyring()
    except Exception:  # a broken backend configuration is the same as none
        return False
    if isinstance(backend, fail.Keyring):
        return False
    priority = float(getattr(backend, "priority", 0) or 0)
    return priority >= 1  # keyring's own threshold for "recommended" backends


def default_secret_store(path: Path | None = None) -> SecretStore:
    """The keyring store when usable, else the 0600 file."""
    if usable_keyring():
        return KeyringSecretStore()
    return FileSecretStore(path)
