"""Who made what: each trial's command and backend, the study's list of runs, and the notes.

A small real study is resumed by another command (other --lanes, other --trials) and then by a
run that adds nothing; every trial keeps its own command, the study lists the two runs that
made it, and the dashboard and report show them. Trial notes carry the config, the final
metrics and the previews, and the previews load in a real dashboard.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from cli_helpers import dashboard_server
from optuna_dashboard import get_note

from objectives.errors import ConfigError, DivergedError
from reports.data import StudyStore
from search.driver.runner import RunOptions, run_study
from search.records.provenance import study_commands
from search.study.notes import (
    NOTE_RUNS,
    made_with,
    study_note,
    trial_note,
    trial_outcome,
)
from search.study.spec import load_study_spec

REPO = Path(__file__).resolve().parent.parent
STUDIES = Path(__file__).resolve().parent / "studies"
STUDY = "mlp_demo"
RUN_A = "python -m search.run --study mlp_demo --trials 2 --lanes 1"
RUN_B = "python -m search.run --study mlp_demo --trials 3 --lanes 3"
RUN_C = "python -m search.run --study mlp_demo --timeout 0.000001"
NOTE_URL = re.compile(r"!\[[^]]*\]\((/artifacts/\d+/\d+/([0-9a-f-]+))\)")


def _run(storage_url: str, data_dir: Path, command: str, **options) -> None:
    spec = load_study_spec(STUDY).with_overrides(fixed={"epochs": 2})
    run_study(spec, RunOptions(data_dir=data_dir, storage_url=storage_url, device="cpu",
                               seed=1, progress=False, command=command, **options))


@pytest.fixture(scope="module")
def made_twice(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """mlp_demo made by run A (2 single trials), resumed by run B (3 trials as lanes), then
    by run C, which adds nothing (its timeout passes before the first trial); with the study
    note's version before run C."""
    folder = tmp_path_factory.mktemp("made_twice")
    storage_url = f"sqlite:///{folder / 'studies.db'}"
    _run(storage_url, data_dir, RUN_A, n_trials=2, lanes=1)
    _run(storage_url, data_dir, RUN_B, n_trials=3, lanes=3)
    study = optuna.load_study(study_name=STUDY, storage=storage_url)
    before = _note_version(study)
    _run(storage_url, data_dir, RUN_C, n_trials=4, timeout=1e-6)
    return {"storage_url": storage_url, "artifacts": folder / "studies-artifacts",
            "note_version_before_c": before}


def _note_version(study: optuna.Study) -> int:
    """How many times the study's note was saved (optuna-dashboard's version counter)."""
    return study._storage.get_study_system_attrs(study._study_id)["dashboard:note_ver"]


def _study(made: dict) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=made["storage_url"])


def test_each_trial_keeps_the_command_and_backend_that_ran_it(made_twice) -> None:
    trials = _study(made_twice).trials
    assert len(trials) == 5  # run C added none
    made_by = [(t.user_attrs["provenance"]["command"], t.user_attrs["provenance"]["backend"])
               for t in trials]
    assert made_by == [(RUN_A, "local")] * 2 + [(RUN_B, "local")] * 3


def test_the_study_lists_the_runs_that_made_it_and_not_one_that_added_nothing(
        made_twice) -> None:
    study = _study(made_twice)
    assert study.user_attrs["commands"] == [
        {"command": RUN_A, "backend": "local", "first_trial": 0, "trials": 2},
        {"command": RUN_B, "backend": "local", "first_trial": 2, "trials": 3}]
    note = get_note(study)
    assert f"- `{RUN_A}`: 2 trials from #0, local" in note
    assert f"- `{RUN_B}`: 3 trials from #2, local" in note
    assert RUN_C not in note
    # Run C rewrote nothing: the note keeps the version run B left.
    assert _note_version(study) == made_twice["note_version_before_c"]


def test_the_report_reads_the_runs_that_made_the_study(made_twice) -> None:
    info = StudyStore(made_twice["storage_url"]).load(STUDY)
    assert [run["command"] for run in info.commands] == [RUN_A, RUN_B]
    line = made_with(info.commands)
    assert line == (f"made with `{RUN_A}`: 2 trials from #0, local; "
                    f"`{RUN_B}`: 3 trials from #2, local")


def test_each_trial_note_has_its_config_metrics_previews_and_command(made_twice) -> None:
    study = _study(made_twice)
    for frozen in study.trials:
        note = get_note(optuna.Trial(study, frozen._trial_id))
        assert note.startswith(f"### Trial {frozen.number}: ")
        assert "| **depth** |" in note and "| epochs | 2 |" in note  # searched in bold
        assert "| val_accuracy |" in note
        images = NOTE_URL.findall(note)
        shown = {frozen.user_attrs["artifacts"][name] for name in (
            "loss_curves.png", "accuracy_curves.png", "batch_losses.png",
            "decision_boundary.png")}
        assert {artifact_id for _, artifact_id in images} == shown
        assert all((made_twice["artifacts"] / artifact_id).is_file() for artifact_id in shown)
        assert all(url.startswith(f"/artifacts/{study._study_id}/{frozen._trial_id}/")
                   for url, _ in images)
        assert frozen.user_attrs["provenance"]["command"] in note
        assert len(note) < 2500  # a small note: one or two system attributes


