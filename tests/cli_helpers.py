"""Run the real CLI in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUICK_SET = ["--set", "epochs=2", "--set", "train_fraction=0.02"]


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``python -m search.run ARGS`` from the repository root; output captured as text."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "search.run", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    """The CLI failed with exit 1 and one ``error:`` line naming ``fragment``, no traceback."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
