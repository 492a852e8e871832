"""Run the real CLI in a subprocess, as a user would."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
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


@contextlib.contextmanager
def dashboard_server(storage_url: str) -> Iterator[str]:
    """``python -m search.dashboard`` on ``storage_url`` and a free port of 127.0.0.1 (read-only,
    the default): yields its address, stops it afterwards."""
    server = subprocess.Popen(
        [sys.executable, "-m", "search.dashboard", "--storage", storage_url, "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(server.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout=60)
        assert lines and lines[0].startswith("optuna-dashboard on http://127.0.0.1:"), lines
        yield lines[0].split()[2]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
