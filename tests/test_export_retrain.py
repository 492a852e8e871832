"""Export a small real study's best trials, retrain them, and check the bad inputs."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from small_study import STUDY, make_small_study

from objectives import get_objective
from objectives.config import config_to_dict
from objectives.errors import ConfigError
from objectives.euro_data import load_euro, make_features
from search.export import export_study, load_exported
from search.records.weights import save_weights
from search.retrain import RetrainOptions, retrain
from search.retrain import main as retrain_main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def study_storage(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('export') / 'studies.db'}"
    make_small_study(data_dir, url)
    return url


def test_export_top_k_writes_the_best_trials_in_order(study_storage: str, tmp_path: Path) -> None:
    paths = export_study(STUDY, study_storage, top=2, out=tmp_path)
    documents = [yaml.safe_load(p.read_text()) for p in paths]
    study = optuna.load_study(study_name=STUDY, storage=study_storage)
    assert documents[0]["trial"] == study.best_trial.number
    assert documents[0]["metric"]["value"] >= documents[1]["metric"]["value"]
    for document in documents:
        assert document["objective"] == "mlp" and document["study"] == STUDY
        assert document["config"]["epochs"] == 2  # the fixed settings with the --set override
        for key, value in document["params"].items():
            assert document["config"][key] == value  # the searched values merged in
        provenance = document["provenance"]
        assert provenance["storage"] == study_storage
        assert provenance["data_fingerprint"].startswith("sha256:")
        assert provenance["versions"]["optuna"] == optuna.__version__


def test_exported_yaml_round_trips(study_storage: str, tmp_path: Path) -> None:
    (path,) = export_study(STUDY, study_storage, top=1, out=tmp_path)
    document = yaml.safe_load(path.read_text())
    config = get_objective(document["objective"]).make_config(document["config"])
    assert config_to_dict(config) == document["config"]
    assert load_exported(path).config == config


def test_retrain_reproduces_the_trial_and_saves_loadable_weights(
        study_storage: str, data_dir: Path, tmp_path: Path) -> None:
    (path,) = export_study(STUDY, study_storage, top=1, out=tmp_path)
    exported = load_exported(path)
    run_dir, summary = retrain(exported, RetrainOptions(data_dir=data_dir, out=tmp_path / "runs",
                                                        device="cpu", progress=False))
    reproduction = summary["reproduction"]
    assert reproduction["metric"] == "val_accuracy"
    assert abs(reproduction["difference"]) < 1e-6, reproduction  # same seed, same CPU: exact
    assert json.loads((run_dir / "summary.json").read_text())["seeds"] == [exported.config.seed]

    # The saved weights give the recorded test accuracy in a freshly built model.
    from safetensors.torch import load_file

    from objectives.mlp import MLP

    seed_dir = run_dir / f"seed{exported.config.seed}"
    model = MLP(2, exported.config)
    model.load_state_dict(load_file(seed_dir / "model.safetensors"))
    model.eval()
    data = load_euro(data_dir)
    with torch.no_grad():
        logits = model(torch.from_numpy(make_features(data.x_test, "raw", None, None)))
    accuracy = float((logits.argmax(1).numpy() == data.y_test).mean())
    metrics = json.loads((seed_dir / "metrics.json").read_text())["metrics"]
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert {"batch_losses.npy", "decision_boundary.npz", "decision_boundary.png",
            "loss_curves.png"} <= {p.name for p in seed_dir.iterdir()}


def test_retrain_cli_over_seeds_on_train_plus_val(study_storage: str, data_dir: Path,
                                                  tmp_path: Path) -> None:
    (path,) = export_study(STUDY, study_storage, top=1, out=tmp_path)
    document = yaml.safe_load(path.read_text())
    document["config"]["epochs"] = 1
    path.write_text(yaml.safe_dump(document))
    done = subprocess.run(
        [sys.executable, "-m", "search.retrain", str(path), "--seeds", "2", "--train-on",
         "train+val", "--out", str(tmp_path / "runs"), "--data-dir", str(data_dir),
         "--device", "cpu", "--no-progress"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "test_accuracy" in done.stdout and "NOT held-out" in done.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    seed = document["config"]["seed"]
    assert summary["seeds"] == [seed, seed + 1]
    assert summary["train_on"] == "train+val" and summary["reproduction"] is None
    test = summary["metrics"]["test_accuracy"]
    assert test["std"] == pytest.approx(np.std(test["values"], ddof=1))
    assert sorted(p.name for p in run_dir.glob("seed*/model.safetensors")) == [
        "model.safetensors"] * 2


def test_unknown_study_is_a_clear_error(study_storage: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no study named 'nope'.*studies there: mlp_demo"):
        export_study("nope", study_storage, out=tmp_path)


def test_missing_storage_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no study storage at"):
        export_study(STUDY, f"sqlite:///{tmp_path / 'absent.db'}", out=tmp_path)
    assert not (tmp_path / "absent.db").exists()


def test_study_without_complete_trials_is_a_clear_error(storage_url: str, tmp_path: Path) -> None:
    study = optuna.create_study(study_name="empty", storage=storage_url)
    study.set_user_attr("objective", "mlp")
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    with pytest.raises(ConfigError, match="'empty' has no complete trial \\(1 fail\\)"):
        export_study("empty", storage_url, out=tmp_path)


def test_config_for_an_unknown_objective_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"objective": "nope", "config": {},
                                    "metric": {"name": "val_accuracy"}}))
    with pytest.raises(ConfigError, match="bad.yaml: unknown objective 'nope'; known"):
        load_exported(path)


def test_config_missing_a_key_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"objective": "mlp", "metric": {"name": "val_accuracy"}}))
    with pytest.raises(ConfigError, match="bad.yaml: missing key 'config'"):
        load_exported(path)


def test_config_with_an_unknown_setting_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"objective": "mlp", "config": {"depht": 3},
                                    "metric": {"name": "val_accuracy"}}))
    with pytest.raises(ConfigError, match="unknown config key 'depht'"):
        load_exported(path)


def test_cli_bad_input_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "search.retrain", str(tmp_path / "nope.yaml")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("error: config file") and "Traceback" not in done.stderr


def test_save_weights_for_sklearn_and_xgboost_models(tmp_path: Path) -> None:
    from safetensors.numpy import load_file
    from sklearn.linear_model import LogisticRegression
    from xgboost import XGBClassifier

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)), np.arange(40) % 2
    probe = LogisticRegression().fit(x, y)
    path = save_weights(probe, tmp_path / "probe")
    assert np.allclose(load_file(path)["coef"], probe.coef_)
    booster = XGBClassifier(n_estimators=2, max_depth=2).fit(x, y)
    path = save_weights(booster, tmp_path / "xgb")
    again = XGBClassifier()
    again.load_model(path)
    assert np.array_equal(again.predict(x), booster.predict(x))
    with pytest.raises(TypeError, match="cannot save weights"):
        save_weights(object(), tmp_path / "other")


def _euro_label_names(data_dir: Path) -> dict[str, str]:
    """The labels as the Euro data's own README lists them ("0 Albania, 1 Austria, ...")."""
    readme = data_dir / "euro" / "README.md"
    assert readme.is_file(), f"{readme} (the data's label list) is missing from the test data"
    labels = readme.read_text().split("## Labels", 1)[1].split("\n\n", 2)[1]
    return dict(re.findall(r"(\d+) ([^,.]+)", " ".join(labels.split())))


