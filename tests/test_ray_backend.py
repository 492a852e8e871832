"""The Ray Tune backend on a local Ray with 2 CPUs: records, pruning, faults, mixing backends.

These start real Ray clusters (about 10-30 s each on a busy 2-core machine); CI runs them.
The in-process tests share one local Ray; the CLI tests start their own, as a user would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import optuna
import pytest
import ray  # the optional "ray" extra; CI installs it (make setup), so these tests always run
from optuna.trial import TrialState

from search.backends.ray_tune import RayOptions, run_study_ray
from search.driver.runner import RunOptions, run_study
from search.study.spec import load_study_spec

REPO = Path(__file__).resolve().parent.parent
STUDIES = Path(__file__).resolve().parent / "studies"
RAY_2_CPUS = RayOptions(num_cpus=2, max_concurrent=2)
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray with 2 CPUs for this module's in-process tests."""
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}})
    yield
    ray.shutdown()


def _options(storage_url: str, data_dir: Path, n: int, **kwargs) -> RunOptions:
    return RunOptions(n_trials=n, data_dir=data_dir, storage_url=storage_url, seed=0,
                      progress=False, device="cpu", **kwargs)


def _trials(storage_url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage_url).trials


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "search.run", *args]


def test_cli_runs_a_short_mlp_study_on_ray(storage_url, data_dir, tmp_path):
    out = subprocess.run(
        _cli("--study", "mlp_demo", "--trials", "3", "--backend", "ray", "--ray-cpus", "2",
             "--storage", storage_url, "--data-dir", str(data_dir), "--seed", "0",
             "--set", "epochs=3", "--set", "train_fraction=0.02", "--no-progress"),
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "stopped by trials" in out.stdout
    trials = _trials(storage_url, "mlp_demo")
    assert len(trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path / "studies-artifacts"))
    for trial in trials:
        epochs = len(trial.user_attrs["history"]["val_accuracy"])
        assert sorted(trial.intermediate_values) == list(range(epochs))
        assert trial.user_attrs["config"]["epochs"] == 3
        assert set(trial.user_attrs["metrics"]) >= {"val_accuracy", "test_accuracy"}
        assert trial.user_attrs["provenance"]["data_fingerprint"].startswith("sha256:")
        assert set(trial.user_attrs["artifacts"]) >= {"batch_losses.npy",
                                                      "decision_boundary.npz"}
        with store.open_reader(trial.user_attrs["artifacts"]["batch_losses.npy"]) as f:
            assert f.read(6) == b"\x93NUMPY"
        assert trial.user_attrs["run_id"]


def test_cli_on_the_relative_default_storage_from_another_folder(data_dir, tmp_path):
    """The README's command as typed: default ``sqlite:///studies.db`` and relative folders,
    from a folder that is not the repository. Ray runs each trial in its own working folder;
    the trials must still land in ``./studies.db`` of the command's folder."""
    name = f"relative-{uuid.uuid4().hex[:8]}"
    (tmp_path / "data").symlink_to(data_dir)
    out = subprocess.run(
        _cli("--study", "mlp_demo", "--study-name", name, "--trials", "2", "--backend", "ray",
             "--ray-cpus", "2", "--data-dir", "data", "--cache-dir", "cache", "--seed", "0",
             "--set", "epochs=2", "--set", "train_fraction=0.02", "--no-progress"),
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-4000:]
    assert "0 failed" in out.stdout, out.stdout
    trials = _trials(f"sqlite:///{tmp_path}/studies.db", name)
    assert len(trials) == 2
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    for trial in trials:
        for artifact_id in trial.user_attrs["artifacts"].values():
            assert (tmp_path / "studies-artifacts" / artifact_id).is_file()
    # No trial opened a studies.db of its own in its Ray working folder.
    working = list(Path(tempfile.gettempdir(), "ray").glob(
        f"session_*/artifacts/*/{name}-*/working_dirs/*"))
    assert working, "Ray's per-trial working folders were not found"
    assert not [p for folder in working for p in folder.rglob("studies*")]


