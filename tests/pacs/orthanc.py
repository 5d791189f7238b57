"""A throw-away Orthanc for the PACS tests and benchmark: free loopback ports, HTTP basic auth, a temp
storage folder, its own config; started as a child process and stopped by its PID.

Orthanc 1.10 (Debian 12 packages ``orthanc``, ``orthanc-dicomweb``, ``orthanc-gdcm``) listens on every
interface; ``RemoteAccessAllowed: false`` limits HTTP to loopback and DIMSE find/get/move is limited to
the one modality listed (127.0.0.1), see shared/docs/PACS.md.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORTHANC_BIN = Path(shutil.which("Orthanc") or "/usr/sbin/Orthanc")
PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
PLUGINS = ("libOrthancDicomWeb.so", "libOrthancGdcm.so")
PACKAGES = "orthanc orthanc-dicomweb orthanc-gdcm"
USER, PASSWORD = "slicewise", "test-only-password"
ORTHANC_AET = "ORTHANC"
CLIENT_AET = "SLICEWISE"


def unavailable_reason() -> str | None:
    """Why no Orthanc can run here (None when one can)."""
    if not ORTHANC_BIN.is_file():
        return f"Orthanc is not installed (Debian packages: {PACKAGES}; .ci/run installs them as root)"
    missing = [name for name in PLUGINS if not (PLUGIN_DIR / name).is_file()]
    if missing:
        return (
            f"Orthanc plugins missing: {', '.join(missing)} (Debian packages orthanc-dicomweb, orthanc-gdcm)"
        )
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Orthanc:
    folder: Path
    http_port: int
    dicom_port: int
    scp_port: int  # where the client's Storage SCP listens (C-MOVE destination CLIENT_AET)
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    # --- REST ------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, *, content_type: str = "") -> Any:
        req = urllib.request.Request(f"{self.url}{path}", data=body, method=method)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        if content_type:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=60) as resp:
            data = resp.read()
        return json.loads(data) if data[:1] in (b"{", b"[") else data

    def upload(self, paths: Iterable[Path]) -> list[str]:
        """POST each file to /instances; returns Orthanc's instance ids."""
        return [
            str(
                self.request("POST", "/instances", Path(p).read_bytes(), content_type="application/dicom")[
                    "ID"
                ]
            )
            for p in paths
        ]

    def lookup(self, uid: str, kind: str) -> str:
        """Orthanc's id of the Study, Series or Instance with this UID."""
        found = self.request("POST", "/tools/lookup", uid.encode(), content_type="text/plain")
        return next(str(item["ID"]) for item in found if item["Type"] == kind)

    def instance_id(self, sop_instance_uid: str) -> str:
        return self.lookup(sop_instance_uid, "Instance")

    def delete_study(self, study_uid: str) -> None:
        """Remove a study (a test that damaged it cleans up, so later queries are not affected)."""
        self.request("DELETE", f"/studies/{self.lookup(study_uid, 'Study')}")

    def stored_file(self, sop_instance_uid: str) -> Path:
        """The file Orthanc keeps for an instance (to damage it in a test)."""
        info = self.request("GET", f"/instances/{self.instance_id(sop_instance_uid)}/attachments/dicom/info")
        uuid = str(info["Uuid"])
        return self.folder / "db" / uuid[0:2] / uuid[2:4] / uuid

    # --- life -------------------------------------------------------------------------------------
    def config(self, **extra: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "Name": "slicewise-test",
            "StorageDirectory": str(self.folder / "db"),
            "IndexDirectory": str(self.folder / "db"),
            "StorageCompression": False,
            "MaximumStorageCacheSize": 0,  # read every instance from disk (damaged-file tests)
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": ORTHANC_AET,
            "DicomCheckCalledAet": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "Plugins": [str(PLUGIN_DIR / name) for name in PLUGINS],
            "DicomModalities": {"slicewise": [CLIENT_AET, "127.0.0.1", self.scp_port]},
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowFind": False,
            "DicomAlwaysAllowGet": False,
            "DicomAlwaysAllowMove": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": f"127.0.0.1:{self.http_port}"},
            "StableAge": 1,
            "HttpTimeout": 60,
        }
        cfg.update(extra)
        return cfg

    def start(self, timeout_s: float = 30.0, **extra: Any) -> None:
        (self.folder / "db").mkdir(parents=True, exist_ok=True)
        cfg_path = self.folder / "orthanc.json"
        cfg_path.write_text(json.dumps(self.config(**extra), indent=1))
        self.log = self.folder / "orthanc.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(ORTHANC_BIN), str(cfg_path)], stdout=log, stderr=subprocess.STDOUT, cwd=self.folder
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc exited with {self.process.returncode}: {self.log.read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError, urllib.error.URLError):
                if self.request("GET", "/system"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer within {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM the PID we started, wait for it (SIGKILL after 15 s)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@contextlib.contextmanager
def running_orthanc(folder: Path, **extra: Any) -> Iterator[Orthanc]:
    server = Orthanc(folder, free_port(), free_port(), free_port())
    server.start(**extra)
    try:
        yield server
    finally:
        server.stop()
