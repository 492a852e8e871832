"""The dashboard CLI's bad inputs (the pages themselves: test_dashboard_browser.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_missing_storage_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "search.dashboard", "--storage",
                           f"sqlite:///{tmp_path / 'absent.db'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("error: no study storage at") and "Traceback" not in done.stderr
    assert not (tmp_path / "absent.db").exists()