def test_a_worker_failure_outside_the_objective_is_the_trials_error(local_ray, storage_url,
                                                                     data_dir, tmp_path, capsys):
    from search.run import report_summary

    spec = load_study_spec(STUDIES / "toy_mixed.yaml")
    not_a_folder = tmp_path / "artifacts"
    not_a_folder.write_text("a file where the artifact folder should be")
    summary = run_study_ray(spec, _options(storage_url, data_dir, 2, artifact_dir=not_a_folder),
                            RAY_2_CPUS)
    trials = _trials(storage_url, spec.name)
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    for trial in trials:  # the worker's own error, not "worker died"
        assert trial.user_attrs["error"].startswith("FileExistsError"), trial.user_attrs
        assert "Traceback" in trial.user_attrs["traceback"]
    assert (summary.complete, summary.pruned, summary.failed) == (0, 0, 2)
    printed = capsys.readouterr().out
    assert f"trial {trials[0].number} failed: FileExistsError" in printed
    assert report_summary(summary, spec) == 1  # every trial failed: the command exits 1


def test_asha_stopped_trials_are_pruned_with_their_curves(local_ray, storage_url, data_dir):
    spec = load_study_spec(STUDIES / "toy_asha.yaml")
    summary = run_study_ray(spec, _options(storage_url, data_dir, 8), RAY_2_CPUS)
    trials = _trials(storage_url, spec.name)
    assert len(trials) == 8 and summary.stopped_by == "trials"
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete and len(pruned) + len(complete) == 8
    for trial in pruned:
        steps = sorted(trial.intermediate_values)
        assert steps == list(range(len(steps))) and 1 <= len(steps) < 6
        assert trial.value == trial.intermediate_values[steps[-1]]
        assert trial.user_attrs["pruned_reason"] == "stopped early by the pruner"
        assert "curve.npy" in trial.user_attrs["artifacts"]  # it ended cleanly, not killed
    for trial in complete:
        assert sorted(trial.intermediate_values) == list(range(6))
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    overlaps = [b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)]
    assert any(overlaps), "no two trials ran at the same time"


def test_failing_and_killed_trials_are_fail_and_the_run_goes_on(local_ray, storage_url,
                                                                 data_dir, capsys):
    spec = load_study_spec(STUDIES / "toy_faults.yaml")
    summary = run_study_ray(spec, _options(storage_url, data_dir, 4), RAY_2_CPUS)
    by_x = {t.params["x"]: t for t in _trials(storage_url, spec.name)}
    assert sorted(by_x) == [0.0, 1.0, 2.5, 3.5]
    assert by_x[0.0].state == by_x[1.0].state == TrialState.COMPLETE
    assert by_x[3.5].state == TrialState.FAIL
    assert by_x[3.5].user_attrs["error"].startswith("RuntimeError: toy objective told to fail")
    assert by_x[2.5].state == TrialState.FAIL  # its worker process was killed
    assert by_x[2.5].user_attrs["error"].startswith("worker died")
    assert (summary.complete, summary.failed) == (2, 2)
    printed = capsys.readouterr().out  # one line per failed trial, with its reason
    assert f"trial {by_x[3.5].number} failed: RuntimeError: toy objective" in printed
    assert f"trial {by_x[2.5].number} failed: worker died" in printed


def test_a_study_moves_between_local_and_ray(local_ray, storage_url, data_dir):
    spec = load_study_spec(STUDIES / "toy_mixed.yaml")
    run_study(spec, _options(storage_url, data_dir, 2))
    run_study_ray(spec, _options(storage_url, data_dir, 3), RAY_2_CPUS)
    run_study(spec, _options(storage_url, data_dir, 2))
    trials = _trials(storage_url, spec.name)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 7
    assert len({t.user_attrs["run_id"] for t in trials}) == 3
    keys = {frozenset(t.user_attrs) for t in trials}
    assert len(keys) == 1  # Ray trials record exactly the attributes local ones do


