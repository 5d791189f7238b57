"""Where PACS secrets are kept: the 0600 file store (this machine has no keyring backend) and the
keyring check."""

from __future__ import annotations

import importlib.util
import stat
from pathlib import Path

import pytest

from viewer.core.pacs.secrets import (
    FileSecretStore,
    SecretBackend,
    default_secret_store,
    usable_keyring,
)


def test_file_store_round_trip_private_and_deletes(tmp_path: Path) -> None:
    store = FileSecretStore(tmp_path / "data" / "pacs-secrets.json")
    assert store.get("pacs-a") == ""
    store.set("pacs-a", "s3cret")
    store.set("pacs-b", "token-b")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    again = FileSecretStore(store.path)
    assert (again.get("pacs-a"), again.get("pacs-b")) == ("s3cret", "token-b")
    again.set("pacs-a", "")  # an empty secret removes the entry
    again.delete("pacs-b")
    assert "s3cret" not in store.path.read_text() and "token-b" not in store.path.read_text()
    assert not list(store.path.parent.glob(".secrets-*"))  # no temporary file left behind


def test_file_store_survives_a_damaged_file(tmp_path: Path) -> None:
    path = tmp_path / "pacs-secrets.json"
    path.write_text("{not json")
    store = FileSecretStore(path)
    assert store.get("x") == ""
    store.set("x", "y")
    assert FileSecretStore(path).get("x") == "y"


def test_without_a_usable_keyring_the_file_store_is_used_and_says_so() -> None:
    if importlib.util.find_spec("keyring") is not None and usable_keyring():
        pytest.skip("this machine has a usable keyring backend")
    store = default_secret_store()
    assert store.backend is SecretBackend.FILE
    assert "file only you can read" in store.describe()


def test_keyring_fail_backend_is_not_usable() -> None:
    keyring = pytest.importorskip("keyring")
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        assert not usable_keyring()
    finally:
        keyring.set_keyring(previous)


def test_keyring_store_with_a_recommended_backend() -> None:
    """A backend of keyring's own plugin API with a recommended priority (as macOS Keychain or a
    Secret Service is): the keyring store is chosen and keeps secrets there, under our service name."""
    keyring = pytest.importorskip("keyring")
    from keyring.backend import KeyringBackend
    from keyring.errors import PasswordDeleteError

    class MemoryKeyring(KeyringBackend):
        priority = 5  # type: ignore[assignment]

        def __init__(self) -> None:
            super().__init__()
            self.items: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> str | None:
            return self.items.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.items[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            if self.items.pop((service, username), None) is None:
                raise PasswordDeleteError(username)

    from viewer.core.pacs.secrets import KEYRING_SERVICE

    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    try:
        assert usable_keyring()
        store = default_secret_store()
        assert store.backend is SecretBackend.KEYRING and "system keyring" in store.describe()
        store.set("pacs-a", "s3cret")
        assert backend.items == {(KEYRING_SERVICE, "pacs-a"): "s3cret"}
        assert store.get("pacs-a") == "s3cret" and store.get("other") == ""
        store.delete("pacs-a")
        store.delete("pacs-a")  # deleting what is not there is not an error
        assert backend.items == {}
    finally:
        keyring.set_keyring(previous)
