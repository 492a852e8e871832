"""A stop is never lost: interrupts that Python swallows, and interrupts before any trial.

The signal handler raises ``KeyboardInterrupt`` wherever the main thread is. Where Python
cannot propagate an exception (a weakref callback, a ``__del__`` run by the garbage collector)
it prints "Exception ignored" and goes on, so the run checks again at every epoch report and
every deal. A stop during start-up ends with one line, not a traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import weakref

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore

from search.driver.trial import TrialReporter
from search.records import interrupts
from search.records.storage import open_storage
from tests.cli_helpers import REPO

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def usr1_interrupts():
    """SIGUSR1 as this process's interrupt signal; forgotten afterwards."""
    previous = interrupts.install((signal.SIGUSR1,))
    yield
    interrupts.restore(previous)
    interrupts.install(())  # forget the interrupt


def _interrupt_inside_a_weakref_callback() -> None:
    class Thing:
        pass

    def callback(_ref: weakref.ref) -> None:
        os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs here, inside the callback
        sum(range(1000))

    thing = Thing()
    ref = weakref.ref(thing, callback)
    del thing  # the callback's KeyboardInterrupt is printed as "Exception ignored" and dropped
    assert ref() is None


def test_an_interrupt_swallowed_by_a_weakref_callback_is_raised_at_the_next_check(
        usr1_interrupts):
    _interrupt_inside_a_weakref_callback()  # returns: the interrupt did not propagate
    assert interrupts.interrupted()
    with pytest.raises(KeyboardInterrupt):
        interrupts.check()


def test_a_trial_reporter_stops_at_the_next_epoch_after_a_swallowed_interrupt(
        usr1_interrupts, tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    trial = study.ask()
    reporter = TrialReporter(trial, "val_accuracy", FileSystemArtifactStore(str(tmp_path)))
    reporter.report(0, {"val_accuracy": 0.5})
    _interrupt_inside_a_weakref_callback()
    with pytest.raises(KeyboardInterrupt):
        reporter.report(1, {"val_accuracy": 0.6})
    assert study.trials[0].intermediate_values == {0: 0.5}  # epoch 1 was not recorded


def test_sigterm_during_start_up_is_one_line_and_exit_130(data_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'start.db'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "search.run", "--study", "mlp_demo", "--trials", "2",
         "--storage", url, "--data-dir", str(data_dir), "--no-progress"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:  # the header is printed just before the run starts
            if line.startswith("storage "):
                break
        os.kill(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    storage = open_storage(url)
    if "mlp_demo" in optuna.get_all_study_names(storage):  # it may stop before creating it
        study = optuna.load_study(study_name="mlp_demo", storage=storage)
        assert all(t.state.is_finished() for t in study.trials)  # a started trial is FAIL
