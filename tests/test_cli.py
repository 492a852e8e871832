"""``python -m search.run`` end to end, in subprocesses, on the real CSVs and real storages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from search.records.storage import open_storage
from search.run import main
from tests.cli_helpers import QUICK_SET, REPO, assert_one_line_error, run_cli

POSTGRES_URL = os.environ.get("HPSEARCH_TEST_POSTGRES",
                              "postgresql://postgres@127.0.0.1:5432/test")


def _trials(storage_url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(storage_url)).trials


def test_list_names_every_study():
    result = run_cli("--list")
    assert result.returncode == 0
    for name in ("mlp_lr", "mlp_grid", "mlp_batch_size", "mlp_width_depth", "mlp_deep_fix"):
        assert name in result.stdout


def test_two_trials_then_resume(data_dir, storage_url, tmp_path):
    args = ["--study", "mlp_demo", "--trials", "2", "--storage", storage_url,
            "--data-dir", str(data_dir), "--seed", "1", *QUICK_SET]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "best trial #" in first.stdout and storage_url in first.stdout
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr

    trials = _trials(storage_url, "mlp_demo")
    assert len(trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    trial = trials[0]
    assert trial.user_attrs["config"]["epochs"] == 2
    assert len(trial.user_attrs["history"]["val_accuracy"]) == len(trial.intermediate_values)
    provenance = trial.user_attrs["provenance"]
    assert provenance["versions"]["optuna"] == optuna.__version__
    assert provenance["data_fingerprint"].startswith("sha256:")
    assert provenance["seed"] == 0
    artifact_dir = tmp_path / "studies-artifacts"
    for artifact_id in trial.user_attrs["artifacts"].values():
        assert (artifact_dir / artifact_id).is_file()


def test_grid_study_stops_when_the_grid_is_done(data_dir, storage_url):
    result = run_cli("--study", "mlp_lr", "--trials", "10", "--storage", storage_url,
                     "--data-dir", str(data_dir), *QUICK_SET)
    assert result.returncode == 0, result.stderr
    assert "stopped by grid" in result.stdout
    trials = _trials(storage_url, "mlp_lr")
    assert sorted(t.params["lr"] for t in trials) == [0.00001, 0.001, 0.01, 1.0]


def test_diverging_trial_is_pruned_with_its_reason(data_dir, storage_url, tmp_path):
    study = tmp_path / "diverge.yaml"
    study.write_text("description: diverges\nobjective: mlp\nmetric: val_accuracy\n"
                     "fixed: {optimizer: sgd, momentum: 0.0, epochs: 2, train_fraction: 0.02}\n"
                     "grid: {lr: [1.0e+6, 0.01]}\n")
    result = run_cli("--study", str(study), "--storage", storage_url,
                     "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    by_lr = {t.params["lr"]: t for t in _trials(storage_url, "diverge")}
    assert by_lr[1.0e6].state == TrialState.PRUNED
    assert "diverged: loss became" in by_lr[1.0e6].user_attrs["pruned_reason"]
    assert by_lr[0.01].state == TrialState.COMPLETE


@pytest.mark.parametrize("storage_kind", ["sqlite", "journal", "postgresql"])
def test_two_jobs_share_one_storage(data_dir, tmp_path, storage_kind):
    name = f"jobs-{uuid.uuid4().hex[:8]}"
    url = {"sqlite": f"sqlite:///{tmp_path / 'shared.db'}",
           "journal": f"journal:///{tmp_path / 'shared.log'}",
           "postgresql": POSTGRES_URL}[storage_kind]
    result = run_cli("--study", "mlp_demo", "--study-name", name, "--trials", "4", "--jobs", "2",
                     "--storage", url, "--data-dir", str(data_dir),
                     "--artifact-dir", str(tmp_path / "artifacts"), *QUICK_SET)
    assert result.returncode == 0, result.stderr
    assert "locked" not in result.stderr
    try:
        trials = _trials(url, name)
        assert len(trials) == 4
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        assert len({t.user_attrs["provenance"]["host"] for t in trials}) == 1
    finally:
        if storage_kind == "postgresql":
            optuna.delete_study(study_name=name, storage=open_storage(url))


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_stop_fails_running_trials_and_the_next_run_resumes(data_dir, storage_url, stop):
    args = ["--study", "mlp_grid", "--trials", "7", "--jobs", "2", "--lanes", "1",
            "--storage", storage_url, "--data-dir", str(data_dir), "--no-progress",
            "--set", "epochs=300",
            "--set", "train_fraction=0.05"]  # trials of several seconds, long enough to stop
    process = subprocess.Popen([sys.executable, "-m", "search.run", *args], cwd=REPO,
                               start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_running_trials(storage_url, "mlp_grid", count=2, timeout=120)
        if stop == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        else:
            os.kill(process.pid, signal.SIGTERM)  # kill PID: only the parent is told
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    trials = _trials(storage_url, "mlp_grid")
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.state == TrialState.FAIL and "interrupted" in t.user_attrs["error"]
               for t in trials), [(t.number, t.state, t.user_attrs.get("error")) for t in trials]

    resumed = run_cli(*args, "--trials", "2")  # the same settings: a study keeps its own
    assert resumed.returncode == 0, resumed.stderr
    done = [t for t in _trials(storage_url, "mlp_grid") if t.state == TrialState.COMPLETE]
    interrupted_points = {t.params["point"] for t in trials}
    assert {t.params["point"] for t in done} == interrupted_points  # failed points run first


def _wait_for_running_trials(url: str, name: str, count: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            running = [t for t in _trials(url, name) if t.state == TrialState.RUNNING]
            if len(running) >= count and all("config" in t.user_attrs for t in running):
                time.sleep(1.0)
                return
        except KeyError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"no {count} running trials within {timeout}s")


@pytest.mark.parametrize(("args", "fragment"), [
    (["--study", "mlp_nope"], "unknown study 'mlp_nope'"),
    (["--study", "mlp_demo", "--set", "depht=3"], "unknown config key 'depht'"),
    (["--study", "mlp_demo", "--set", "epochs=abc"], "'epochs' must be an integer"),
    (["--study", "mlp_demo", "--set", "epochs"], "--set expects KEY=VALUE"),
    (["--study", "mlp_lr", "--set", "lr=0.1"], "searched by this study"),
    (["--study", "mlp_demo", "--storage", "studies.db"], "is not a storage URL"),
    (["--study", "mlp_demo", "--storage", "postgresql://nobody@127.0.0.1:1/none"],
     "cannot open storage"),
    (["--study", "mlp_demo", "--data-dir", "/nonexistent"], "no euro data at /nonexistent/euro"),
    (["--study", "mlp_demo", "--device", "cuda"], "no CUDA GPU is visible"),
    (["--study", "mlp_demo", "--trials", "0"], "--trials must be at least 1"),
    (["--study", "mlp_demo", "--sampler", "grid"], "--sampler grid needs a study with a grid"),
    (["--study", "mlp_grid", "--sampler", "tpe"], "--sampler tpe does not apply to mlp_grid"),
    (["--study", "mlp_demo", "--pruner", "magic"], "unknown --pruner 'magic'"),
    (["--study", "mlp_demo", "--backend", "ray", "--trials", "0"], "--trials must be at least 1"),
    (["--study", "mlp_demo", "--backend", "ray", "--max-concurrent", "0"],
     "--max-concurrent must be at least 1"),
    (["--study", "mlp_demo", "--backend", "ray", "--lanes", "2", "--scheduler", "asha"],
     "ranks whole Ray trials"),
    ([], "--study is required"),
])
def test_bad_input_gives_one_line(args, fragment, data_dir, storage_url, capsys):
    # In-process through the same main() the command runs, to keep the suite fast; the
    # subprocess test below checks the real command's exit code and stderr.
    extra = [] if "--data-dir" in args else ["--data-dir", str(data_dir)]
    extra += [] if "--storage" in args else ["--storage", storage_url]
    code = main([*args, *extra, "--no-progress"])
    captured = capsys.readouterr()
    result = subprocess.CompletedProcess(args, code, captured.out, captured.err)
    assert_one_line_error(result, fragment)
    assert "study " not in captured.out  # refused before the study header is printed


def test_bad_input_from_the_real_command(storage_url):
    assert_one_line_error(run_cli("--study", "mlp_nope", "--storage", storage_url),
                          "unknown study 'mlp_nope'")


def test_runs_on_synthetic_data_say_so(tmp_path, storage_url):
    from objectives.euro_data import write_synthetic_euro

    write_synthetic_euro(tmp_path / "data", sizes=(2_000, 300, 300))
    result = run_cli("--study", "mlp_demo", "--trials", "1", "--storage", storage_url,
                     "--data-dir", str(tmp_path / "data"), "--set", "epochs=1")
    assert result.returncode == 0, result.stderr
    assert "SYNTHETIC stand-in" in result.stdout
    trial = _trials(storage_url, "mlp_demo")[0]
    assert trial.user_attrs["synthetic_data"] is True
    assert trial.user_attrs["provenance"]["synthetic_data"] is True


def test_timeout_stops_starting_trials(data_dir, storage_url):
    result = run_cli("--study", "mlp_demo", "--trials", "50", "--timeout", "1", "--storage",
                     storage_url, "--data-dir", str(data_dir), *QUICK_SET)
    assert result.returncode == 0, result.stderr
    assert "stopped by timeout" in result.stdout
    assert len(_trials(storage_url, "mlp_demo")) < 50


def test_failing_trials_are_recorded_and_the_run_goes_on(data_dir, storage_url, tmp_path):
    study = tmp_path / "fails.yaml"
    study.write_text("description: x above 0.5 fails\nobjective: toy\nmetric: val_loss\n"
                     "direction: minimize\nfixed: {fail_above: 0.5, steps: 2}\n"
                     "space: {x: {type: float, low: 0.0, high: 1.0}}\n")
    result = run_cli("--study", str(study), "--trials", "6", "--seed", "3", "--storage",
                     storage_url, "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    trials = _trials(storage_url, "fails")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(trials) == 6 and failed and len(failed) < 6
    for trial in failed:
        assert trial.params["x"] > 0.5 and "RuntimeError" in trial.user_attrs["error"]
        assert f"trial {trial.number} failed: RuntimeError" in result.stdout


def test_every_trial_failing_is_counted_and_exits_1(data_dir, storage_url, tmp_path, capsys):
    study = tmp_path / "allfail.yaml"
    study.write_text("description: every trial fails\nobjective: toy\nmetric: val_loss\n"
                     "direction: minimize\nfixed: {fail_above: -10.0, steps: 2}\n"
                     "space: {x: {type: float, low: 0.0, high: 1.0}}\n")
    code = main(["--study", str(study), "--trials", "3", "--storage", storage_url,
                 "--data-dir", str(data_dir), "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert "added 0 complete, 0 pruned, 3 failed trial(s)" in captured.out
    assert "all 3 trial(s) of this run failed" in captured.err
    assert [t.state for t in _trials(storage_url, "allfail")] == [TrialState.FAIL] * 3


def test_list_shortens_descriptions_at_a_word(capsys):
    from search.study.spec import list_studies, load_study_spec

    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    specs = [load_study_spec(path) for path in list_studies()]
    assert len(lines) == len(specs)
    for line, spec in zip(lines, specs, strict=True):
        assert len(line) <= 120, line
        text = " ".join(spec.description.split())
        shown = line.split(maxsplit=2)[2]
        if shown.endswith(" ..."):  # cut between two words of the description
            kept = shown.removesuffix(" ...")
            assert text.startswith(kept + " "), (kept, text)
        else:
            assert shown == text


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:///studies.db", "sqlite:///{cwd}/studies.db"),
    ("sqlite:///runs/a.db?timeout=5", "sqlite:///{cwd}/runs/a.db?timeout=5"),
    ("sqlite:////abs/a.db", "sqlite:////abs/a.db"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("journal:///runs/j.log", "journal:///{cwd}/runs/j.log"),
    ("runs/j.log", "{cwd}/runs/j.log"),
    ("postgresql://u@host/db", "postgresql://u@host/db"),
])
def test_relative_storage_files_become_absolute(url, expected, tmp_path, monkeypatch):
    from search.run import absolute_storage_url

    monkeypatch.chdir(tmp_path)
    assert absolute_storage_url(url) == expected.format(cwd=tmp_path.resolve())


def test_a_run_from_another_folder_keeps_its_files_there(data_dir, tmp_path):
    """The default storage, artifacts and cache are the current folder's, named absolutely."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "search.run", "--study", "mlp_demo",
                             "--trials", "1", "--data-dir", str(data_dir), "--no-progress",
                             *QUICK_SET], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    here = tmp_path.resolve()
    assert f"stored in sqlite:///{here}/studies.db" in result.stdout
    assert f"artifacts in {here}/studies-artifacts" in result.stdout
    trial = _trials(f"sqlite:///{here}/studies.db", "mlp_demo")[0]
    assert all((here / "studies-artifacts" / a).is_file()
               for a in trial.user_attrs["artifacts"].values())


def test_progress_bar_draws_its_counts_with_the_bar(capsys):
    from search.driver.work import Progress

    progress = Progress(3, "maximize", enabled=True)
    progress.handle(("trial", {"number": 0, "state": "COMPLETE", "value": 0.5}))
    last = capsys.readouterr().err.split("\r")[-1]
    assert "1/3" in last and "done=1" in last, last  # not the new counts on the old bar
    progress.handle(("trial", {"number": 1, "state": "PRUNED", "value": None}))
    last = capsys.readouterr().err.split("\r")[-1]
    assert "2/3" in last and "pruned=1" in last, last
    progress.close()


def test_euro_data_help_names_the_command(capsys):
    from objectives.euro_data import main as euro_main

    with pytest.raises(SystemExit):
        euro_main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m objectives.euro_data ")
