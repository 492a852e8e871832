"""Nothing lost, nothing run twice: claims, dead workers and processes, shared storages.

Every test runs the real command (or real processes) on real SQLite files and the PostgreSQL
server, with the toy objective where training time does not matter.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.records.liveness import HEARTBEAT_ATTR, OWNER_ATTR, Owner
from search.records.storage import open_storage
from tests.cli_helpers import REPO, assert_one_line_error, run_cli

POSTGRES_URL = os.environ.get("HPSEARCH_TEST_POSTGRES",
                              "postgresql://postgres@127.0.0.1:5432/test")
STORAGES = ["sqlite", "postgresql"]


def _url(kind: str, tmp_path: Path) -> str:
    return {"sqlite": f"sqlite:///{tmp_path / 'shared.db'}",
            "journal": f"journal:///{tmp_path / 'shared.log'}",
            "postgresql": POSTGRES_URL}[kind]


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).trials


def _delete(url: str, name: str) -> None:
    if url.startswith("postgresql"):
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=open_storage(url))


def _toy_grid(tmp_path: Path, points: int, sleep_s: float = 0.0, steps: int = 2,
              extra: str = "") -> Path:
    path = tmp_path / f"grid{points}.yaml"
    path.write_text(f"description: toy grid\nobjective: toy\nmetric: val_loss\n"
                    f"direction: minimize\nfixed: {{steps: {steps}, sleep_s: {sleep_s}{extra}}}\n"
                    f"grid: {{x: {[round(i * 0.1, 1) for i in range(points)]}}}\n")
    return path


def _assert_each_point_once(trials: list[optuna.trial.FrozenTrial], points: int) -> None:
    done = Counter(t.params["x"] for t in trials
                   if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len(done) == points and set(done.values()) == {1}, done


CLAIMER = textwrap.dedent("""
    import sys, json
    from search.driver.claims import TrialDealer
    from search.records.liveness import Owner
    from search.driver.runner import RunOptions, make_dealer
    from search.study.spec import load_study_spec
    url, study_file, name, out = sys.argv[1:]
    spec = load_study_spec(study_file)
    dealer = make_dealer(spec, name, RunOptions(n_trials=1, data_dir=".", storage_url=url),
                         run_id="claimer")
    ids = []
    me = Owner.of()
    while (trial_id := dealer.next_trial(me)) is not None:
        ids.append(trial_id)
        dealer.study.tell(dealer.study._storage.get_trial(trial_id).number, 1.0)
    open(out, "w").write(json.dumps(ids))
