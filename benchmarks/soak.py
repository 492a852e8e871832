"""Soak test: several commands with several workers on one storage, workers killed at random.

Runs 4 ``search.run`` commands x 2 jobs on one toy grid study in one SQLite file, then on
PostgreSQL, while a killer sends ``kill -9`` to a random busy worker every few seconds and the
dashboard's API is polled throughout. When they are done, one more command runs the points
whose workers were killed (a point that failed in a run waits for the next run). Then it
prints, per storage: grid points asked, trials COMPLETE+PRUNED, FAIL, stuck RUNNING, points
run twice, points never run, lock errors, dashboard errors and the wall time.

    python benchmarks/soak.py                 # the full soak: a few hundred trials per storage
    python benchmarks/soak.py --short         # the CI form (under 2 minutes); exits 1 unless
                                              # 0 stuck, 0 duplicates, 0 missing, 0 lock errors
                                              # (and 0 failed dashboard polls)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from search.records.liveness import OWNER_ATTR  # noqa: E402
from search.records.storage import open_storage  # noqa: E402

POSTGRES_URL = os.environ.get("HPSEARCH_TEST_POSTGRES",
                              "postgresql://postgres@127.0.0.1:5432/test")
LOCK_WORDS = ("database is locked", "UniqueViolation", "IntegrityError", "already exists",
              "deadlock", "Traceback")


def write_study(folder: Path, points: int, sleep_s: float) -> Path:
    path = folder / "soak.yaml"
    values = [round(i * 0.01, 2) for i in range(points)]
    path.write_text("description: soak grid\nobjective: toy\nmetric: val_loss\n"
                    f"direction: minimize\nfixed: {{steps: 4, sleep_s: {sleep_s}}}\n"
                    f"grid: {{x: {values}}}\n")
    return path


class Killer(threading.Thread):
    """Every ``every`` seconds, ``kill -9`` one worker that runs a trial (never a parent)."""

    def __init__(self, url: str, name: str, parents: set[int], every: float):
        super().__init__(daemon=True)
        self.url, self.name, self.parents, self.every = url, name, parents, every
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        storage = open_storage(self.url)
        while not self.stop.wait(self.every):
            try:
                study = optuna.load_study(study_name=self.name, storage=storage)
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            except Exception:
                continue
            pids = {t.system_attrs.get(OWNER_ATTR, {}).get("pid") for t in running} - self.parents
            pids.discard(None)
            if pids:
                pid = random.choice(sorted(pids))
                try:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
                except ProcessLookupError:
                    pass


class DashboardPoller(threading.Thread):
    """Serve the dashboard on the storage and GET its study list throughout."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "search.dashboard", "--storage", url, "--port", "0"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = self.process.stdout.readline() if self.process.stdout else ""
        self.address = first.split(" on ", 1)[-1].strip().removesuffix("/dashboard/")
        self.polls = 0
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        if not self.address.startswith("http"):
            self.errors.append(f"dashboard did not start: {self.address!r}")
            return
        while not self.stop.wait(0.5):
            try:
                with urllib.request.urlopen(f"{self.address}/api/studies", timeout=10) as r:
                    json.loads(r.read())
                self.polls += 1
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=15)
        self.process.terminate()
        self.process.wait(timeout=15)


