"""``slicewise listen`` and ``slicewise watch``: the AI node (issue 13 item 5), without Qt.

``slicewise listen --ae-title SLICEWISE_AI --port 11113 --allow CT01 --store-to dicom://ORTHANC@pacs:4242``
runs a Storage SCP; ``slicewise watch --dicomweb http://pacs:8042/dicom-web`` polls QIDO-RS. Both feed
one queue (``--state``), analyse each series once it has been quiet for ``--quiet`` seconds and store the
result object back. SIGTERM or Ctrl-C stops the node after the series in hand; a restart resumes.
Passwords and tokens come from ``--secret-file`` (mode 0600) or ``SLICEWISE_PACS_SECRET``.

Exit codes: 0 stopped cleanly; 2 usage or configuration error (bad model, port in use, bad target).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from viewer.core.errors import SlicewiseError

if TYPE_CHECKING:
    from viewer.core.ainode.node import AiNode

log = logging.getLogger(__name__)
EXIT_OK, EXIT_USAGE = 0, 2
SECRET_ENV = "SLICEWISE_PACS_SECRET"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would sys.exit(2); we return 2 instead
        raise _UsageError(message)


def _common(p: argparse.ArgumentParser) -> None:
    from viewer.core.ainode.node import DEFAULT_QUIET_S, DEFAULT_RELEASE_QUIET_S

    p.add_argument("--state", type=Path, default=None, help="queue and spool folder (default: per user)")
    p.add_argument(
        "--quiet", type=float, default=DEFAULT_QUIET_S, help="seconds a series must be quiet before analysis"
    )
    p.add_argument(
        "--release-quiet",
        type=float,
        default=DEFAULT_RELEASE_QUIET_S,
        help="seconds after the sender released its association (listen: instead of --quiet)",
    )
    p.add_argument("--keep-hours", type=float, default=24.0, help="hours finished series stay in the spool")
    p.add_argument("--model", type=Path, default=None, help="ONNX model (default: the bundled model)")
    p.add_argument("--provider", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime")
    p.add_argument("--secret-file", type=Path, default=None, help=f"password/token file (or ${SECRET_ENV})")
    p.add_argument("--log-level", choices=("debug", "info", "warning"), default="info")


def build_parser(command: str) -> argparse.ArgumentParser:
    p = _Parser(prog=f"slicewise {command}", description="Slicewise AI node (research use only).")
    if command == "listen":
        p.add_argument("--ae-title", required=True, help="this node's AE title")
        p.add_argument("--port", type=int, required=True, help="port to listen on (0: any free port)")
        p.add_argument("--host", default="0.0.0.0", help="address to listen on")
        p.add_argument(
            "--allow", nargs="+", default=[], metavar="CALLING_AE", help="calling AE titles allowed"
        )
        p.add_argument(
            "--store-to", required=True, help="dicom://CALLED_AE@host:port or http(s)://.../dicom-web"
        )
        p.add_argument(
            "--store-calling-ae", default=None, help="calling AE for C-STORE (default: --ae-title)"
        )
        p.add_argument("--store-user", default="", help="user name for STOW-RS basic auth")
    else:
        p.add_argument("--dicomweb", required=True, help="DICOMweb root to poll, http(s)://.../dicom-web")
        p.add_argument("--user", default="", help="user name for basic auth")
        p.add_argument("--store-to", default=None, help="where results go (default: the --dicomweb server)")
        p.add_argument("--store-calling-ae", default="SLICEWISE_AI", help="calling AE for a dicom:// target")
        p.add_argument("--interval", type=float, default=30.0, help="seconds between polls")
        p.add_argument("--since", type=date.fromisoformat, default=None, help="first poll from YYYY-MM-DD")
        p.add_argument("--once", action="store_true", help="poll once, analyse what came, and stop")
    _common(p)
    return p


def _say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _secret(path: Path | None) -> str:
    if path is None:
        return os.environ.get(SECRET_ENV, "")
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise _UsageError(f"cannot read the secret file ({exc.strerror})") from None
    if os.name == "posix" and mode & 0o077:
        _say("warning: the secret file is readable by others; chmod 600 it")
    return text


def main(command: str, argv: Sequence[str]) -> int:
    parser = build_parser(command)
    try:
        args = parser.parse_args(list(argv))
        secret = _secret(args.secret_file)
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        _say(f"slicewise {command}: error: {exc}")
        return EXIT_USAGE
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _run(command, args, secret)
    except SlicewiseError as exc:
        _say(f"slicewise {command}: {type(exc).__name__}: {exc}")
        return EXIT_USAGE


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT while the node runs (the previous handlers come back after)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("AI node: signal %d, stopping", signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(command: str, args: argparse.Namespace, secret: str) -> int:
    from viewer.core.ainode.node import AiNode, NodeConfig
    from viewer.core.ainode.target import parse_store_target
    from viewer.core.inference.cache import PredictionCache
    from viewer.core.inference.engine import InferenceEngine
    from viewer.core.paths import bundled_model_path, user_data_path

    state = args.state if args.state is not None else user_data_path() / "ai-node"
    if command == "listen":
        calling = args.store_calling_ae or args.ae_title
        target, via = parse_store_target(
            args.store_to, calling_ae=calling, username=args.store_user, secret=secret
        )
    else:
        target, via = parse_store_target(
            args.store_to or args.dicomweb,
            calling_ae=args.store_calling_ae,
            username=args.user,
            secret=secret,
        )
    engine = InferenceEngine(
        args.model if args.model is not None else bundled_model_path(),
        provider=args.provider,
        threads=args.threads,
        cache=PredictionCache(state / "cache"),
    )
    config = NodeConfig(
        state_dir=state,
        store_to=target,
        store_via=via,
        quiet_s=args.quiet,
        release_quiet_s=args.release_quiet,
        keep_s=args.keep_hours * 3600,
    )
    node = AiNode(config, engine)
    _say(f"AI node: model {engine.info.label} ({engine.info.short_hash}). {engine.info.intended_use}")
    node.start()
    try:
        with _stop_on_signals() as stop:
            _serve(command, args, secret, node, stop)
    finally:
        node.stop()
    return EXIT_OK


def _serve(command: str, args: argparse.Namespace, secret: str, node: AiNode, stop: threading.Event) -> None:
    from viewer.core.pacs.node import AuthKind, LocalAe, PacsNode

    if command == "listen":
        from viewer.core.ainode.scp import IntakeScp

        scp = IntakeScp(node, LocalAe(args.ae_title, args.host, args.port), allowed_calling_aes=args.allow)
        port = scp.start()
        _say(f"AI node: listening as {args.ae_title} on port {port}")
        try:
            while not stop.wait(1.0):
                pass
        finally:
            scp.stop()
        return
    from viewer.core.ainode.watch import DicomWebWatcher
    from viewer.core.pacs.dicomweb import DicomWebClient

    auth = AuthKind.BASIC if args.user else (AuthKind.BEARER if secret else AuthKind.NONE)
    source = PacsNode(name="watch", dicomweb_url=args.dicomweb, auth=auth, username=args.user, secret=secret)
    with DicomWebClient(source) as client:
        watcher = DicomWebWatcher(node, client, since=args.since)
        if args.once:
            watcher.poll_once()
            node.drain(timeout_s=max(60.0, args.quiet * 4))
        else:
            watcher.run(args.interval, stop.wait)
