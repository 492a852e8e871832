"""Run one objective as one Optuna trial.

``TrialReporter`` adapts the objective's reporter calls to an Optuna trial: each step's metric
becomes an intermediate value (so pruners and the dashboard's learning curves see it),
``should_stop`` asks the pruner, and the per-step history, logs and artifacts are stored on the
trial. ``TrialRunner`` is the Optuna objective function: it turns the trial's parameters into
a config, runs the objective and records what came of it, whatever that was.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact

from objectives import get_objective
from objectives.config import config_to_dict
from objectives.errors import DivergedError, HPSearchError
from objectives.runtime import Runtime
from search.driver.seeds import SeedGroup
from search.records import interrupts
from search.records.provenance import provenance
from search.study.notes import trial_outcome, write_trial_note
from search.study.spec import ParamSpec, StudySpec

GRID_POINT_PARAM = "point"


class TrialReporter:
    """The objective's reporter for one Optuna trial."""

    def __init__(self, trial: optuna.Trial, metric: str, artifact_store: FileSystemArtifactStore):
        self.trial = trial
        self.metric = metric
        self.artifact_store = artifact_store
        self.history: dict[str, list[float]] = {}
        self.logs: dict[str, Any] = {}
        self.artifacts: dict[str, str] = {}
        self.stopped_early = False

    def report(self, step: int, metrics: Mapping[str, float]) -> None:
        interrupts.check()  # an interrupt swallowed mid-epoch stops the trial here
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))
        value = metrics.get(self.metric)
        if value is not None and math.isfinite(value):
            self.trial.report(float(value), step)

    def should_stop(self) -> bool:
        if self.trial.should_prune():
            self.stopped_early = True
        return self.stopped_early

    def log(self, key: str, value: Any) -> None:
        self.logs[key] = value

    def save_artifact(self, name: str, data: bytes) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.artifacts[name] = upload_artifact(
                artifact_store=self.artifact_store, file_path=str(path), study_or_trial=self.trial)

    def flush(self) -> None:
        """Store the history, logs and artifact ids on the trial."""
        self.trial.set_user_attr("history", self.history)
        self.trial.set_user_attr("artifacts", self.artifacts)
        for key, value in self.logs.items():
            self.trial.set_user_attr(key, value)


def suggest_values(trial: optuna.Trial, spec: StudySpec) -> dict[str, Any]:
    """The trial's searched values, suggested from the study's space or grid."""
    if spec.grid_points is not None:
        labels = [point_label(p) for p in spec.grid_points]
        label = trial.suggest_categorical(GRID_POINT_PARAM, labels)
        return dict(spec.grid_points[labels.index(label)])
    if spec.grid is not None:
        return {name: trial.suggest_categorical(name, list(values))
                for name, values in spec.grid.items()}
    return {param.name: _suggest(trial, param) for param in spec.space}


def point_label(point: Mapping[str, Any]) -> str:
    """``{"depth": 1, "width": 16}`` -> ``"depth=1,width=16"`` (a grid point's parameter value)."""
    return ",".join(f"{key}={value}" for key, value in point.items())


def grid_search_space(spec: StudySpec) -> dict[str, list[Any]]:
    """The search space for Optuna's GridSampler."""
    if spec.grid_points is not None:
        return {GRID_POINT_PARAM: [point_label(p) for p in spec.grid_points]}
    return {name: list(values) for name, values in (spec.grid or {}).items()}


def _suggest(trial: optuna.Trial, param: ParamSpec) -> Any:
    if param.type == "categorical":
        return trial.suggest_categorical(param.name, list(param.choices))
    if param.type == "int":
        return trial.suggest_int(param.name, int(param.low), int(param.high),
                                 step=int(param.step or 1), log=param.log)
    return trial.suggest_float(param.name, param.low, param.high, step=param.step, log=param.log)


