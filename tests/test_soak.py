"""The soak benchmark's short form: commands, workers killed at random, the dashboard polled."""

from __future__ import annotations

import subprocess
import sys

from tests.cli_helpers import REPO


def test_short_soak_loses_duplicates_and_strands_nothing(data_dir):
    result = subprocess.run([sys.executable, "benchmarks/soak.py", "--short", "--data-dir",
                             str(data_dir)], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "ok: 0 stuck, 0 run twice, 0 missing, 0 lock errors" in result.stdout
    print(result.stdout)
