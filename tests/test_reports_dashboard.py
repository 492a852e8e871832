"""``reports.build --dashboard``: each study's figures saved to it for optuna-dashboard.

A tiny real ``mlp_grid`` (1 epoch on 2% of the training split) made with the CLI; the figures
are read back with optuna-dashboard's own reader, as its server serves them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from cli_helpers import run_cli
from optuna_dashboard import save_plotly_graph_object
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

from reports.dashboard import PLOT_DATA, PREFIX, attached_ids, graph_id

REPO = Path(__file__).resolve().parent.parent
STUDY = "mlp_grid"


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('dash') / 'studies.db'}"
    result = run_cli("--study", STUDY, "--set", "epochs=1", "--set", "train_fraction=0.02",
                     "--storage", url, "--data-dir", str(data_dir), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    return url


def build(storage: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "reports.build", "--study", STUDY,
                             "--storage", storage, "--out", str(out), "--no-png", *extra],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def served(storage: str) -> dict[str, dict]:
    """The study's figures as optuna-dashboard's API serves them: ID -> parsed figure."""
    study = optuna.load_study(study_name=STUDY, storage=storage)
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {key: json.loads(value) for key, value in get_plotly_graph_objects(attrs).items()}


def chunks(storage: str) -> dict[str, int]:
    """Stored chunks per figure ID (the dashboard joins them in order)."""
    study = optuna.load_study(study_name=STUDY, storage=storage)
    counts: dict[str, int] = {}
    for key in study._storage.get_study_system_attrs(study._study_id):
        if key.startswith(PLOT_DATA):
            figure = key[len(PLOT_DATA):].rsplit(":", 1)[0]
            counts[figure] = counts.get(figure, 0) + 1
    return counts


def test_build_without_the_flag_attaches_nothing(storage: str, tmp_path: Path) -> None:
    result = build(storage, tmp_path)
    assert "attached" not in result.stdout
    assert not any(key.startswith(PREFIX) for key in served(storage))


def test_every_figure_is_attached_once_and_a_rebuild_replaces_it(storage: str,
                                                                 tmp_path: Path) -> None:
    first = build(storage, tmp_path / "a", "--dashboard")
    written = sorted(p.stem for p in (tmp_path / "a" / STUDY).glob("*.html"))
    assert "compute_ledger" in written and "fig06_grid_best_worst_boundary" in written
    assert f"attached {len(written)} figures to 1 studies" in first.stdout
    figures = served(storage)
    assert sorted(figures) == sorted(graph_id(stem) for stem in written)
    before = chunks(storage)

    build(storage, tmp_path / "b", "--dashboard")
    again = served(storage)
    assert sorted(again) == sorted(figures)  # one copy of each, no new IDs
    assert chunks(storage) == before  # and no chunks piled up
    ledger = again[graph_id("compute_ledger")]
    assert ledger["layout"]["xaxis"]["title"]["text"] == "cumulative FLOPs (estimated)"
    assert ledger["layout"]["title"]["text"].startswith(f"{STUDY}: best val_accuracy")
    # Sized by the dashboard's box, not the PNG page: no fixed width or height.
    assert all("height" not in f["layout"] and "width" not in f["layout"]
               for f in again.values())


def test_a_figure_no_longer_drawn_is_retired(storage: str, tmp_path: Path) -> None:
    study = optuna.load_study(study_name=STUDY, storage=storage)
    save_plotly_graph_object(study, optuna.visualization.plot_slice(study),
                             graph_object_id=PREFIX + "gone")
    save_plotly_graph_object(study, optuna.visualization.plot_slice(study),
                             graph_object_id="someone_elses")
    build(storage, tmp_path, "--dashboard")
    figures = served(storage)
    retired = figures[PREFIX + "gone"]
    assert retired["data"] == [] and "not attached by the latest" in (
        retired["layout"]["annotations"][0]["text"])
    assert figures["someone_elses"]["data"]  # a figure we did not attach is left alone
    assert attached_ids(study).count(PREFIX + "gone") == 1
