"""The trials table: ``search.export --format csv|parquet`` writes one row per trial."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from small_study import STUDY, make_small_study

from objectives.errors import ConfigError
from search.export import export_table, main

REPO = Path(__file__).resolve().parent.parent
FIRST_COLUMNS = ["number", "state", "value", "duration", "datetime_start", "datetime_complete"]


@pytest.fixture(scope="module")
def study_storage(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The small real mlp_demo study (3 complete trials) plus one trial that failed."""
    url = f"sqlite:///{tmp_path_factory.mktemp('table') / 'studies.db'}"
    make_small_study(data_dir, url)
    study = optuna.load_study(study_name=STUDY, storage=url)
    trial = study.ask()
    trial.set_user_attr("error", "ValueError: broken on purpose")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return url


def _trials(url: str, name: str = STUDY) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def test_csv_has_one_row_per_trial_with_the_storages_values(study_storage: str,
                                                           tmp_path: Path) -> None:
    path, _ = export_table(STUDY, study_storage, "csv", tmp_path / "trials.csv")
    table = pd.read_csv(path)
    trials = _trials(study_storage)
    assert list(table["number"]) == [t.number for t in trials] and len(trials) == 4

    complete = trials[0]
    params = [f"params_{k}" for k in sorted(complete.params)]
    config = [f"config_{k}" for k in complete.user_attrs["config"]]
    metrics = [f"metrics_{k}" for k in complete.user_attrs["metrics"]]
    assert list(table.columns[:len(FIRST_COLUMNS)]) == FIRST_COLUMNS
    assert set(params + config + metrics + ["user_attrs_error", "user_attrs_run_id"]) <= set(
        table.columns)
    assert not {"seeds", "n_seeds", "user_attrs_history", "user_attrs_config",
                "user_attrs_provenance"} & set(table.columns)  # no seeds here; no huge cells

    for trial, row in zip(trials, table.to_dict("records"), strict=True):
        assert row["state"] == trial.state.name
        assert row["duration"] == pytest.approx(
            (trial.datetime_complete - trial.datetime_start).total_seconds(), abs=1e-6)
        if trial.state != optuna.trial.TrialState.COMPLETE:
            assert math.isnan(row["value"])
            assert row["user_attrs_error"] == "ValueError: broken on purpose"
            continue
        assert row["value"] == trial.value  # CSV floats round-trip exactly
        for key, value in trial.params.items():
            assert row[f"params_{key}"] == value
        for key, value in trial.user_attrs["config"].items():
            assert row[f"config_{key}"] == (json.dumps(value) if isinstance(value, list)
                                            else value), key
        for key, value in trial.user_attrs["metrics"].items():
            assert row[f"metrics_{key}"] == value
        assert row["config_epochs"] == 2  # the study's fixed values (with its --set)
        ledger = trial.user_attrs["compute"]  # the compute ledger, as columns
        assert row["compute_flops"] == ledger["flops"]
        assert row["compute_train_seconds"] == ledger["train_seconds"]
        assert row["user_attrs_run_id"] == trial.user_attrs["run_id"]


def test_parquet_is_written_and_reads_back_as_the_same_table(study_storage: str,
                                                             tmp_path: Path) -> None:
    path, table = export_table(STUDY, study_storage, "parquet", tmp_path)
    assert path == tmp_path / f"{STUDY}-trials.parquet"  # a folder gets the default name
    back = pd.read_parquet(path)
    assert list(back.columns) == list(table.columns) and len(back) == 4
    assert _cells(back) == _cells(table)
    assert pd.api.types.is_integer_dtype(back["number"])  # typed columns, not text
    assert pd.api.types.is_float_dtype(back["value"])
    assert pd.api.types.is_datetime64_any_dtype(back["datetime_start"])
    csv = pd.read_csv(export_table(STUDY, study_storage, "csv", tmp_path / "t.csv")[0])
    assert list(csv["value"].fillna(-1)) == list(back["value"].fillna(-1))


def _cells(frame: pd.DataFrame) -> list[list[Any]]:
    """The table's values, every missing one (None, NaN, NaT) as None."""
    return [[None if pd.isna(v) else v for v in row] for row in frame.itertuples(index=False)]


def test_parquet_without_pyarrow_is_one_clear_line(study_storage: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="--format parquet needs pyarrow; run pip install"):
        export_table(STUDY, study_storage, "parquet", tmp_path / "t.parquet")


def _seeded_trial(value: float, seeds: list[int] | None, per_seed: list[Any] | None
                  ) -> optuna.trial.FrozenTrial:
    attrs: dict[str, Any] = {"config": {"depth": 2, "width": 8, "seed": 0},
                             "metrics": {"val_accuracy": value}}
    if seeds is not None:
        attrs["seeds"] = seeds
    if per_seed is not None:
        attrs["seed_metrics"] = per_seed
    return optuna.trial.create_trial(
        params={"lr": 0.01}, distributions={"lr": optuna.distributions.FloatDistribution(
            1e-3, 1e-1, log=True)}, value=value, user_attrs=attrs)


