"""Lanes: many MLP configs trained at once, each exactly as it would train alone."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState

from objectives.euro_data import load_euro
from objectives.mlp import MLP, Config, fit
from objectives.mlp_lanes import LaneEnd, LaneTask, _Lane, _Pack, pack_key, train_lanes
from objectives.reporter import RecordingReporter
from objectives.runtime import Runtime
from search.records.liveness import OWNER_ATTR
from search.records.storage import open_storage
from tests.cli_helpers import REPO, run_cli
from tests.reporters import StopAfter

QUICK = {"train_fraction": 0.05}
PACKS = {
    "plain": [Config(seed=1, **QUICK), Config(seed=2, lr=0.01, weight_decay=0.01, **QUICK)],
    "batchnorm": [Config(seed=1, batch_norm=True, **QUICK),
                  Config(seed=2, batch_norm=True, depth=3, width=8, **QUICK)],
    # BatchNorm is per lane: lanes with and without it share one pack.
    "batchnorm_mixed": [Config(seed=1, batch_norm=True, **QUICK),
                        Config(seed=13, depth=3, **QUICK),
                        Config(seed=14, batch_norm=True, depth=3, width=8, residual=True,
                               **QUICK)],
    "residual": [Config(seed=3, residual=True, depth=4, **QUICK),
                 Config(seed=4, residual=False, depth=4, **QUICK)],
    "implicit": [Config(seed=5, features="implicit", **QUICK),
                 Config(seed=6, features="implicit", depth=2, width=12, **QUICK)],
    "mixed": [Config(seed=7, depth=1, width=16, **QUICK), Config(seed=8, depth=10, width=16,
                                                                 **QUICK),
              Config(seed=9, depth=6, width=8, **QUICK),
              # SGD at lr 0.05 with momentum 0.9 is chaotic here: a 1e-6 change of the initial
              # weights moves the single path's accuracy by 9 points in two epochs.
              Config(seed=10, depth=6, width=64, optimizer="sgd", lr=0.005, **QUICK),
              Config(seed=11, depth=2, width=32, optimizer="sgd", lr=0.05, momentum=0.0,
                     **QUICK)],
}


@pytest.fixture(scope="module")
def runtime(data_dir) -> Runtime:
    torch.set_num_threads(1)
    return Runtime(data_dir=data_dir)


def _train(configs: list[Config], runtime: Runtime, **kwargs) -> tuple[list[RecordingReporter],
                                                                       list[LaneEnd]]:
    reporters = [RecordingReporter() for _ in configs]
    ends: list[LaneEnd] = []
    train_lanes([LaneTask(c, r) for c, r in zip(configs, reporters, strict=True)], runtime,
                ends.append, **kwargs)
    order = {id(r): i for i, r in enumerate(reporters)}
    return reporters, sorted(ends, key=lambda e: order[id(e.task.reporter)])


def _batch_losses(reporter: RecordingReporter) -> np.ndarray:
    return np.load(io.BytesIO(reporter.artifacts["batch_losses.npy"]))


@pytest.mark.parametrize("kind", list(PACKS))
def test_lanes_start_from_the_single_trial_weights(kind, runtime, data_dir):
    data = load_euro(data_dir)
    packs: dict[tuple, _Pack] = {}
    for config in PACKS[kind]:
        lane = _Lane(LaneTask(config, RecordingReporter()), data, torch.device("cpu"))
        key = pack_key(config, lane.in_features)
        packs.setdefault(key, _Pack(key, data, runtime)).add(lane)
    assert sum(len(pack.lanes) for pack in packs.values()) == len(PACKS[kind])
    if kind == "batchnorm_mixed":
        assert len(packs) == 1  # one batched model for the lanes with and without BatchNorm
    for pack in packs.values():
        assert pack.state is not None
        for i, lane in enumerate(pack.lanes):
            torch.manual_seed(lane.config.seed)
            single = MLP(lane.in_features, lane.config)
            extracted = pack.state.extract(i, _Lane(lane.task, data, torch.device("cpu")))
            for (name, a), b in zip(single.state_dict().items(),
                                    extracted.state_dict().values(), strict=True):
                assert torch.equal(a, b), name


@pytest.mark.parametrize("kind", list(PACKS))
def test_lanes_train_as_single_trials_do(kind, runtime):
    configs = [Config(**{**c.__dict__, "epochs": 10}) for c in PACKS[kind]]
    reporters, ends = _train(configs, runtime)
    for config, reporter, end in zip(configs, reporters, ends, strict=True):
        alone = RecordingReporter()
        _, metrics = fit(config, alone, runtime)
        assert end.error is None, end.error
        first_epoch = len(alone.history["iterations"]) and int(alone.history["iterations"][0])
        lane_losses, single_losses = _batch_losses(reporter), _batch_losses(alone)
        assert lane_losses.shape == single_losses.shape
        np.testing.assert_allclose(lane_losses[:first_epoch], single_losses[:first_epoch],
                                   rtol=1e-4)
        assert abs(end.metrics["val_accuracy"] - metrics["val_accuracy"]) <= 0.01
        assert abs(end.metrics["test_accuracy"] - metrics["test_accuracy"]) <= 0.01
        assert sorted(reporter.history) == sorted(alone.history)
        assert sorted(reporter.artifacts) == sorted(alone.artifacts)
        assert len(reporter.history["val_accuracy"]) == 10


def test_lanes_leave_when_done_stopped_or_diverged(runtime):
    configs = [Config(seed=1, epochs=1, **QUICK), Config(seed=2, epochs=4, **QUICK),
               Config(seed=3, epochs=4, optimizer="sgd", momentum=0.0, lr=1e6, **QUICK),
               Config(seed=4, epochs=4, **QUICK)]
    reporters = [RecordingReporter(), RecordingReporter(), RecordingReporter(), StopAfter(2)]
    ends: list[LaneEnd] = []
    train_lanes([LaneTask(c, r) for c, r in zip(configs, reporters, strict=True)], runtime,
                ends.append)
    by_seed = {end.task.config.seed: end for end in ends}
    assert [len(r.history.get("val_loss", [])) for r in reporters] == [1, 4, 0, 2]
    assert by_seed[3].error is not None and "loss became" in str(by_seed[3].error)
    assert all(by_seed[s].error is None for s in (1, 2, 4))
    # The lanes beside the diverged one train exactly as alone.
    alone = RecordingReporter()
    fit(configs[1], alone, runtime)
    np.testing.assert_allclose(_batch_losses(reporters[1]), _batch_losses(alone), rtol=1e-4)


def test_refill_adds_lanes_at_epoch_boundaries(runtime):
    queue = [Config(seed=s, epochs=2, **QUICK) for s in range(5)]
    started: list[int] = []

    def refill(free: int) -> list[LaneTask]:
        new = [LaneTask(queue.pop(0), RecordingReporter()) for _ in range(min(free,
                                                                               len(queue)))]
        started.append(len(new))
        return new

    first = [LaneTask(Config(seed=9, epochs=1, **QUICK), RecordingReporter()),
             LaneTask(Config(seed=10, epochs=3, **QUICK), RecordingReporter())]
    ends: list[LaneEnd] = []
    train_lanes(first, runtime, ends.append, capacity=2, refill=refill)
    assert len(ends) == 7 and all(e.error is None for e in ends)
    assert not queue and started[0] == 1  # one slot freed after the first epoch


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).trials


def test_lanes_record_what_single_trials_record(data_dir, tmp_path):
    args = ["--study", "mlp_demo", "--trials", "5", "--seed", "3", "--data-dir", str(data_dir),
            "--set", "epochs=3", "--set", "train_fraction=0.02", "--no-progress"]
    single = f"sqlite:///{tmp_path / 'single.db'}"
    laned = f"sqlite:///{tmp_path / 'lanes.db'}"
    assert run_cli(*args, "--lanes", "1", "--storage", single).returncode == 0
    result = run_cli(*args, "--lanes", "3", "--storage", laned)
    assert result.returncode == 0, result.stderr
    assert "x 3 lanes" in result.stdout
    a, b = _trials(single, "mlp_demo"), _trials(laned, "mlp_demo")
    assert len(b) == 5 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in b)
    assert {frozenset(t.user_attrs) for t in a} == {frozenset(t.user_attrs) for t in b}
    for trial in b:
        assert len(trial.intermediate_values) == len(trial.user_attrs["history"]["val_loss"])
        for artifact in trial.user_attrs["artifacts"].values():
            assert (tmp_path / "lanes-artifacts" / artifact).is_file()
    # TPE draws the same first configs; the same config trains through the same first epoch
    # (per-batch losses; later epochs may drift apart). BatchNorm configs are left out here:
    # a unit that is dead for a batch has variance ~0, and BatchNorm multiplies its rounding
    # noise by 1/sqrt(eps) in either path (the BatchNorm lanes test uses a stable config).
    same = [(x, y) for x, y in zip(a, b, strict=True)
            if x.params == y.params and not x.params.get("batch_norm")]
    assert same
    for x, y in same:
        steps = int(x.user_attrs["history"]["iterations"][0])
        losses = [np.load(tmp_path / f"{name}-artifacts" / t.user_attrs["artifacts"][
            "batch_losses.npy"])[:steps] for name, t in (("single", x), ("lanes", y))]
        # rtol 1e-3: the high learning rates TPE draws here amplify rounding from step to
        # step (the fixed configs above hold 1e-4).
        np.testing.assert_allclose(losses[1], losses[0], rtol=1e-3)


def test_lanes_with_jobs_run_each_grid_point_once_and_prune_per_lane(data_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    result = run_cli("--study", "mlp_grid", "--jobs", "2", "--lanes", "4", "--storage", url,
                     "--data-dir", str(data_dir), "--set", "epochs=2", "--set",
                     "train_fraction=0.02", "--no-progress")
    assert result.returncode == 0, result.stderr
    trials = _trials(url, "mlp_grid")
    assert sorted(t.params["point"] for t in trials) == sorted(
        {t.params["point"] for t in trials}) and len(trials) == 7
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.system_attrs[OWNER_ATTR]["pid"] for t in trials}) == 2  # a pack per worker

    search = f"sqlite:///{tmp_path / 'search.db'}"
    result = run_cli("--study", "mlp_width_depth", "--trials", "12", "--lanes", "6",
                     "--storage", search, "--data-dir", str(data_dir), "--seed", "0",
                     "--set", "train_fraction=0.02", "--no-progress")
    assert result.returncode == 0, result.stderr
    trials = _trials(search, "mlp_width_depth")
    assert len(trials) == 12
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)


def test_a_killed_pack_fails_its_trials_and_the_grid_reruns_them(data_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    args = ["--study", "mlp_grid", "--lanes", "7", "--storage", url, "--data-dir",
            str(data_dir), "--set", "epochs=200", "--set", "train_fraction=0.02", "--no-progress"]
    process = subprocess.Popen([sys.executable, "-m", "search.run", *args, "--jobs", "2"],
                               cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                running = [t for t in _trials(url, "mlp_grid") if t.state == TrialState.RUNNING
                           and "config" in t.user_attrs]
            except KeyError:
                running = []
            if len(running) >= 7:
                break
            time.sleep(0.3)
        victim = running[0].system_attrs[OWNER_ATTR]["pid"]
        lost = {t.number for t in running if t.system_attrs[OWNER_ATTR]["pid"] == victim}
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    trials = _trials(url, "mlp_grid")
    assert {t.number for t in trials if t.state == TrialState.FAIL} == lost
    assert all("worker died" in trials[n].user_attrs["error"] for n in lost)
    rerun = run_cli(*args, "--jobs", "1", timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    done = [t for t in _trials(url, "mlp_grid") if t.state == TrialState.COMPLETE]
    assert len(done) == 7 and len({t.params["point"] for t in done}) == 7


def test_retrain_seeds_train_as_lanes(data_dir, tmp_path):
    import json

    from search.retrain import main as retrain_main
    from tests.test_retrain_robustness import exported_document, retrain_args, write

    path = write(tmp_path / "ok.yaml", exported_document(epochs=3, train_fraction=0.05,
                                                         seed=0))
    runs = {}
    for flag in ("--lanes", "--no-lanes"):
        out = tmp_path / flag.strip("-")
        assert retrain_main(retrain_args(path, data_dir, out, "--seeds", "3", flag)) == 0
        (run_dir,) = out.iterdir()
        runs[flag] = run_dir
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["seeds"] == [0, 1, 2] and not summary["failed"]
    for seed in (0, 1, 2):
        laned, alone = (np.load(runs[flag] / f"seed{seed}" / "batch_losses.npy")
                        for flag in ("--lanes", "--no-lanes"))
        np.testing.assert_allclose(laned, alone, rtol=1e-3)
        assert (runs["--lanes"] / f"seed{seed}" / "model.safetensors").is_file()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigterm_ends_every_lane_as_fail_and_the_next_run_resumes(data_dir, tmp_path, jobs):
    url = f"sqlite:///{tmp_path / 'grid.db'}"
    args = ["--study", "mlp_grid", "--lanes", "4", "--storage", url, "--data-dir",
            str(data_dir), "--set", "epochs=150", "--set", "train_fraction=0.02",
            "--no-progress", "--jobs", jobs]  # packs of ~10 s: long enough to stop, short to redo
    process = subprocess.Popen([sys.executable, "-m", "search.run", *args], cwd=REPO,
                               start_new_session=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                trials = _trials(url, "mlp_grid")
            except KeyError:
                trials = []
            if sum("history" not in t.user_attrs and "config" in t.user_attrs
                   for t in trials) >= 4:
                break
            time.sleep(0.3)
        time.sleep(1.0)
        os.kill(process.pid, signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, f"stdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}"
    trials = _trials(url, "mlp_grid")
    assert trials and all(t.state == TrialState.FAIL and "interrupted" in t.user_attrs["error"]
                          for t in trials), [(t.state, t.user_attrs.get("error"))
                                             for t in trials]
    resumed = run_cli(*args,
                      "--trials", str(len(trials)), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    done = {t.params["point"] for t in _trials(url, "mlp_grid") if t.state == TrialState.COMPLETE}
    assert done == {t.params["point"] for t in trials}  # the interrupted points run first


def test_train_metrics_are_running_means_over_the_epoch_in_both_paths(runtime):
    config = Config(epochs=2, **QUICK)
    alone = RecordingReporter()
    fit(config, alone, runtime)
    (laned,), _ = _train([config], runtime)
    for reporter in (alone, laned):
        per_epoch = _batch_losses(reporter).reshape(2, -1).mean(1)
        assert reporter.history["train_loss"] == pytest.approx(per_epoch.tolist(), rel=1e-6)
        assert 0 < reporter.history["train_accuracy"][-1] < 1
        assert "train_eval_loss" not in reporter.history  # no extra pass unless asked
    both = _train([Config(epochs=1, train_eval=True, **QUICK)], runtime)[0][0]
    alone = RecordingReporter()
    fit(Config(epochs=1, train_eval=True, **QUICK), alone, runtime)
    assert both.history["train_eval_loss"] == pytest.approx(alone.history["train_eval_loss"],
                                                            rel=1e-4)
