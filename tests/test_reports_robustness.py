"""reports.build on hostile or broken storages: odd study names, absent studies, bad artifacts.

One tiny real ``mlp_lr`` study (2 epochs on 1% of the training split) and a copy of it named
``../escaped`` live in a SQLite file; each test that changes anything works on its own copy.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest

from reports.build import main
from reports.data import StudyStore, UnreadableArtifact
from reports.export import study_folder, study_folders
from search.driver.runner import RunOptions, run_study
from search.records.storage import open_storage
from search.study.spec import load_study_spec

ESCAPED = "../escaped"


@pytest.fixture(scope="module")
def original(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with studies.db (mlp_lr and its copy ``../escaped``) and its artifacts."""
    folder = tmp_path_factory.mktemp("robust")
    url = f"sqlite:///{folder / 'studies.db'}"
    spec = load_study_spec("mlp_lr").with_overrides(fixed={"epochs": 2, "train_fraction": 0.01})
    run_study(spec, RunOptions(n_trials=4, data_dir=data_dir, storage_url=url, device="cpu",
                               progress=False, seed=0))
    optuna.copy_study(from_study_name="mlp_lr", from_storage=url, to_storage=url,
                      to_study_name=ESCAPED)
    return folder


@pytest.fixture
def db(original: Path, tmp_path: Path) -> Path:
    """This test's copy of the storage file (with its WAL) and the artifact folder."""
    folder = tmp_path / "storage"
    shutil.copytree(original, folder)
    return folder / "studies.db"


def build_cli(db: Path, out: Path, *which: str) -> int:
    return main([*which, "--storage", f"sqlite:///{db}", "--out", str(out), "--no-png"])


def test_a_study_named_dot_dot_is_written_under_out_only(db: Path, tmp_path: Path,
                                                          capsys) -> None:
    out = tmp_path / "report" / "out"
    assert build_cli(db, out, "--study", ESCAPED, "--study", "mlp_lr") == 0
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["out"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "storage"]
    folder = study_folder(ESCAPED)
    assert "/" not in folder and not folder.startswith(".")
    assert (out / folder / "search_history.html").is_file()
    assert (out / "mlp_lr" / "fig02_lr_val_loss.html").is_file()
    index = (out / "index.html").read_text()
    links = set(re.findall(r"(?:href|src)='([^'#]+)'", index))
    assert any(link.startswith(f"{folder}/") for link in links)
    assert all((out / link).resolve().is_relative_to(out.resolve()) for link in links)
    assert all((out / link).is_file() for link in links)
    anchors = set(re.findall(r"href='#([^']+)'", index))
    ids = set(re.findall(r" id='([^']+)'", index))
    assert anchors <= ids and {folder, "mlp_lr"} <= ids
    assert "&lt;" not in folder and html_escaped(ESCAPED) in index  # the real name is shown
    assert "Traceback" not in capsys.readouterr().err


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_folder_names_stay_distinct_and_plain() -> None:
    names = ["../escaped", "escaped", "..", ".", "a/b", "a_b", "a b", "MLP", "mlp",
             "index.html", "plotly.min.js", "", "x" * 300, "x" * 301]
    folders = study_folders(names)
    assert len({f.lower() for f in folders.values()}) == len(set(names))
    for name, folder in folders.items():
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", folder), (name, folder)
        assert len(folder) <= 64 and folder not in ("index.html", "plotly.min.js")
    assert folders["mlp"] == "mlp" and folders["a_b"] == "a_b"


def test_studies_asked_for_but_not_stored_exit_1_in_one_line(db: Path, tmp_path: Path,
                                                             capsys) -> None:
    out = tmp_path / "out"
    assert build_cli(db, out, "--study", "mlp_grid", "--study", "mlp_epochs") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: none of the studies asked for is in")
    assert "mlp_grid, mlp_epochs" in err and "stored there: ../escaped, mlp_lr" in err
    assert "python -m search.run --list" in err and "python -m search.run --study" in err
    assert not out.exists()


