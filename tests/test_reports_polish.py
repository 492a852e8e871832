"""reports/: the hint that continues a study, the index across builds, and figures that show
everything (one-epoch learning curves, tables without cut rows).

A tiny real ``mlp_lr`` study is made by the real CLI with ``--set epochs=1 --set
train_fraction=0.01 --trials 2`` (2 of its 4 grid points) and copied under a second name; the
table tests write studies through Optuna's API and render real PNGs with Kaleido.
"""

from __future__ import annotations

import html
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from reports.build import main
from reports.commands import continue_command, yaml_value
from reports.data import StudyStore
from reports.exercise import Context
from reports.export import Exporter
from reports.faces import figure_11
from reports.figure import ReportFigure
from reports.search_plots import TOP_TRIALS, learning_curves, top_trials_table
from search.records.storage import open_storage
from search.run import parse_overrides
from tests.cli_helpers import REPO, run_cli

SET = ["--set", "epochs=1", "--set", "train_fraction=0.01"]
COPY = "lr_quick"  # the same study under a --study-name


@pytest.fixture(scope="module")
def original(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """studies.db with mlp_lr (2 of 4 points, made with --set) and its copy ``lr_quick``."""
    folder = tmp_path_factory.mktemp("polish")
    url = f"sqlite:///{folder / 'studies.db'}"
    done = run_cli("--study", "mlp_lr", *SET, "--trials", "2", "--storage", url, "--data-dir",
                   str(data_dir), "--device", "cpu", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    optuna.copy_study(from_study_name="mlp_lr", from_storage=url, to_storage=url,
                      to_study_name=COPY)
    return folder


@pytest.fixture
def db(original: Path, tmp_path: Path) -> Path:
    """This test's copy of the storage file and its artifacts."""
    shutil.copytree(original, tmp_path / "storage")
    return tmp_path / "storage" / "studies.db"


def build_cli(db: Path, out: Path, *studies: str) -> int:
    which = [arg for name in studies for arg in ("--study", name)]
    return main([*which, "--storage", f"sqlite:///{db}", "--out", str(out), "--no-png"])


def hint(index: str) -> str:
    """The command of the index's "incomplete: ... `COMMAND` runs the rest" note."""
    found = re.search(r"incomplete: 2 of 4 grid points done; <code>(.*?)</code> runs the rest",
                      index)
    assert found, "no hint in the index"
    return html.unescape(found.group(1))


# Item 6: the hint continues the study with its own settings -----------------------------------
def test_hint_for_a_study_made_with_set_values_continues_that_study(db: Path, tmp_path: Path,
                                                                    data_dir: Path) -> None:
    assert build_cli(db, tmp_path / "out", "mlp_lr") == 0
    command = hint((tmp_path / "out" / "index.html").read_text())
    words = shlex.split(command)
    assert words[:5] == ["python", "-m", "search.run", "--study", "mlp_lr"]
    assert "epochs=1" in words and "train_fraction=0.01" in words
    assert words[words.index("--storage") + 1] == f"sqlite:///{db}"
    assert "--study-name" not in words  # the study has the study file's name

    env = {**os.environ, "HPSEARCH_DATA": str(data_dir)}
    done = subprocess.run([sys.executable, *words[1:], "--device", "cpu", "--no-progress"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    study = optuna.load_study(study_name="mlp_lr", storage=f"sqlite:///{db}")
    complete = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert sorted(t.params["lr"] for t in complete) == [1e-05, 0.001, 0.01, 1.0]
    assert {t.user_attrs["config"]["epochs"] for t in complete} == {1}
    assert {t.user_attrs["config"]["train_fraction"] for t in complete} == {0.01}


def test_hint_names_the_study_name_of_a_renamed_study(db: Path) -> None:
    url = f"sqlite:///{db}"
    info = StudyStore(url).load(COPY)
    words = shlex.split(continue_command(info, url))
    assert words[words.index("--study") + 1] == "mlp_lr"
    assert words[words.index("--study-name") + 1] == COPY
    assert {"epochs=1", "train_fraction=0.01"} <= set(words)


def test_hint_leaves_out_the_default_storage_and_adds_trials_when_asked(db: Path) -> None:
    info = StudyStore(f"sqlite:///{db}").load("mlp_lr")
    words = shlex.split(continue_command(info, trials=2))
    assert "--storage" not in words and words[-2:] == ["--trials", "2"]


@pytest.mark.parametrize("value", [1e-05, 0.01, 1.0, 3, True, False, None, "resnet18", "1e-3",
                                   "true", [0, 30, 60], "a b"])
def test_set_values_read_back_as_they_were(value: object) -> None:
    assert parse_overrides([f"key={yaml_value(value)}"]) == {"key": value}


# Item 7: the index lists every study built into --out ----------------------------------------
def test_index_after_two_partial_builds_links_both(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert build_cli(db, out, "mlp_lr") == 0
    assert build_cli(db, out, COPY) == 0
    index = (out / "index.html").read_text()
    for folder in ("mlp_lr", COPY):
        assert f"id='{folder}'" in index
        assert f"href='{folder}/search_history.html'" in index
    assert index.count("id='mlp_lr'") == 1
    assert "<td>2</td>" in index  # figure 2, built by the first build, still in the table

    assert build_cli(db, out, "mlp_lr") == 0  # rebuilding one replaces it, keeps the other
    index = (out / "index.html").read_text()
    assert index.count("id='mlp_lr'") == 1 and f"id='{COPY}'" in index


def test_index_drops_a_study_whose_folder_was_deleted(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert build_cli(db, out, "mlp_lr") == 0
    assert build_cli(db, out, COPY) == 0
    shutil.rmtree(out / "mlp_lr")
    assert build_cli(db, out, COPY) == 0
    index = (out / "index.html").read_text()
    assert "id='mlp_lr'" not in index and f"id='{COPY}'" in index


def test_index_lists_a_figure_folder_without_a_record(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert build_cli(db, out, "mlp_lr") == 0
    (out / ".index.json").write_text("{not json")
    assert build_cli(db, out, COPY) == 0
    index = (out / "index.html").read_text()
    assert "id='mlp_lr'" in index and "href='mlp_lr/search_history.html'" in index
    assert "kept no record" in index


# Item 10: nothing blank, nothing cut ----------------------------------------------------------
def test_learning_curves_of_a_one_epoch_study_have_markers(db: Path) -> None:
    info = StudyStore(f"sqlite:///{db}").load("mlp_lr")
    assert all(len(t.intermediate) == 1 for t in info.finished())
    item = learning_curves(info)
    curves = [t for t in item.figure.data if t.name in ("complete", "pruned")]
    assert curves and all("markers" in t.mode for t in curves)


def _wide_study(url: str, n: int) -> None:
    """``n`` trials of seven searched parameters with test metrics (a quarter pruned)."""
    study = optuna.create_study(study_name="wide", storage=open_storage(url),
                                direction="maximize")
    study.set_user_attr("metric", "val_accuracy")
    space = {"depth": optuna.distributions.IntDistribution(1, 10),
             "width": optuna.distributions.CategoricalDistribution([8, 16, 32, 64, 128]),
             "lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
             "epochs": optuna.distributions.IntDistribution(1, 50),
             "batch_size": optuna.distributions.CategoricalDistribution([16, 256, 1024]),
             "batch_norm": optuna.distributions.CategoricalDistribution([False, True]),
             "residual": optuna.distributions.CategoricalDistribution([False, True])}
    values = np.random.default_rng(0).random(n)
    for i in range(n):
        trial = study.ask(space)
        trial.set_user_attr("metrics", {"test_accuracy": 0.9, "test_loss": 0.3})
        trial.set_user_attr("duration_s", 12.5)
        trial.report(float(values[i]), 0)
        study.tell(trial, float(values[i]) if i % 4 else None,
                   state=optuna.trial.TrialState.COMPLETE if i % 4
                   else optuna.trial.TrialState.PRUNED)


def _faces_studies(url: str) -> None:
    """cnn_modes at five rates with a long backbone name, XGBoost and the sklearn probe."""
    storage = open_storage(url)
    rates = [0.1, 0.01, 0.001, 0.0001, 1e-05]
    cnn = optuna.create_study(study_name="cnn_modes", storage=storage, direction="maximize")
    for k, mode in enumerate(("scratch", "probe", "finetune")):
        for j, lr in enumerate(rates):
            trial = cnn.ask()
            accuracy = 0.5 + 0.02 * (3 * k + j)
            trial.set_user_attr("objective", "resnet")
            trial.set_user_attr("config", {"mode": mode, "lr": lr,
                                           "backbone": "efficientnet_lite0"})
            trial.set_user_attr("metrics", {"test_accuracy": accuracy})
            cnn.tell(trial, accuracy)
    for name, objective, config in (("xgboost_defaults", "xgboost", {"seed": 0}),
                                    ("sklearn_probe", "sklearn_probe",
                                     {"C": 1.0, "backbone": "efficientnet_lite0"})):
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        trial = study.ask()
        trial.set_user_attr("objective", objective)
        trial.set_user_attr("config", config)
        trial.set_user_attr("metrics", {"test_accuracy": 0.735})
        study.tell(trial, 0.7)


def _render(item: ReportFigure, out: Path) -> np.ndarray:
    exporter = Exporter(out, scale=1)
    written = exporter.add("t", item)
    exporter.write_pngs()
    with Image.open(out / written.png) as image:
        return np.asarray(image.convert("L"))


def assert_every_row_shows(pixels: np.ndarray, item: ReportFigure) -> None:
    """The table ends above the bottom of its area: a table cut short fills it to the end."""
    bottom = item.height - (item.figure.layout.margin.b or 80)  # plotly's default margin
    ink = np.nonzero((pixels < 245).any(axis=1))[0]
    assert ink.max() < bottom - 6, f"the table reaches its area's end at {ink.max()}px: cut"


def test_top_trials_table_says_how_many_more_and_shows_its_rows_whole(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    _wide_study(url, 24)
    info = StudyStore(url).load("wide")
    item = top_trials_table(info)
    assert len(item.figure.data[0].cells.values[0]) == TOP_TRIALS
    assert "9 more trial(s) not shown (3 complete, 6 pruned)" in item.figure.layout.title.text
    assert_every_row_shows(_render(item, tmp_path / "out"), item)


def test_top_trials_table_of_a_few_trials_says_no_more(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    _wide_study(url, 5)
    item = top_trials_table(StudyStore(url).load("wide"))
    assert len(item.figure.data[0].cells.values[0]) == 5
    assert "more" not in item.figure.layout.title.text


def test_figure_11_table_shows_its_last_row(tmp_path: Path, data_dir: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    _faces_studies(url)
    store = StudyStore(url)
    context = Context(store, {name: store.load(name) for name in store.names()}, data_dir)
    (item,) = figure_11(context)
    rows = item.figure.data[0].cells.values[0]
    assert rows[-1] == "sklearn probe (efficientnet_lite0, C=1)" and len(rows) == 5
    assert_every_row_shows(_render(item, tmp_path / "out"), item)

