"""A decoder pool that dies must not turn good slices into filler (silently wrong pixels)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from viewer.core.paths import demo_study_dir

# Run as a script with no ``if __name__ == "__main__"`` guard: under spawn, every decoder process
# dies while bootstrapping, so the pool breaks on its first task.
SCRIPT = textwrap.dedent(
    """
    import numpy as np
    from viewer.core.dicom.loader import load_paths
    from viewer.core.dicom.pixels import decode_frame
    from viewer.core.dicom.volume import StackVolume

    stack = max(load_paths([{demo!r}]).all_stacks(), key=len)
    volume = StackVolume(stack)
    hu = volume.load_all()
    reference = np.stack([decode_frame(info) for info in stack.slices])
    print("RESULT", len(stack), len(volume.bad_slices), bool(np.array_equal(hu, reference)))
    """
)


def test_load_all_recovers_when_decoder_processes_cannot_start(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT.format(demo=str(demo_study_dir())))
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert result, proc.stderr[-2000:]
    _, n, bad, identical = result[0].split()
    assert int(n) >= 16  # enough compressed slices for the process pool to be used
    assert int(bad) == 0
    assert identical == "True"