def test_retrain_set_changes_what_is_trained_and_saves_class_names(
        study_storage: str, data_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    (path,) = export_study(STUDY, study_storage, top=1, out=tmp_path)
    exported = load_exported(path)
    assert (exported.config.epochs, exported.config.train_fraction) == (2, 0.1)  # the shortcuts
    code = retrain_main([str(path), "--set", "epochs=1", "--set", "train_fraction=0.05",
                         "--out", str(tmp_path / "runs"), "--data-dir", str(data_dir),
                         "--device", "cpu", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "changed with --set: epochs 2 -> 1, train_fraction 0.1 -> 0.05" in out

    (run_dir,) = (tmp_path / "runs").iterdir()
    seed_dir = run_dir / f"seed{exported.config.seed}"
    record = json.loads((seed_dir / "metrics.json").read_text())
    assert (record["config"]["epochs"], record["config"]["train_fraction"]) == (1, 0.05)
    assert len(record["history"]["val_accuracy"]) == 1  # one epoch, not the study's two
    n_train = len(load_euro(data_dir).y_train)
    batches = math.ceil(int(n_train * 0.05) / exported.config.batch_size)
    assert record["history"]["iterations"] == [batches]  # a twentieth of the data, not a tenth
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["changed"] == {"epochs": [2, 1], "train_fraction": [0.1, 0.05]}
    assert summary["reproduction"] is None  # another config: nothing to compare with

    # One seed has no spread: "n/a" in the table, null in summary.json.
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows["val_accuracy"][2] == "n/a" and rows["test_accuracy"][2] == "n/a"
    assert summary["metrics"]["test_accuracy"]["std"] is None

    # Beside the weights: which country each output of the model is, as the data names them.
    classes = json.loads((seed_dir / "classes.json").read_text())
    assert classes == _euro_label_names(data_dir) and len(classes) == 33
    from safetensors.torch import load_file

    from objectives.mlp import MLP

    model = MLP(2, load_exported(path).config)
    model.load_state_dict(load_file(seed_dir / "model.safetensors"))
    assert model.eval()(torch.zeros(1, 2)).shape == (1, len(classes))  # a name per output
    assert summary["runs"][0]["classes"] == str(seed_dir / "classes.json")


@pytest.mark.parametrize(("setting", "message"), [
    ("epoch=3", "unknown config key 'epoch' for Config; known keys:"),
    ("train_fraction=0", "'train_fraction' must be in (0, 1], got 0.0"),
    ("epochs=0", "'epochs' must be >= 1, got 0"),
    ("batch_size=many", "'batch_size' must be an integer, got 'many'"),
    ("epochs", "--set expects KEY=VALUE, got 'epochs'"),
])
def test_retrain_set_refuses_what_search_run_refuses(
        setting: str, message: str, study_storage: str, data_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    from search.run import main as run_main

    (path,) = export_study(STUDY, study_storage, top=1, out=tmp_path)
    code = retrain_main([str(path), "--set", setting, "--out", str(tmp_path / "runs"),
                         "--data-dir", str(data_dir), "--device", "cpu", "--no-progress"])
    retrain_err = capsys.readouterr().err
    run_code = run_main(["--study", STUDY, "--set", setting, "--storage",
                         f"sqlite:///{tmp_path / 'run.db'}", "--data-dir", str(data_dir),
                         "--no-progress"])
    run_err = capsys.readouterr().err
    assert code == run_code == 1
    for err in (retrain_err, run_err):
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert not (tmp_path / "runs").exists()  # refused before anything trained


def test_retrain_set_train_on_points_to_the_option(study_storage: str, data_dir: Path,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    (path,) = export_study(STUDY, study_storage, top=1, out=tmp_path)
    code = retrain_main([str(path), "--set", "train_on=train+val", "--out",
                         str(tmp_path / "runs"), "--data-dir", str(data_dir), "--no-progress"])
    assert code == 1
    assert capsys.readouterr().err.strip() == (
        "error: --set train_on is not allowed here; use --train-on train or --train-on "
        "train+val")


def test_export_takes_the_command_from_the_trial_else_from_the_study(
        study_storage: str, tmp_path: Path) -> None:
    import copy

    source = optuna.load_study(study_name=STUDY, storage=study_storage)
    url = f"sqlite:///{tmp_path / 'commands.db'}"
    for name, command in (("own", "python -m search.run --study mlp_demo --backend ray"),
                          ("none", None)):
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        for key, value in source.user_attrs.items():
            study.set_user_attr(key, value)  # the study's command: the latest run's
        trial = copy.deepcopy(source.best_trial)
        recorded = {k: v for k, v in trial.user_attrs["provenance"].items()
                    if k not in ("command", "backend")}  # as a trial from before they were
        if command:  # a trial that recorded the command (and backend) that ran it
            recorded.update(command=command, backend="ray")
        trial.user_attrs = {**trial.user_attrs, "provenance": recorded}
        study.add_trial(trial)
        (path,) = export_study(name, url, top=1, out=tmp_path)
        provenance = yaml.safe_load(path.read_text())["provenance"]
        assert provenance["command"] == (command or "pytest small study")
        assert provenance["backend"] == ("ray" if command else None)
        assert load_exported(path).raw["provenance"] == provenance
