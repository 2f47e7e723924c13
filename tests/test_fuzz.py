"""The fuzz target runs, replays the inputs that once found bugs, and finds nothing in a short bounded run.

Longer runs: ``./run fuzz 600`` (see ``fuzz/fuzz_inputs.py``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_bounded_fuzz_run_finds_no_crash(tmp_path: Path) -> None:
    argv = [sys.executable, "fuzz/fuzz_inputs.py", "-runs=30000", f"-artifact_prefix={tmp_path}/"]
    result = subprocess.run(
        [*argv, str(tmp_path), "fuzz/corpus"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 30000 runs" in result.stderr
    assert not list(tmp_path.glob("crash-*"))