def soak(url: str, label: str, points: int, commands: int, jobs: int, kill_every: float,
         sleep_s: float, folder: Path, data_dir: str) -> dict[str, object]:
    name = f"soak-{uuid.uuid4().hex[:8]}"
    study_file = write_study(folder, points, sleep_s)
    run = [sys.executable, "-m", "search.run", "--study", str(study_file), "--study-name",
           name, "--storage", url, "--data-dir", data_dir, "--no-progress",
           "--artifact-dir", str(folder / "artifacts")]
    start = time.perf_counter()
    processes = [subprocess.Popen([*run, "--jobs", str(jobs)], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(commands)]
    while True:  # the dashboard needs the storage to exist
        try:
            optuna.load_study(study_name=name, storage=open_storage(url))
            break
        except (KeyError, Exception):
            time.sleep(0.3)
    dashboard = DashboardPoller(url)
    dashboard.start()
    killer = Killer(url, name, {p.pid for p in processes}, kill_every)
    killer.start()
    outputs = [p.communicate(timeout=1800) for p in processes]
    killer.stop.set()
    killer.join(timeout=10)
    sweep = subprocess.run(run, cwd=REPO,
                           capture_output=True, text=True, timeout=1800)
    outputs.append((sweep.stdout, sweep.stderr))
    dashboard.close()
    seconds = time.perf_counter() - start

    trials = optuna.load_study(study_name=name, storage=open_storage(url)).trials
    done = Counter(t.params.get("x") for t in trials
                   if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    stderr = "\n".join(err for _, err in outputs)
    result: dict[str, object] = {
        "storage": label,
        "points": points,
        "complete+pruned": sum(done.values()),
        "fail": sum(t.state == TrialState.FAIL for t in trials),
        "stuck": sum(t.state == TrialState.RUNNING for t in trials),
        "twice": sum(count > 1 for count in done.values()),
        "missing": points - len(done),
        "killed": len(killer.killed),
        "lock_errors": sum(stderr.count(word) for word in LOCK_WORDS),
        "exit_codes": [p.returncode for p in processes] + [sweep.returncode],
        "dashboard_polls": dashboard.polls,
        "dashboard_errors": len(dashboard.errors),
        "seconds": round(seconds, 1),
    }
    if result["lock_errors"]:
        print(stderr[-3000:], file=sys.stderr)
    for (out, err), code in zip(outputs, result["exit_codes"], strict=True):  # type: ignore[call-overload]
        if code != 0:
            print(f"a command exited {code}:", (out + err)[-600:], file=sys.stderr)
    if dashboard.errors:
        print("dashboard:", dashboard.errors[:3], file=sys.stderr)
    if url.startswith("postgresql"):
        optuna.delete_study(study_name=name, storage=open_storage(url))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the CI form, with assertions")
    parser.add_argument("--storage", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--points", type=int, help="grid points (default 300, short 30)")
    parser.add_argument("--commands", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--kill-every", type=float, help="seconds between kills (default 3)")
    parser.add_argument("--data-dir", default=os.environ.get("HPSEARCH_DATA", "data"))
    args = parser.parse_args()
    points = args.points or (30 if args.short else 300)
    kill_every = args.kill_every or (2.0 if args.short else 3.0)
    sleep_s = 0.05
    load = os.getloadavg()[0]
    print(f"soak: {args.commands} commands x {args.jobs} jobs, {points} grid points per storage, "
          f"kill -9 of a worker every {kill_every}s; load average {load:.2f} on "
          f"{os.cpu_count()} CPUs")
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)  # the toy objective reads no data
    kinds = ["sqlite", "postgresql"] if args.storage == "both" else [args.storage]
    results = []
    with tempfile.TemporaryDirectory(prefix="hpsearch-soak-") as tmp:
        for kind in kinds:
            folder = Path(tmp) / kind
            folder.mkdir()
            url = f"sqlite:///{folder / 'soak.db'}" if kind == "sqlite" else POSTGRES_URL
            results.append(soak(url, kind, points, args.commands, args.jobs, kill_every,
                                sleep_s, folder, args.data_dir))
    keys = list(results[0])
    print(" | ".join(keys))
    for result in results:
        print(" | ".join(str(result[k]) for k in keys))
    # Exit codes are shown, not judged: a command whose every trial was killed exits 1.
    bad = [r for r in results if r["stuck"] or r["twice"] or r["missing"] or r["lock_errors"]
           or r["dashboard_errors"]]
    if bad:
        print(f"FAILED: {len(bad)} storage(s) lost, duplicated or stuck trials, or hit errors")
        return 1 if args.short else 0
    print("ok: 0 stuck, 0 run twice, 0 missing, 0 lock errors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