def test_all_on_an_empty_storage_exits_1_in_one_line(tmp_path: Path, capsys) -> None:
    db = tmp_path / "empty.db"
    open_storage(f"sqlite:///{db}")  # creates the file with Optuna's tables, no study
    assert db.is_file()
    assert build_cli(db, tmp_path / "out", "--all") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: the storage sqlite:///{db} holds no "
                                                   "study; run one with")
    assert not (tmp_path / "out").exists()


def test_a_missing_storage_file_exits_1_and_is_not_created(tmp_path: Path, capsys) -> None:
    db = tmp_path / "absent.db"
    assert build_cli(db, tmp_path / "out", "--all") == 1
    assert capsys.readouterr().err.startswith("error: no study storage at")
    assert not db.exists()


def _artifact_file(db: Path, study: str, lr: float, name: str) -> tuple[int, Path]:
    """(trial number, file) of the ``name`` artifact of the study's trial at ``lr``."""
    store = StudyStore(f"sqlite:///{db}")
    info = store.load(study)
    trial = next(t for t in info.complete() if t.config["lr"] == lr)
    return trial.number, store.artifact_path(trial, name)


def test_a_truncated_boundary_artifact_skips_its_figure_and_builds_the_rest(
        db: Path, tmp_path: Path, capsys) -> None:
    number, path = _artifact_file(db, "mlp_lr", 0.001, "decision_boundary.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out = tmp_path / "out"
    assert build_cli(db, out, "--study", "mlp_lr") == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    line = next(line for line in captured.out.splitlines() if "figure 1:" in line)
    assert line.startswith(f"  not drawn: figure 1: mlp_lr trial #{number}: "
                           "decision_boundary.npz is unreadable (BadZipFile")
    assert str(path) in line
    assert (out / "mlp_lr" / "fig02_lr_val_loss.html").is_file()
    assert (out / "mlp_lr" / "search_history.html").is_file()
    assert not list(out.rglob("fig01*"))
    index = (out / "index.html").read_text()
    assert f"mlp_lr trial #{number}: decision_boundary.npz is unreadable" in index


def test_a_storage_copied_without_its_artifact_folder_still_builds(db: Path, tmp_path: Path,
                                                                   capsys) -> None:
    shutil.rmtree(db.parent / "studies-artifacts")
    out = tmp_path / "out"
    assert build_cli(db, out, "--study", "mlp_lr") == 0
    assert "Traceback" not in capsys.readouterr().err
    assert (out / "mlp_lr" / "fig02_lr_val_loss.html").is_file()  # curves need no artifact


@pytest.mark.parametrize("cut", [0, 10, 100])
def test_a_truncated_npy_artifact_raises_unreadable_artifact(db: Path, cut: int) -> None:
    number, path = _artifact_file(db, "mlp_lr", 0.001, "batch_losses.npy")
    path.write_bytes(path.read_bytes()[:cut])
    store = StudyStore(f"sqlite:///{db}")
    trial = store.load("mlp_lr").trials[number]
    with pytest.raises(UnreadableArtifact, match=rf"trial #{number}: batch_losses.npy is "
                                                  r"unreadable \(\w+"):
        store.npy(trial, "batch_losses.npy")


def test_a_boundary_artifact_without_its_arrays_is_unreadable(db: Path) -> None:
    number, path = _artifact_file(db, "mlp_lr", 0.001, "decision_boundary.npz")
    with path.open("wb") as file:
        np.savez(file, longs=np.arange(3))
    store = StudyStore(f"sqlite:///{db}")
    trial = store.load("mlp_lr").trials[number]
    with pytest.raises(UnreadableArtifact, match="no lats, grid_classes"):
        store.npz(trial, "decision_boundary.npz", keys=("longs", "lats", "grid_classes"))