def test_ctrl_c_leaves_no_running_trial(storage_url, data_dir, tmp_path):
    spec_file = tmp_path / "slow.yaml"
    spec_file.write_text((STUDIES / "toy_mixed.yaml").read_text().replace(
        "fixed: {steps: 4}", "fixed: {steps: 100, sleep_s: 0.2}"))
    proc = subprocess.Popen(
        _cli("--study", str(spec_file), "--trials", "4", "--backend", "ray", "--ray-cpus", "2",
             "--storage", storage_url, "--data-dir", str(data_dir), "--no-progress"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not _has_running(storage_url, "slow"):
            time.sleep(1)
        assert _has_running(storage_url, "slow"), "no trial started within 180 s"
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, output[-3000:]
    trials = _trials(storage_url, "slow")
    assert trials and all(t.state != TrialState.RUNNING for t in trials)
    assert any(t.state == TrialState.FAIL and t.user_attrs["error"].startswith("interrupted")
               for t in trials)


def _has_running(storage_url: str, name: str) -> bool:
    try:
        trials = _trials(storage_url, name)
    except KeyError:
        return False
    return any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials)


def test_a_ray_trial_trains_a_pack_of_lanes(local_ray, storage_url, data_dir):
    spec = load_study_spec("mlp_grid").with_overrides(fixed={"epochs": 2,
                                                             "train_fraction": 0.02})
    summary = run_study_ray(spec, _options(storage_url, data_dir, 7, lanes=4), RAY_2_CPUS)
    assert (summary.complete, summary.failed) == (7, 0)
    trials = _trials(storage_url, "mlp_grid")
    assert len({t.params["point"] for t in trials}) == 7
    # Two Ray trials (packs of 4 and 3 lanes), each in one worker process.
    owners = [t.system_attrs["hpsearch:owner"]["pid"] for t in trials]
    assert max(owners.count(pid) for pid in set(owners)) >= 3
    assert len({frozenset(t.user_attrs) for t in trials}) == 1
    assert all(len(t.intermediate_values) == 2 for t in trials)


def test_lanes_on_ray_refuse_asha(local_ray, storage_url, data_dir):
    from objectives.errors import ConfigError

    spec = load_study_spec("mlp_demo")
    with pytest.raises(ConfigError, match="ranks whole Ray trials"):
        run_study_ray(spec, _options(storage_url, data_dir, 2, lanes=2),
                      RayOptions(num_cpus=2, scheduler={"name": "asha"}))


def test_a_ray_pack_is_refilled_as_its_lanes_end(local_ray, storage_url, data_dir):
    """One pack at a time (max_concurrent 1) of 3 lanes, 8 trials of different epochs: the
    driver deals new trials into the running pack as lanes end, every trial runs once, in
    the pack it was dealt to, and none is lost."""
    from search.backends.ray_worker import REFILL_ATTR, REFILL_JOINED_ATTR

    spec = load_study_spec("mlp_width_depth").with_overrides(fixed={"train_fraction": 0.01})
    summary = run_study_ray(spec, _options(storage_url, data_dir, 8, lanes=3),
                            RayOptions(num_cpus=2, max_concurrent=1))
    trials = _trials(storage_url, "mlp_width_depth")
    assert len(trials) == 8 and summary.failed == 0
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    by_id = {t._trial_id: t for t in trials}
    # Dealt to a running pack by the driver, and started by that pack's worker.
    joined = [t for t in trials if REFILL_JOINED_ATTR in t.system_attrs]
    assert joined, "no pack was refilled"
    owner = "hpsearch:owner"
    for trial in joined:
        assert trial.system_attrs[REFILL_JOINED_ATTR] == trial.system_attrs[REFILL_ATTR]
        first = by_id[trial.system_attrs[REFILL_ATTR]]
        assert trial.system_attrs[owner] == first.system_attrs[owner]
    for t in trials:  # each ran once, to its end
        assert len(t.intermediate_values) == len(t.user_attrs["history"]["val_loss"])
