"""The dashboard in a real headless Chromium: study page, importance, trials, note, artifacts,
and the report figures that ``reports.build --dashboard`` attached to the study.

Runs ``python -m search.dashboard`` as a subprocess on a free port over a small study made here
(its figures attached by ``python -m reports.build --dashboard`` first), and drives Debian's
chromium through chromedriver with Selenium. Screenshots are saved in the
test's temporary folder (their paths are printed; see them with ``pytest -s``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import dashboard_server
from small_study import STUDY, make_small_study

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PAGE_TIMEOUT_S = 90

if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    # Fail rather than skip: CI installs both, and a skipped browser test proves nothing.
    raise RuntimeError("the dashboard test needs chromium and chromedriver; run "
                       "bash scripts/install-system-deps.sh")


@pytest.fixture(scope="module")
def attached(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[str]]:
    """A 3-trial study with its report figures attached: (storage URL, the figures' files)."""
    folder = tmp_path_factory.mktemp("dash")
    storage_url = f"sqlite:///{folder / 'studies.db'}"
    make_small_study(data_dir, storage_url)
    build = subprocess.run(
        [sys.executable, "-m", "reports.build", "--study", STUDY, "--storage", storage_url,
         "--out", str(folder / "report"), "--no-png", "--dashboard"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    return storage_url, sorted(p.stem for p in (folder / "report" / STUDY).glob("*.html"))


@pytest.fixture(scope="module")
def dashboard_url(attached: tuple[str, list[str]]) -> Iterator[str]:
    """A dashboard serving the study, on a free port of 127.0.0.1 (read-only, the default)."""
    storage_url = attached[0]
    with dashboard_server(storage_url) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1500"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _page_text(browser, url: str, *expected: str) -> str:
    """Open ``url`` and wait until the page's text shows every ``expected`` string."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    body = ""

    def shows_all(driver) -> bool:
        nonlocal body
        body = driver.find_element("tag name", "body").text
        return all(text in body for text in expected)

    try:
        WebDriverWait(browser, PAGE_TIMEOUT_S, poll_frequency=0.5).until(shows_all)
    except Exception:
        missing = [t for t in expected if t not in body]
        raise AssertionError(f"{url} did not show {missing}; page text:\n{body[:2000]}") from None
    return body


def test_study_page_shows_history_and_importance(browser, dashboard_url: str,
                                                 tmp_path: Path) -> None:
    params = ("depth", "width", "lr", "batch_norm")
    text = _page_text(browser, f"{dashboard_url}studies/1", STUDY, "History",
                      "Hyperparameter Importance", "Intermediate values", "trial #2", *params)
    importance = text[text.index("Hyperparameter Importance"):text.index("Timeline")]
    assert all(p in importance for p in params), importance
    screenshot = tmp_path / "dashboard-study.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")


def test_trials_page_lists_trials_and_artifacts(browser, dashboard_url: str,
                                                tmp_path: Path) -> None:
    text = _page_text(browser, f"{dashboard_url}studies/1/trials", "3 Trials", "Trial 0",
                      "Trial 2", "Complete", "Intermediate Values", "batch_losses.npy",
                      "decision_boundary.npz", "decision_boundary.png", "loss_curves.png")
    assert "Best Trial" in text
    # The PNG previews are shown inline: their <img> elements load from the artifact store.
    images = browser.execute_script(
        "return [...document.images].filter(i => i.src.includes('/artifacts/'))"
        ".map(i => [i.src, i.complete && i.naturalWidth]);")
    assert len(images) >= 4 and all(width > 0 for _, width in images), images
    browser.save_screenshot(str(tmp_path / "dashboard-trials.png"))
    print(f"screenshot: {tmp_path / 'dashboard-trials.png'}")


def test_note_page_shows_description_command_and_fingerprint(browser,
                                                              dashboard_url: str) -> None:
    _page_text(browser, f"{dashboard_url}studies/1/note", "A short demo search",
               "pytest small study", "data fingerprint", "sha256:")


def test_study_page_shows_the_attached_report_figures(browser, dashboard_url: str,
                                                      attached: tuple[str, list[str]],
                                                      tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    stems = attached[1]
    assert "compute_ledger" in stems and "search_learning_curves" in stems
    _page_text(browser, f"{dashboard_url}studies/1", STUDY, "History",
               f"{STUDY}: best val_accuracy against cumulative compute",
               f"{STUDY}: learning curves", "cumulative FLOPs (estimated)")
    script = ("return [...document.querySelectorAll('[id^=\"user-defined-plot:\"]')].map(e => "
              "[e.id.split(':').slice(1).join(':'), e.querySelectorAll('.main-svg').length, "
              "e.getBoundingClientRect().height])")
    plots: list = []

    def all_drawn(driver) -> bool:
        nonlocal plots
        plots = driver.execute_script(script)
        return len(plots) == len(stems) and all(svgs > 0 for _, svgs, _ in plots)

    try:
        WebDriverWait(browser, PAGE_TIMEOUT_S, poll_frequency=0.5).until(all_drawn)
    except Exception:
        raise AssertionError(f"expected {len(stems)} drawn figures, found {plots}") from None
    # One box per figure the build wrote, each drawn by Plotly into the dashboard's box.
    assert sorted(name for name, _, _ in plots) == sorted(f"hpsearch.{s}" for s in stems)
    assert all(height > 300 for _, _, height in plots), plots
    browser.execute_script("document.getElementById('user-defined-plot:hpsearch.compute_ledger')"
                           ".scrollIntoView()")
    screenshot = tmp_path / "dashboard-figures.png"
    browser.save_screenshot(str(screenshot))
    print(f"screenshot: {screenshot}")