def test_seed_columns_come_from_the_trials_per_seed_records(tmp_path: Path) -> None:
    # The runner's records for trials over seeds: user attrs ``seeds`` (ints) and
    # ``seed_metrics`` (one metrics dict per seed, with its seed), as search/driver/seeds.py writes.
    url = f"sqlite:///{tmp_path / 'seeds.db'}"
    study = optuna.create_study(study_name="seeded", storage=url, direction="maximize")
    study.set_user_attr("metric", "val_accuracy")
    three = [{"seed": s, "val_accuracy": v, "val_loss": 1.0} for s, v in
             ((0, 0.70), (1, 0.74), (2, 0.69))]
    study.add_trial(_seeded_trial(0.71, [0, 1, 2], three))
    study.add_trial(_seeded_trial(0.60, [5], [{"seed": 5, "val_accuracy": 0.60}]))
    study.add_trial(_seeded_trial(0.50, None, None))  # a trial from before seeds: tolerated
    study.add_trial(_seeded_trial(0.40, [0, 1], [{"seed": 0}, "junk"]))  # no metric in them

    table = pd.read_csv(export_table("seeded", url, "csv", tmp_path / "s.csv")[0])
    rows = table.to_dict("records")
    assert [json.loads(s) if isinstance(s, str) else None for s in table["seeds"]] == [
        [0, 1, 2], [5], None, [0, 1]]
    values = [0.70, 0.74, 0.69]
    assert rows[0]["n_seeds"] == 3
    assert rows[0]["val_accuracy_seed_mean"] == pytest.approx(statistics.fmean(values))
    assert rows[0]["val_accuracy_seed_sd"] == pytest.approx(statistics.stdev(values))
    assert rows[1]["val_accuracy_seed_mean"] == 0.60
    assert math.isnan(rows[1]["val_accuracy_seed_sd"])  # no spread from one seed
    assert math.isnan(rows[2]["n_seeds"]) and math.isnan(rows[2]["val_accuracy_seed_mean"])
    assert rows[3]["n_seeds"] == 0 and math.isnan(rows[3]["val_accuracy_seed_mean"])
    assert list(table.columns).index("seeds") > list(table.columns).index("metrics_val_accuracy")


def _export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.export", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_the_table_and_says_what_it_holds(study_storage: str,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "deep" / "trials.csv"
    done = _export_cli("--study", STUDY, "--storage", study_storage, "--format", "csv",
                       "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("4 trial(s) (3 complete, 1 fail), ")
    assert done.stdout.strip().endswith(f"-> {out}") and len(pd.read_csv(out)) == 4


def test_cli_refuses_top_with_a_table_and_an_unknown_format(study_storage: str,
                                                            tmp_path: Path,
                                                            capsys: pytest.CaptureFixture
                                                            ) -> None:
    args = ["--study", STUDY, "--storage", study_storage, "--out", str(tmp_path / "t.csv")]
    assert main([*args, "--format", "csv", "--top", "3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --top picks the best configs of --format yaml") and (
        "\n" not in err)
    assert not (tmp_path / "t.csv").exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and exit 2
        main([*args, "--format", "xlsx"])
    assert exit_info.value.code == 2


def test_a_study_without_trials_is_a_clear_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(study_name="empty", storage=url)
    with pytest.raises(ConfigError, match="study 'empty' has no trials; run some"):
        export_table("empty", url, "csv", tmp_path / "t.csv")


def test_parquet_takes_a_categorical_parameter_of_mixed_types(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mixed.db'}"
    study = optuna.create_study(study_name="mixed", storage=url)
    choices = optuna.distributions.CategoricalDistribution((8, "auto", None))
    for value, choice in ((0.1, 8), (0.2, "auto"), (0.3, None)):
        study.add_trial(optuna.trial.create_trial(params={"width": choice},
                                                  distributions={"width": choices}, value=value))
    path, _ = export_table("mixed", url, "parquet", tmp_path / "m.parquet")
    assert pd.read_parquet(path)["params_width"].tolist()[:2] == ["8", "auto"]  # as text


def test_a_real_study_over_seeds_fills_the_seed_columns(data_dir: Path, tmp_path: Path) -> None:
    from search.driver.runner import RunOptions, run_study
    from search.study.spec import load_study_spec

    url = f"sqlite:///{tmp_path / 'seeds.db'}"
    spec = load_study_spec(STUDY).with_overrides(fixed={"epochs": 1, "train_fraction": 0.02},
                                                 seeds=2)
    run_study(spec, RunOptions(n_trials=2, data_dir=data_dir, storage_url=url, device="cpu",
                               seed=1, progress=False))
    table = pd.read_csv(export_table(STUDY, url, "csv", tmp_path / "t.csv")[0])
    for trial, row in zip(_trials(url), table.to_dict("records"), strict=True):
        assert json.loads(row["seeds"]) == trial.user_attrs["seeds"] == [0, 1]
        values = [m["val_accuracy"] for m in trial.user_attrs["seed_metrics"]]
        assert row["n_seeds"] == 2
        assert row["val_accuracy_seed_mean"] == pytest.approx(statistics.fmean(values))
        assert row["val_accuracy_seed_sd"] == pytest.approx(statistics.stdev(values))
        assert row["value"] == trial.value == pytest.approx(row["val_accuracy_seed_mean"])
