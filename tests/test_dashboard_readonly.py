"""The dashboard refuses writes unless ``--allow-writes``: real HTTP against a real server.

Each test copies one small real study (SQLite file and artifact folder), starts
``python -m search.dashboard --port 0`` on the copy and reads the address from its first line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from small_study import STUDY, make_small_study

from search.dashboard import is_loopback

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def original(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding studies.db (one complete mlp_demo trial) and studies-artifacts/."""
    folder = tmp_path_factory.mktemp("dash_original")
    make_small_study(data_dir, f"sqlite:///{folder / 'studies.db'}", trials=1)
    return folder


@pytest.fixture
def storage(original: Path, tmp_path: Path) -> Path:
    """This test's own copy of the study: the SQLite file (with its WAL) and the artifacts."""
    for path in original.iterdir():
        copy = shutil.copytree if path.is_dir() else shutil.copy2
        copy(path, tmp_path / path.name)
    return tmp_path / "studies.db"


class Server:
    """A running ``python -m search.dashboard`` subprocess."""

    def __init__(self, db: Path, *extra: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "search.dashboard", "--storage", f"sqlite:///{db}",
             "--port", "0", *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.first_line = _read_line(self.process.stdout)
        assert self.first_line.startswith("optuna-dashboard on http://"), (
            self.first_line, self.process.poll())
        self.base = self.first_line.split()[2].removesuffix("dashboard/")

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        """(status, body) of one HTTP request to the server's loopback address."""
        port = self.base.rstrip("/").rsplit(":", 1)[1]
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/{path.lstrip('/')}",
                                         data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _read_line(stream) -> str:
    """One line from a pipe, or "" after START_TIMEOUT_S."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout=START_TIMEOUT_S)
    return lines[0] if lines else ""


@pytest.fixture
def serve(storage: Path) -> Iterator:
    servers: list[Server] = []

    def start(*extra: str) -> Server:
        servers.append(Server(storage, *extra))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def _study_names(db: Path) -> list[str]:
    return optuna.get_all_study_names(f"sqlite:///{db}")


def _artifact_files(db: Path) -> list[Path]:
    return sorted(p for p in (db.parent / "studies-artifacts").rglob("*") if p.is_file())


def test_delete_and_post_are_refused_by_default_and_the_study_stays(serve, storage) -> None:
    server = serve()
    assert "read-only (--allow-writes" in _read_line(server.process.stdout)
    artifacts = _artifact_files(storage)
    assert artifacts
    status, body = server.request("DELETE", "/api/studies/1")
    assert status == 405
    reason = json.loads(body)["reason"]
    assert "read-only" in reason and "--allow-writes" in reason
    status, body = server.request("POST", "/api/studies", {"study_name": "new",
                                                          "directions": ["minimize"]})
    assert status == 405 and "--allow-writes" in json.loads(body)["reason"]
    status, _ = server.request("PUT", "/api/studies/1/note", {"version": 1, "body": "x"})
    assert status == 405
    assert _study_names(storage) == [STUDY]
    assert _artifact_files(storage) == artifacts


def test_reads_still_work_when_read_only(serve, storage) -> None:
    server = serve()
    status, body = server.request("GET", "/api/studies")
    assert status == 200
    assert [s["study_name"] for s in json.loads(body)["study_summaries"]] == [STUDY]
    status, body = server.request("GET", "/api/studies/1")
    assert status == 200 and json.loads(body)["trials"]
    status, _ = server.request("HEAD", "/dashboard/")
    assert status == 200


def test_allow_writes_lets_delete_remove_the_study(serve, storage) -> None:
    server = serve("--allow-writes")
    status, _ = server.request("DELETE", "/api/studies/1")
    assert status == 204
    assert _study_names(storage) == []
    status, body = server.request("GET", "/api/studies")
    assert status == 200 and json.loads(body)["study_summaries"] == []


def test_non_loopback_address_prints_a_warning(serve) -> None:
    server = serve("--host", "0.0.0.0")
    warning = _read_line(server.process.stderr)
    assert warning.startswith("warning: listening on 0.0.0.0") and "no login" in warning
    status, _ = server.request("DELETE", "/api/studies/1")
    assert status == 405


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.0.1.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.0.0.2")
