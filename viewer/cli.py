"""``slicewise`` console entry point.

``slicewise [PATH ...] [--demo]`` opens the viewer; ``slicewise predict PATH ... --out FILE`` runs the
model headless (no Qt imported).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "predict":
        from viewer.predict_cli import main as predict_main

        return predict_main(args[1:])
    if args and args[0] in ("listen", "watch"):
        from viewer.node_cli import main as node_main

        return node_main(args[0], args[1:])
    from viewer.qt.app import main as gui_main

    return gui_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