def test_trial_outcome_names_how_the_trial_ended() -> None:
    spec = load_study_spec(STUDY)
    metrics = {"val_accuracy": 0.81234, "val_loss": 0.5}
    assert trial_outcome(spec, metrics, None, False, 5) == "complete: val_accuracy 0.8123"
    assert trial_outcome(spec, metrics, None, True, 3) == (
        "pruned after 3 step(s), val_accuracy 0.8123")
    assert trial_outcome(spec, None, DivergedError("loss became nan"), False, 1) == (
        "pruned: diverged: loss became nan")
    assert trial_outcome(spec, None, ConfigError("bad\nvalue"), False, 0) == (
        "failed: ConfigError: bad value")
    assert trial_outcome(spec, {"val_loss": 1.0}, None, False, 2) == (
        "failed: metric 'val_accuracy' is None")


def test_trial_note_keeps_table_cells_on_one_line() -> None:
    note = trial_note(3, "complete", {"lr": 0.00123456, "name": "a|b", "layers": list(range(40))},
                      {"lr"}, {"val_accuracy": 0.5}, [], {"command": "run", "backend": "ray"})
    assert "| **lr** | 0.001235 |" in note
    assert "| name | a\\|b |" in note
    layers = next(line for line in note.splitlines() if line.startswith("| layers"))
    assert layers.endswith("... |") and len(layers) < 80
    assert note.rstrip().endswith("Made by `run` (ray).")


def test_old_studies_and_long_histories_of_runs_are_summarised() -> None:
    assert study_commands({"command": "old"}) == [
        {"command": "old", "backend": None, "first_trial": None, "trials": None}]
    assert study_commands({}) == []
    runs = [{"command": f"run {i}", "backend": "local", "first_trial": i, "trials": 1}
            for i in range(NOTE_RUNS + 3)]
    note = study_note(load_study_spec(STUDY), runs, "sha256:0")
    assert "3 earlier run(s)" in note and "`run 2`" not in note and "`run 3`" in note
    assert made_with(runs, limit=2) == (f"made with {NOTE_RUNS + 1} earlier runs; "
                                        f"`run {NOTE_RUNS + 1}`: 1 trial from #{NOTE_RUNS + 1}, "
                                        f"local; `run {NOTE_RUNS + 2}`: 1 trial from "
                                        f"#{NOTE_RUNS + 2}, local")
    assert "No run has added trials yet." in study_note(load_study_spec(STUDY), [], "x")


@pytest.mark.ray
def test_a_study_made_locally_and_on_ray_records_both(data_dir: Path, tmp_path: Path) -> None:
    import ray

    from search.backends.ray_tune import RayOptions, run_study_ray

    spec = load_study_spec(STUDIES / "toy_asha.yaml")
    storage_url = f"sqlite:///{tmp_path / 'studies.db'}"

    def options(command: str) -> RunOptions:
        return RunOptions(n_trials=2, data_dir=data_dir, storage_url=storage_url, seed=0,
                          progress=False, device="cpu", command=command)

    run_study(spec, options("local toy"))
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}})
    try:
        run_study_ray(spec, options("ray toy"), RayOptions(num_cpus=2, max_concurrent=2))
    finally:
        ray.shutdown()
    study = optuna.load_study(study_name=spec.name, storage=storage_url)
    assert [(t.user_attrs["provenance"]["command"], t.user_attrs["provenance"]["backend"])
            for t in study.trials] == [("local toy", "local")] * 2 + [("ray toy", "ray")] * 2
    assert [(r["command"], r["backend"], r["first_trial"], r["trials"])
            for r in study.user_attrs["commands"]] == [("local toy", "local", 0, 2),
                                                       ("ray toy", "ray", 2, 2)]
    assert "ray toy" in get_note(optuna.Trial(study, study.trials[3]._trial_id))


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def dashboard(made_twice) -> Iterator[str]:
    """The dashboard on the study made twice, on a free port."""
    with dashboard_server(made_twice["storage_url"]) as url:
        yield url


def test_the_dashboard_shows_the_trial_note_with_its_previews(dashboard: str,
                                                              tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1500"):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # The images inside the note: those after its heading, once every one has loaded.
    script = """
        const heading = [...document.querySelectorAll('h3')]
            .find(h => h.textContent.startsWith('Trial 2: '));
        if (!heading) return null;
        const images = [...heading.parentElement.querySelectorAll('img')];
        return images.every(i => i.complete) ? images.map(i => i.naturalWidth) : null;"""
    try:
        browser.get(f"{dashboard}studies/1/trials?numbers=2")
        widths = WebDriverWait(browser, 90, poll_frequency=0.5).until(
            lambda driver: driver.execute_script(script))
        assert widths == [640, 640, 640, 720], widths  # the previews, drawn at their size
        text = browser.find_element("tag name", "body").text
        assert "final metric" in text and RUN_B in text
        browser.save_screenshot(str(tmp_path / "trial-note.png"))
        print(f"screenshot: {tmp_path / 'trial-note.png'}")
    finally:
        browser.quit()
