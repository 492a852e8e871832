"""Run a study's trials on Ray Tune (``python -m search.run --backend ray``).

The driver holds the study and its sampler: ``OptunaAskSearcher`` asks Optuna for each Tune
trial, the worker runs the local backend's ``TrialRunner`` on that trial in the same storage,
and ``CooperativeASHA`` (or no scheduler) decides which trials stop early. Results land in
the Optuna storage exactly as with local processes. Ray starts locally for the run, or
``address`` joins an existing cluster. The data set is loaded once in the driver and put in
Ray's object store; each worker process fetches it once and hands it to the objective's
loader. Only this module, ``ray_searcher`` and ``ray_worker`` import ray.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objectives.errors import ConfigError
from search.study.spec import StudySpec

ASHA_KEYS = ("grace_period", "reduction_factor", "max_t", "brackets")
SCHEDULERS = ("asha", "none")
# Tune's per-trial loggers (CSV, JSON, TensorBoard files) cost time and duplicate the storage.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no experiment table
# A trial that fails before its first step ends with a result without the metric.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Ctrl-C raises KeyboardInterrupt at once (Tune's own handler waits for trials to stop).
os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")


@dataclass(frozen=True)
class RayOptions:
    """Where and with what resources trials run on Ray, and how they are stopped early.

    ``scheduler`` overrides the study file's ``scheduler`` mapping: ``name`` (asha or none)
    and ASHA's ``grace_period``, ``reduction_factor``, ``max_t`` and ``brackets``.
    """

    address: str | None = None  # None: start a local Ray for the run
    num_cpus: int | None = None  # CPUs of the local Ray (default: all)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None  # None: as many as the resources allow
    scheduler: dict[str, Any] = field(default_factory=dict)


def scheduler_settings(spec: StudySpec, ray_options: RayOptions) -> dict[str, Any]:
    """The study file's ``scheduler`` mapping with the command line's values over it, checked."""
    settings = {"name": "asha", **spec.scheduler, **ray_options.scheduler}
    where = f"{spec.path or spec.name}: scheduler"
    if settings["name"] not in SCHEDULERS:
        raise ConfigError(f"{where}: unknown name {settings['name']!r}; use asha or none")
    unknown = sorted(set(settings) - {"name", *ASHA_KEYS})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed: name, "
                          f"{', '.join(ASHA_KEYS)}")
    for key in ("grace_period", "max_t", "brackets"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise ConfigError(f"{where}: {key!r} must be a positive integer, got {value!r}")
    rf = settings.get("reduction_factor")
    if rf is not None and (not isinstance(rf, (int, float)) or isinstance(rf, bool) or rf <= 1):
        raise ConfigError(f"{where}: 'reduction_factor' must be a number > 1, got {rf!r}")
    return settings


def check_ray_options(ray_options: RayOptions) -> None:
    """Reject resource settings Ray would only fail on later."""
    if ray_options.cpus_per_trial < 0 or ray_options.gpus_per_trial < 0:
        raise ConfigError("--cpus-per-trial and --gpus-per-trial must be >= 0, got "
                          f"{ray_options.cpus_per_trial} and {ray_options.gpus_per_trial}")
    if ray_options.gpus_per_trial > 1 and ray_options.gpus_per_trial != int(
            ray_options.gpus_per_trial):
        raise ConfigError(f"--gpus-per-trial above 1 must be whole, got "
                          f"{ray_options.gpus_per_trial}; use a fraction to share one GPU")
    if ray_options.max_concurrent is not None and ray_options.max_concurrent < 1:
        raise ConfigError(f"--max-concurrent must be at least 1, got "
                          f"{ray_options.max_concurrent}")
    if ray_options.num_cpus is not None and ray_options.num_cpus < 1:
        raise ConfigError(f"--ray-cpus must be at least 1, got {ray_options.num_cpus}")


def check_ray_run(spec: StudySpec, options: Any, ray_options: RayOptions
                  ) -> tuple[dict[str, Any], str, int]:
    """Refuse a Ray run that could only fail later (bad resources, scheduler, device, lanes
    with ASHA, no Ray installed); return the scheduler settings, the workers' device and the
    Optuna trials per Ray trial. The CLI calls it before it prints anything."""
    from search.driver.runner import check_run_options, resolve_lanes

    check_run_options(options)
    check_ray_options(ray_options)
    settings = scheduler_settings(spec, ray_options)
    device = _worker_device(options.device, ray_options.gpus_per_trial)
    # On Ray, lanes are asked for: a Ray trial then trains a pack of that many Optuna trials,
    # and the study's pruner decides per lane (ASHA ranks whole Ray trials).
    lanes = resolve_lanes(spec, options.lanes, device) if options.lanes else 1
    if lanes > 1 and ray_options.scheduler.get("name") == "asha":
        raise ConfigError("--scheduler asha ranks whole Ray trials, but with --lanes a Ray "
                          "trial is a pack of trials; drop --scheduler (the study's pruner "
                          "then decides per lane) or use --lanes 1")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("--backend ray needs Ray Tune; install it with "
                          "pip install -e '.[ray]'") from None
    return settings, device, lanes


def run_study_ray(spec: StudySpec, options: Any, ray_options: RayOptions) -> Any:
    """Create or resume ``spec``'s study and add ``options.n_trials`` trials on Ray Tune.

    ``options`` is the local backend's ``RunOptions`` (``jobs`` is ignored: Ray's resources
    decide the concurrency); returns its ``RunSummary``.
    """
    import ray

    from search.driver.runner import (
        _summarise,
        create_or_load_study,
        fail_running_trials,
        make_dealer,
        report_stale,
    )
    from search.driver.work import Progress
    from search.records.provenance import record_run
    from search.records.storage import artifact_dir_for
    from search.run import absolute_storage_url

    settings, device, lanes = check_ray_run(spec, options, ray_options)
    # Each Ray trial runs in a working folder of its own: a relative SQLite or journal path
    # would open a new, empty file there.
    options = dataclasses.replace(options, storage_url=absolute_storage_url(options.storage_url))
    study_name = options.study_name or spec.name
    artifact_dir = Path(options.artifact_dir or artifact_dir_for(options.storage_url)).resolve()
    study = create_or_load_study(spec, study_name, options)
    run_id = uuid.uuid4().hex[:12]
    dealer = make_dealer(spec, study_name, options, run_id)
    stale = report_stale(dealer)
    n_trials = options.n_trials
    if spec.is_grid:
        n_trials = min(n_trials, dealer.missing_points())

    start = time.perf_counter()
    progress = Progress(n_trials, spec.direction, enabled=options.progress and n_trials > 0)
    stopped_by = "trials" if n_trials else "grid"
    connected = False
    tune_dir = Path(tempfile.mkdtemp(prefix="hpsearch-tune-"))
    try:
        if n_trials:
            connected = _init_ray(ray, ray_options)
            stopped_by = _fit(spec, options, ray_options, settings, dealer, study_name, run_id,
                              n_trials, device, lanes, artifact_dir, tune_dir, progress)
    except KeyboardInterrupt:
        stopped_by = "interrupt"
    finally:
        progress.close()
        if connected:
            ray.shutdown()  # ends this run's workers, so none writes after the sweep below
        fail_running_trials(study, run_id)
        shutil.rmtree(tune_dir, ignore_errors=True)
    record_run(study, spec, options, run_id, backend="ray")
    return _summarise(study, run_id, artifact_dir, options.storage_url,
                      time.perf_counter() - start, stopped_by, stale + dealer.failed_stale,
                      grid_was_complete=spec.is_grid and n_trials == 0)


def _worker_device(device: str, gpus_per_trial: float) -> str:
    if device == "auto":
        return "cuda" if gpus_per_trial > 0 else "cpu"
    if device.startswith("cuda") and gpus_per_trial <= 0:
        raise ConfigError(f"--device {device} with --backend ray needs --gpus-per-trial > 0 "
                          "(Ray hides the GPUs from trials that did not ask for one)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device


def _init_ray(ray: Any, ray_options: RayOptions) -> bool:
    """Connect to the cluster, or start a local Ray; True when this call did either."""
    if ray.is_initialized():
        return False
    logging.getLogger("ray").setLevel(logging.WARNING)
    if ray_options.address:
        import objectives
        import search

        # Ship this project's packages so cluster nodes need only the dependencies.
        modules = [str(Path(m.__file__).parent) for m in (objectives, search)]
        ray.init(address=ray_options.address, runtime_env={"py_modules": modules},
                 logging_level=logging.WARNING)
        return True
    ray.init(num_cpus=ray_options.num_cpus, include_dashboard=False,
             logging_level=logging.WARNING, configure_logging=True)
    return True


def _fit(spec: StudySpec, options: Any, ray_options: RayOptions, settings: dict[str, Any],
         dealer: Any, study_name: str, run_id: str, n_trials: int, device: str, lanes: int,
         artifact_dir: Path, tune_dir: Path, progress: Any) -> str:
    import optuna
    import ray
    from ray import tune

    from search.backends.ray_searcher import CooperativeASHA, OptunaAskSearcher
    from search.backends.ray_worker import WorkerSetup, run_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = dealer.study
    use_asha = settings["name"] == "asha" and lanes == 1
    setup = WorkerSetup(
        spec=spec, study_name=study_name, storage_url=options.storage_url,
        artifact_dir=artifact_dir, data_dir=Path(options.data_dir).resolve(), device=device,
        threads=options.threads or max(1, int(ray_options.cpus_per_trial)),
        cache_dir=Path(options.cache_dir).resolve(), run_id=run_id,
        use_study_pruner=not use_asha, lanes=lanes, command=options.command)
    data = _put_data(ray, spec, setup.data_dir)

    def on_done(number: int, state: str, value: float | None, note: str) -> None:
        progress.handle(("trial", {"number": number, "state": state, "value": value,
                                   "note": note}))

    searcher = OptunaAskSearcher(dealer, spec, n_trials, on_done, lanes=lanes,
                                 deadline=time.time() + options.timeout if options.timeout
                                 else None)
    scheduler = None
    if use_asha:
        asha = {k: settings[k] for k in ASHA_KEYS if k in settings}
        asha.setdefault("max_t", _default_max_t(spec))
        scheduler = CooperativeASHA(study._storage, time_attr="training_iteration", **asha)
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, setup=setup, data=data),
        {"cpu": ray_options.cpus_per_trial, "gpu": ray_options.gpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=searcher.mode, search_alg=searcher, scheduler=scheduler,
            num_samples=n_trials, max_concurrent_trials=ray_options.max_concurrent,
            reuse_actors=True),
        run_config=tune.RunConfig(name=f"{study_name}-{run_id}", storage_path=str(tune_dir),
                                  verbose=0, log_to_file=False))
    # Without the per-trial logger files, the result grid warns once per trial; we keep
    # nothing from it (the Optuna storage holds the results).
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    tuner.fit()
    if searcher.error is not None:
        progress.error = searcher.error
        return f"error: {searcher.error}"
    if searcher.timed_out:
        return "timeout"
    if spec.is_grid and searcher.asked < n_trials:
        return "grid"
    return "trials"


def _put_data(ray: Any, spec: StudySpec, data_dir: Path) -> list[Any]:
    """The objective's data set in the object store (as a one-ref list), or [] when the
    objective's loader has no preload hook (its workers read the files themselves)."""
    from objectives import get_objective

    if get_objective(spec.objective).dataset != "euro":
        return []
    from objectives.euro_data import load_euro

    return [ray.put(load_euro(data_dir))]


def _default_max_t(spec: StudySpec) -> int:
    """ASHA's largest budget: the study's fixed ``epochs`` (or ``steps``), else 100."""
    for key in ("epochs", "steps"):
        value = spec.fixed.get(key)
        if isinstance(value, int) and value >= 1:
            return value
    return 100

