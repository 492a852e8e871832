"""reports.compute and the index's compute table, from tiny real studies made with the CLI.

``mlp_grid`` (its 7 points) and an ``mlp_width_depth`` of 8 trials, both 1 epoch on 2% of the
training split, in one SQLite file; the expected numbers are summed here from the stored trials'
``compute`` attributes, independently of the module.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import plotly.io as pio
import pytest
import yaml
from cli_helpers import run_cli
from PIL import Image

from reports.compute import (
    GRID_STUDY,
    SEARCH_STUDY,
    compare,
    fmt_compute,
    ledger,
    ledger_figure,
)
from reports.data import StudyInfo, StudyStore, TrialInfo
from search.study.spec import SPACES_DIR

REPO = Path(__file__).resolve().parent.parent
TINY = ["--set", "epochs=1", "--set", "train_fraction=0.02"]
SEARCH_TRIALS = 8


def tiny_search_file(folder: Path) -> Path:
    """mlp_width_depth.yaml with epochs fixed at 1 (it searches them) on 2% of the data."""
    raw = yaml.safe_load((SPACES_DIR / f"{SEARCH_STUDY}.yaml").read_text())
    raw["space"].pop("epochs")
    raw["fixed"].update(epochs=1, train_fraction=0.02)
    path = folder / f"{SEARCH_STUDY}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> str:
    folder = tmp_path_factory.mktemp("compute")
    url = f"sqlite:///{folder / 'studies.db'}"
    common = ["--storage", url, "--data-dir", str(data_dir), "--no-progress", "--seed", "0"]
    grid = run_cli("--study", GRID_STUDY, *TINY, *common)
    assert grid.returncode == 0, grid.stdout + grid.stderr
    search = run_cli("--study", str(tiny_search_file(folder)), "--trials", str(SEARCH_TRIALS),
                     *common)
    assert search.returncode == 0, search.stdout + search.stderr
    return url


def build_cli(storage: str, out: Path, *studies: str, extra: tuple[str, ...] = ()
              ) -> subprocess.CompletedProcess:
    args = [arg for name in studies for arg in ("--study", name)] + list(extra)
    result = subprocess.run([sys.executable, "-m", "reports.build", *args, "--storage", storage,
                             "--out", str(out), "--no-png"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def built(storage: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    build_cli(storage, out, GRID_STUDY, SEARCH_STUDY)
    return out


def stored(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The study's finished trials in number order."""
    study = optuna.load_study(study_name=name, storage=storage)
    return sorted((t for t in study.get_trials(deepcopy=False) if t.state.is_finished()),
                  key=lambda t: t.number)


def sums(trials: list[optuna.trial.FrozenTrial], key: str) -> np.ndarray:
    return np.cumsum([t.user_attrs["compute"][key] for t in trials])


def table_rows(index: Path) -> dict[str, list[float | None]]:
    """The compute table: row label (tags stripped) -> the cells' exact values."""
    page = index.read_text()
    table = page[page.index("<table class='compute'>"):]
    table = table[:table.index("</table>")]
    rows = {}
    for label, cells in re.findall(r"<tr><td>(.*?)</td>(<td class='num'.*?)</tr>", table):
        values = re.findall(r"<td class='num'(?: data-value='([^']*)')?>", cells)
        rows[re.sub(r"<[^>]+>", "", label)] = [float(v) if v else None for v in values]
    return rows


def row(rows: dict[str, list[float | None]], fragment: str) -> list[float | None]:
    found = [values for label, values in rows.items() if fragment in label]
    assert len(found) == 1, (fragment, list(rows))
    return found[0]


def test_every_trial_has_a_ledger(storage: str) -> None:
    for name in (GRID_STUDY, SEARCH_STUDY):
        trials = stored(storage, name)
        assert trials and all(t.user_attrs["compute"]["flops"] > 0 for t in trials)


def test_ledger_figure_has_cumulative_compute_on_x(storage: str, built: Path) -> None:
    info = StudyStore(storage).load(GRID_STUDY)
    trials = stored(storage, GRID_STUDY)
    item = ledger_figure(info)
    flops, seconds = (trace for trace in item.figure.data if trace.name.startswith("best"))
    assert list(flops.x) == pytest.approx(list(sums(trials, "flops")))
    assert list(seconds.x) == pytest.approx(list(sums(trials, "train_seconds")))
    best = np.maximum.accumulate([t.value for t in trials])
    assert list(flops.y) == pytest.approx(list(best))
    layout = item.figure.layout
    assert layout.xaxis.title.text == "cumulative FLOPs (estimated)"
    assert layout.xaxis2.title.text == "cumulative training seconds"
    assert "cumulative FLOPs" in (built / GRID_STUDY / "compute_ledger.html").read_text()
    # It renders: a real Kaleido PNG of the page size, not blank.
    png = Image.open(io.BytesIO(pio.to_image(item.figure, format="png", width=item.width,
                                             height=item.height)))
    assert png.size == (item.width, item.height)
    assert len(np.unique(np.asarray(png.convert("L")))) > 20