""")


@pytest.mark.parametrize("kind", STORAGES)
def test_two_processes_claiming_at_once_never_share_a_point(tmp_path, kind):
    """Two processes deal a 50-point grid as fast as they can: each point exactly once."""
    import json

    from search.driver.runner import RunOptions, create_or_load_study
    from search.study.spec import load_study_spec

    url, name = _url(kind, tmp_path), f"claims-{uuid.uuid4().hex[:8]}"
    study_file = _toy_grid(tmp_path, 50)
    create_or_load_study(load_study_spec(study_file), name,
                         RunOptions(n_trials=1, data_dir=Path("."), storage_url=url))
    script = tmp_path / "claimer.py"
    script.write_text(CLAIMER)
    try:
        outs = [tmp_path / f"ids{i}.json" for i in range(2)]
        processes = [subprocess.Popen([sys.executable, str(script), url, str(study_file), name,
                                       str(out)], cwd=REPO) for out in outs]
        assert [p.wait(timeout=300) for p in processes] == [0, 0]
        ids = [json.loads(out.read_text()) for out in outs]
        assert ids[0] and ids[1], "both processes claimed trials"
        assert not set(ids[0]) & set(ids[1])
        _assert_each_point_once(_trials(url, name), 50)
    finally:
        _delete(url, name)


@pytest.mark.parametrize("kind", STORAGES)
def test_four_commands_create_one_storage_and_grid_at_once(tmp_path, data_dir, kind):
    url, name = _url(kind, tmp_path), f"four-{uuid.uuid4().hex[:8]}"
    if kind == "postgresql":  # a fresh database, as a first run on a new server would see it
        url = _fresh_postgres_database()
    study_file = _toy_grid(tmp_path, 12, sleep_s=0.05)
    try:
        processes = [subprocess.Popen(
            [sys.executable, "-m", "search.run", "--study", str(study_file), "--study-name",
             name, "--storage", url, "--data-dir", str(data_dir), "--no-progress"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)]
        results = [p.communicate(timeout=300) for p in processes]
        for process, (_, stderr) in zip(processes, results, strict=True):
            assert process.returncode == 0, stderr
        _assert_each_point_once(_trials(url, name), 12)
    finally:
        _delete(url, name)
        if kind == "postgresql":
            _drop_postgres_database(url)


def _fresh_postgres_database() -> str:
    import sqlalchemy

    name = f"hpsearch_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_postgres_database(url: str) -> None:
    import sqlalchemy

    engine = sqlalchemy.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(
            f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)"))
    engine.dispose()


def test_seeded_grid_with_two_jobs_runs_every_point_once(tmp_path, data_dir, storage_url):
    study_file = _toy_grid(tmp_path, 7)
    for seed in ("1", "2"):
        result = run_cli("--study", str(study_file), "--seed", seed, "--jobs", "2",
                         "--storage", storage_url, "--data-dir", str(data_dir), "--no-progress")
        assert result.returncode == 0, result.stderr
    _assert_each_point_once(_trials(storage_url, "grid7"), 7)
    assert len(_trials(storage_url, "grid7")) == 7  # the second run found nothing to add


def test_a_seeded_single_process_search_draws_the_same_trials(tmp_path, data_dir):
    study = tmp_path / "bowl.yaml"
    study.write_text("description: bowl\nobjective: toy\nmetric: val_loss\ndirection: minimize\n"
                     "fixed: {steps: 2}\nspace: {x: {type: float, low: -2, high: 2}, "
                     "y: {type: float, low: -2, high: 2}}\n")
    params = []
    for i in range(2):
        url = f"sqlite:///{tmp_path / f's{i}.db'}"
        result = run_cli("--study", str(study), "--trials", "12", "--seed", "7", "--storage",
                         url, "--data-dir", str(data_dir), "--no-progress")
        assert result.returncode == 0, result.stderr
        params.append([t.params for t in _trials(url, "bowl")])
    assert params[0] == params[1]


def _start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "search.run", *args], cwd=REPO,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _running(url: str, name: str, count: int, timeout: float = 120
             ) -> list[optuna.trial.FrozenTrial]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            running = [t for t in _trials(url, name) if t.state == TrialState.RUNNING
                       and "config" in t.user_attrs]
        except KeyError:
            running = []
        if len(running) >= count:
            return running
        time.sleep(0.2)
    raise AssertionError(f"no {count} running trial(s) within {timeout}s")


def _owner_pid(trial: optuna.trial.FrozenTrial) -> int:
    owner = Owner.from_attr(trial.system_attrs[OWNER_ATTR])
    assert owner is not None
    return owner.pid


def _gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if Owner.of(pid).start == "":
            return True
        time.sleep(0.2)
    return False


def test_a_killed_worker_is_reported_replaced_and_its_ticket_given_back(tmp_path, data_dir,
                                                                       storage_url):
    study_file = _toy_grid(tmp_path, 6, sleep_s=0.5, steps=4)
    process = _start(["--study", str(study_file), "--jobs", "2", "--storage", storage_url,
                      "--data-dir", str(data_dir), "--no-progress"])
    try:
        victim = _running(storage_url, "grid6", 1)[0]
        os.kill(_owner_pid(victim), signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0, stderr
    # The parent reports it with the signal; had a claim's stale check come first, it says
    # the process is gone. Either way the trial is FAIL as a dead worker's.
    assert f"trial {victim.number} failed: worker died" in stdout
    trials = _trials(storage_url, "grid6")
    assert trials[victim.number].state == TrialState.FAIL
    done = {t.params["x"] for t in trials if t.state == TrialState.COMPLETE}
    assert len(done) == 5 and victim.params["x"] not in done  # it waits for the next run
    rerun = run_cli("--study", str(study_file), "--storage", storage_url, "--data-dir",
                    str(data_dir), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    _assert_each_point_once(_trials(storage_url, "grid6"), 6)


@pytest.mark.parametrize("target", ["jobs1", "parent"])
def test_kill_9_then_one_more_command_leaves_nothing_running(tmp_path, data_dir, storage_url,
                                                             target):
    """``kill -9`` of a --jobs 1 run, or of the parent of two workers, mid-trial."""
    study_file = _toy_grid(tmp_path, 4, sleep_s=0.5, steps=6)
    jobs = "1" if target == "jobs1" else "2"
    process = _start(["--study", str(study_file), "--jobs", jobs, "--storage", storage_url,
                      "--data-dir", str(data_dir), "--no-progress"])
    try:
        running = _running(storage_url, "grid4", int(jobs))
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
        for trial in running:  # the workers do not outlive their parent
            assert _gone(_owner_pid(trial)), f"worker {_owner_pid(trial)} still alive"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert [t.state for t in _trials(storage_url, "grid4")].count(TrialState.RUNNING) >= 1
    rerun = run_cli("--study", str(study_file), "--storage", storage_url, "--data-dir",
                    str(data_dir), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    assert "left RUNNING by processes that are gone" in rerun.stdout
    trials = _trials(storage_url, "grid4")
    _assert_each_point_once(trials, 4)
    stale = [t for t in trials if t.state == TrialState.FAIL]
    assert stale and all(t.user_attrs["error"].startswith("worker died: its process")
                         for t in stale)


def test_a_trial_on_another_host_is_failed_only_after_the_grace_period(tmp_path, data_dir,
                                                                      storage_url):
    from search.driver.claims import TrialDealer
    from search.driver.runner import RunOptions, create_or_load_study
    from search.records.liveness import GRACE_PERIOD_S
    from search.study.spec import load_study_spec

    spec = load_study_spec(_toy_grid(tmp_path, 3))
    study = create_or_load_study(spec, "grid3", RunOptions(n_trials=1, data_dir=data_dir,
                                                           storage_url=storage_url))
    dealer = TrialDealer(study, spec, storage_url, run_id="test")
    elsewhere = Owner(host="another-host", boot="b", pid=1, start="1")
    quiet, beating = dealer.next_trial(elsewhere), dealer.next_trial(elsewhere)
    storage = study._storage
    storage.set_trial_system_attr(quiet, HEARTBEAT_ATTR, time.time() - GRACE_PERIOD_S - 5)
    storage.set_trial_system_attr(beating, HEARTBEAT_ATTR, time.time())
    assert dealer.fail_stale() == 1
    assert storage.get_trial(quiet).state == TrialState.FAIL
    assert "no heartbeat" in storage.get_trial(quiet).user_attrs["error"]
    assert storage.get_trial(beating).state == TrialState.RUNNING
    # The next run deals the failed point again (first); not the live one.
    next_run = TrialDealer(study, spec, storage_url, run_id="next")
    third = storage.get_trial(next_run.next_trial(Owner.of()))
    assert third.params == storage.get_trial(quiet).params


def test_running_trials_record_heartbeats(tmp_path, data_dir, storage_url):
    from search.records import liveness

    study_file = _toy_grid(tmp_path, 1, sleep_s=0.3, steps=10)
    process = _start(["--study", str(study_file), "--storage", storage_url,
                      "--data-dir", str(data_dir), "--no-progress"])
    try:
        trial = _running(storage_url, "grid1", 1)[0]
        assert trial.system_attrs[OWNER_ATTR]["pid"] == process.pid
        assert abs(trial.system_attrs[HEARTBEAT_ATTR] - time.time()) < liveness.GRACE_PERIOD_S
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_resuming_with_other_settings_is_refused(tmp_path, data_dir, storage_url):
    study_file = _toy_grid(tmp_path, 2)
    first = run_cli("--study", str(study_file), "--storage", storage_url, "--data-dir",
                    str(data_dir), "--set", "steps=3")
    assert first.returncode == 0, first.stderr
    changed = run_cli("--study", str(study_file), "--storage", storage_url, "--data-dir",
                      str(data_dir), "--set", "steps=5", "--set", "sleep_s=0.01")
    assert_one_line_error(changed, "was made with other fixed settings")
    assert "sleep_s 0.0 -> 0.01" in changed.stderr and "steps 3 -> 5" in changed.stderr
    assert "--study-name" in changed.stderr
    same = run_cli("--study", str(study_file), "--storage", storage_url, "--data-dir",
                   str(data_dir), "--set", "steps=3.0")
    assert same.returncode == 0 and "grid of study 'grid2' is complete" in same.stdout


def test_a_run_whose_every_trial_fails_exits_1(tmp_path, data_dir, storage_url):
    study_file = _toy_grid(tmp_path, 2, extra=", fail_above: -1.0")
    result = run_cli("--study", str(study_file), "--storage", storage_url, "--data-dir",
                     str(data_dir), "--no-progress")
    assert result.returncode == 1
    assert "error: all 2 trial(s) of this run failed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("args", "fragment"), [
    (["--timeout", "-5"], "--timeout must be a positive number"),
    (["--timeout", "0"], "--timeout must be a positive number"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--jobs", "0"], "--jobs must be at least 1"),
])
def test_bad_cli_numbers_are_refused_before_any_trial(args, fragment, data_dir, storage_url):
    assert_one_line_error(run_cli("--study", "mlp_demo", "--storage", storage_url,
                                  "--data-dir", str(data_dir), *args), fragment)
    assert not Path(storage_url.removeprefix("sqlite:///")).exists()


def _corrupt_sqlite(path: Path, data_dir: Path) -> None:
    """A real study file whose header is intact and whose later pages are garbage."""
    result = run_cli("--study", str(_toy_grid(path.parent, 2)), "--storage", f"sqlite:///{path}",
                     "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    data = bytearray(path.read_bytes())
    assert data[:16] == b"SQLite format 3\x00"
    page = int.from_bytes(data[16:18], "big")
    data[page:] = b"\xa5" * (len(data) - page)
    path.write_bytes(bytes(data))


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("command", ["run", "export", "dashboard", "reports"])
def test_a_corrupt_sqlite_file_is_one_line_everywhere(tmp_path, data_dir, command):
    db = tmp_path / "broken.db"
    _corrupt_sqlite(db, data_dir)
    before = db.read_bytes()
    url = f"sqlite:///{db}"
    result = {
        "run": lambda: run_cli("--study", "mlp_demo", "--storage", url, "--data-dir",
                               str(data_dir)),
        "export": lambda: _cli("search.export", "--study", "grid2", "--storage", url,
                               "--out", str(tmp_path / "out")),
        "dashboard": lambda: _cli("search.dashboard", "--storage", url, "--port", "0"),
        "reports": lambda: _cli("reports.build", "--study", "grid2", "--storage", url,
                                "--out", str(tmp_path / "reports"), "--no-png"),
    }[command]()
    assert_one_line_error(result, f"SQLite file {db} cannot be read")
    assert db.read_bytes() == before  # nothing in the storage changed


@pytest.mark.parametrize("place", ["middle", "end"])
@pytest.mark.parametrize("command", ["run", "export"])
def test_a_journal_with_a_garbage_line_is_one_line(tmp_path, data_dir, command, place):
    log = tmp_path / "studies.log"
    url = f"journal:///{log}"
    made = run_cli("--study", str(_toy_grid(tmp_path, 2)), "--storage", url, "--data-dir",
                   str(data_dir))
    assert made.returncode == 0, made.stderr
    lines = log.read_text().splitlines(keepends=True)
    where = {"middle": len(lines) // 2, "end": len(lines)}[place]
    log.write_text("".join([*lines[:where], "{not json at all\n", *lines[where:]]))
    before = log.read_bytes()
    result = (run_cli("--study", str(tmp_path / "grid2.yaml"), "--storage", url, "--data-dir",
                      str(data_dir)) if command == "run"
              else _cli("search.export", "--study", "grid2", "--storage", url,
                        "--out", str(tmp_path / "configs")))
    assert_one_line_error(result, f"journal file {log} cannot be read")
    assert log.read_bytes() == before


def test_postgresql_connections_are_checked_and_time_out():
    storage = open_storage(POSTGRES_URL)
    assert storage.engine.pool._pre_ping
    assert storage.engine_kwargs["connect_args"]["connect_timeout"] > 0