class TrialRunner:
    """The Optuna objective function for a study: config in, recorded trial out.

    A diverged run ends as PRUNED with its reason; any other exception ends as FAIL with the
    error stored in the ``error`` attribute. An ``HPSearchError`` (bad input that every trial
    would hit) is re-raised so the run stops instead of failing trial after trial.
    """

    reporter_cls: type[TrialReporter] = TrialReporter  # the Ray backend reports to Tune too

    def __init__(self, spec: StudySpec, runtime: Runtime, artifact_dir: Path, run_id: str,
                 *, command: str = "", backend: str = "local"):
        self.spec = spec
        self.runtime = runtime
        self.objective = get_objective(spec.objective)
        self.artifact_store = FileSystemArtifactStore(str(artifact_dir))
        self.run_id = run_id
        self.command = command  # the run's command line and backend, in each trial's provenance
        self.backend = backend
        artifact_dir.mkdir(parents=True, exist_ok=True)

    def __call__(self, trial: optuna.Trial) -> float:
        config, reporter = self.begin(trial)
        start = time.perf_counter()
        group, runs = self.seed_runs(config, reporter)
        if group is None:
            try:
                metrics = self.objective.run(config, reporter, self.runtime)
            except BaseException as exc:
                return self.end(trial, reporter, start, error=exc)
            return self.end(trial, reporter, start, metrics=metrics)
        for index, (seed_config, seed_reporter) in enumerate(runs):  # one seed after another
            try:
                group.finish(index, self.objective.run(seed_config, seed_reporter, self.runtime))
            except KeyboardInterrupt as exc:
                return self.end(trial, reporter, start, error=exc)
            except BaseException as exc:
                group.finish(index, error=exc)
                break  # the trial ends with this seed's error
        metrics, error = group.outcome(self.spec.direction)
        return self.end(trial, reporter, start, metrics=metrics, error=error)

    def seed_runs(self, config: Any, reporter: TrialReporter
                  ) -> tuple[SeedGroup | None, list[tuple[Any, Any]]]:
        """The (config, reporter) of each seed the trial trains, and the group that gathers
        them (None for a one-seed study: the trial's own config and reporter)."""
        if self.spec.seeds == 1:
            return None, [(config, reporter)]
        base = config_to_dict(config)
        seeds = [config.seed + i for i in range(self.spec.seeds)]
        group = SeedGroup(reporter, seeds, self.spec.metric)
        configs = [self.objective.make_config({**base, "seed": seed}, source=f"seed {seed}")
                   for seed in seeds]
        return group, [(c, group.reporter(i)) for i, c in enumerate(configs)]

    def begin(self, trial: optuna.Trial) -> tuple[Any, TrialReporter]:
        """The trial's config (fixed settings and its parameters) and its reporter, with the
        config and provenance stored on the trial."""
        values = {**self.spec.fixed, **suggest_values(trial, self.spec)}
        config = self.objective.make_config(values, source=f"trial {trial.number}")
        trial.set_user_attr("run_id", self.run_id)
        trial.set_user_attr("config", config_to_dict(config))
        trial.set_user_attr("objective", self.objective.name)
        trial.set_user_attr("provenance", provenance(
            device=self.runtime.device, seed=getattr(config, "seed", None),
            data_folder=self.runtime.data_dir / self.objective.dataset,
            command=self.command, backend=self.backend))
        return config, self.reporter_cls(trial, self.spec.metric, self.artifact_store)

    def end(self, trial: optuna.Trial, reporter: TrialReporter, start: float,
            metrics: Mapping[str, float] | None = None, error: BaseException | None = None
            ) -> float:
        """Record how the objective ended (``metrics``, or the ``error`` it raised) and return
        the trial's value; raise ``TrialPruned`` for a pruned or diverged run, and the error
        (after storing it on the trial) for a failed one."""
        try:
            if isinstance(error, DivergedError):
                trial.set_user_attr("pruned_reason", f"diverged: {error}")
                raise optuna.TrialPruned(f"diverged: {error}") from None
            if isinstance(error, KeyboardInterrupt):
                trial.set_user_attr("error", "interrupted (Ctrl-C)")
                raise error
            if isinstance(error, Exception) and not isinstance(error, HPSearchError):
                trial.set_user_attr("error", f"{type(error).__name__}: {error}")
                trial.set_user_attr("traceback", "".join(traceback.format_exception(
                    type(error), error, error.__traceback__))[-4000:])
            if error is not None:
                raise error
        finally:
            trial.set_user_attr("duration_s", round(time.perf_counter() - start, 3))
            reporter.flush()
            if error is None or isinstance(error, Exception):  # not when interrupted
                self.write_note(trial, reporter, metrics, error)
        assert metrics is not None
        trial.set_user_attr("metrics", {k: float(v) for k, v in metrics.items()})
        value = metrics.get(self.spec.metric)
        if self.spec.aggregate == "lcb" and f"{self.spec.metric}_lcb" in metrics:
            value = metrics[f"{self.spec.metric}_lcb"]  # the pessimistic bound over seeds
        if value is None or not math.isfinite(float(value)):
            trial.set_user_attr("error", f"metric {self.spec.metric!r} is {value!r}")
            raise ValueError(f"objective returned {self.spec.metric}={value!r}; expected a "
                             "finite number")
        if reporter.stopped_early:
            trial.set_user_attr("pruned_reason", "stopped early by the pruner")
            steps = len(reporter.history.get(self.spec.metric, []))
            raise optuna.TrialPruned(f"pruned after {steps} step(s)")
        return float(value)

    def write_note(self, trial: optuna.Trial, reporter: TrialReporter,
                   metrics: Mapping[str, float] | None, error: BaseException | None) -> None:
        """The trial's dashboard note: its config, final metrics and previews. A storage
        error here is reported on stderr and never changes how the trial ends."""
        steps = len(reporter.history.get(self.spec.metric, []))
        outcome = trial_outcome(self.spec, metrics, error, reporter.stopped_early, steps)
        try:
            write_trial_note(trial, self.spec, reporter.artifacts, outcome, metrics)
        except Exception as exc:
            print(f"warning: trial {trial.number}: its dashboard note was not written "
                  f"({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)