def test_index_table_matches_the_trials(storage: str, built: Path) -> None:
    grid, search = stored(storage, GRID_STUDY), stored(storage, SEARCH_STUDY)
    rows = table_rows(built / "index.html")
    grid_values = [t.value for t in grid]
    grid_best = max(grid_values)
    at_best = grid_values.index(grid_best)
    units = (("flops", "flops"), ("seconds", "train_seconds"))
    grid_sums = {unit: sums(grid, key) for unit, key in units}
    search_sums = {unit: sums(search, key) for unit, key in units}
    assert row(rows, "compute to reach its best") == pytest.approx(
        [grid_sums[u][at_best] for u, _ in units])
    assert row(rows, f"total compute ({len(grid)} trials)") == pytest.approx(
        [grid_sums[u][-1] for u, _ in units])
    assert row(rows, f"total compute ({len(search)} trials") == pytest.approx(
        [search_sums[u][-1] for u, _ in units])
    reached = next((i for i, t in enumerate(search) if t.value >= grid_best), None)
    if reached is None:
        assert row(rows, "first reach the grid's best") == [None, None]
        assert row(rows, "saving") == [None, None]
    else:
        spent = [search_sums[u][reached] for u, _ in units]
        assert row(rows, "first reach the grid's best") == pytest.approx(spent)
        assert row(rows, "saving") == pytest.approx(
            [s / grid_sums[u][at_best] for s, (u, _) in zip(spent, units, strict=True)])
    expected = []
    for unit, _ in units:
        within = [t.value for t, spent in zip(search, search_sums[unit], strict=True)
                  if spent <= grid_sums[unit][-1]]
        expected.append(max(within) if within else None)
    assert row(rows, "best within the grid's total") == pytest.approx(expected)
    page = (built / "index.html").read_text()
    assert fmt_compute(float(grid_sums["flops"][-1]), "flops") in page


def test_table_names_the_command_for_a_missing_study(storage: str, tmp_path: Path) -> None:
    original = Path(storage.removeprefix("sqlite:///"))
    copy = tmp_path / "grid-only.db"
    shutil.copy(original, copy)
    url = f"sqlite:///{copy}"
    optuna.delete_study(study_name=SEARCH_STUDY, storage=url)
    artifacts = original.parent / f"{original.stem}-artifacts"
    build_cli(url, tmp_path / "out", GRID_STUDY, extra=("--artifact-dir", str(artifacts)))
    page = (tmp_path / "out" / "index.html").read_text()
    section = page[page.index("id='compute'"):page.index(f"id='{GRID_STUDY}'")]
    assert f"needs {SEARCH_STUDY}, not in storage" in section
    assert f"python -m search.run --study {SEARCH_STUDY} --storage" in section


def _trial(number: int, value: float | None, state: str = "COMPLETE",
           compute: dict | None = None, duration: float | None = None) -> TrialInfo:
    attrs = {"compute": compute} if compute else {}
    return TrialInfo(number, state, value, {}, {}, {}, {}, {}, {}, attrs, duration)


def _study(name: str, trials: list[TrialInfo]) -> StudyInfo:
    return StudyInfo(name, "maximize", "val_accuracy", "mlp", "", "", tuple(trials))


def test_ledger_without_compute_counts_run_time_and_no_flops() -> None:
    """XGBoost and sklearn trials record no ledger: their duration_s is their seconds."""
    info = _study("xgboost_pixels", [_trial(0, 0.6, duration=4.0),
                                     _trial(1, None, "PRUNED", duration=1.5),
                                     _trial(2, 0.7, duration=2.0),
                                     _trial(3, None, "RUNNING", duration=None)])
    rows = ledger(info).rows
    assert [r.cum_seconds for r in rows] == [4.0, 5.5, 7.5]
    assert [r.best for r in rows] == [0.6, 0.6, 0.7]
    assert not ledger(info).has_flops()
    item = ledger_figure(info)
    assert "no FLOP count recorded" in item.figure.layout.annotations[-1].text
    assert "3 of 3 trials have no compute ledger" in item.figure.layout.title.text


def test_search_that_never_reaches_the_grid() -> None:
    ledger_of = {"train_seconds": 1.0, "flops": 10.0}
    grid = _study(GRID_STUDY, [_trial(0, 0.5, compute=ledger_of),
                               _trial(1, 0.8, compute=ledger_of)])
    search = _study(SEARCH_STUDY, [_trial(0, 0.3, compute=ledger_of),
                                   _trial(1, None, "FAIL", duration=9.0),
                                   _trial(2, 0.6, compute=ledger_of)])
    comparison = compare(grid, search)
    assert comparison.grid_to_best == {"flops": 20.0, "seconds": 2.0}
    assert comparison.search_reach_trial is None and comparison.ratio("flops") is None
    # The grid's 20 FLOPs cover all three (the failed one adds none); its 2 s only trial 0
    # (the failed one ran 9 s).
    assert comparison.search_best_at_grid_total == {"flops": 0.6, "seconds": 0.3}
    assert comparison.search_best_at_grid_total_trial == {"flops": 2, "seconds": 0}
    assert any("no FLOP count" in note for note in comparison.notes)
