"""Which process runs a trial, whether it is still alive, and its heartbeat.

Every trial this tool starts carries an owner (``OWNER_ATTR``: host, boot id, process id and
the process's start time) and, while it runs, a heartbeat (``HEARTBEAT_ATTR``: the wall-clock
time of the last beat, written every ``HEARTBEAT_INTERVAL_S`` by a thread of the process that
trains it). A RUNNING trial is stale when its owner is known dead (same host and boot, and the
process id is gone or now names another process), or, for an owner elsewhere, when its last
heartbeat is older than ``GRACE_PERIOD_S``. Both are system attributes, so they work the same
on every Optuna storage (SQLite, PostgreSQL, journal files).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

OWNER_ATTR = "hpsearch:owner"
HEARTBEAT_ATTR = "hpsearch:heartbeat"
HEARTBEAT_INTERVAL_S = 10.0
GRACE_PERIOD_S = 120.0  # beats missed for this long mean dead, for owners on other hosts


@dataclass(frozen=True)
class Owner:
    """A process, identified well enough to tell when it is gone (even after a pid reuse)."""

    host: str
    boot: str  # the kernel's boot id: a reboot ends every process of the host
    pid: int
    start: str  # the process's start time since boot (empty where unknown)

    @classmethod
    def of(cls, pid: int | None = None) -> Owner:
        """The owner record for process ``pid`` (default: this process) on this host."""
        pid = os.getpid() if pid is None else pid
        return cls(host=socket.gethostname(), boot=_boot_id(), pid=pid, start=_start_time(pid))

    @classmethod
    def from_attr(cls, value: Any) -> Owner | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(host=str(value["host"]), boot=str(value["boot"]), pid=int(value["pid"]),
                       start=str(value["start"]))
        except (KeyError, TypeError, ValueError):
            return None

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    def known_dead(self) -> bool:
        """True when this owner is on this host and its process is certainly gone."""
        if self.host != socket.gethostname():
            return False
        if self.boot and _boot_id() and self.boot != _boot_id():
            return True  # the host rebooted since
        if not _pid_exists(self.pid):
            return True
        return bool(self.start) and _start_time(self.pid) not in ("", self.start)

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}"


def stale_reason(trial: FrozenTrial, now: float | None = None) -> str | None:
    """Why a RUNNING trial is stale (its process is dead), or None while it may be alive."""
    owner = Owner.from_attr(trial.system_attrs.get(OWNER_ATTR))
    if owner is not None and owner.known_dead():
        return f"its process ({owner}) is gone"
    if owner is not None and owner.host == socket.gethostname():
        return None  # alive here: its heartbeat may lag behind a busy machine
    now = time.time() if now is None else now
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    last = float(beat) if isinstance(beat, (int, float)) else (
        trial.datetime_start.timestamp() if trial.datetime_start else None)
    if last is not None and now - last > GRACE_PERIOD_S:
        return f"no heartbeat for {now - last:.0f}s (grace period {GRACE_PERIOD_S:.0f}s)"
    return None


class Heartbeat:
    """A daemon thread that records the heartbeat of a trial (or of every trial in a live set,
    for a pack of lanes) until the ``with`` block ends."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_ids: int | set[int],
                 interval: float = HEARTBEAT_INTERVAL_S):
        self.storage = storage
        self.trial_ids = {trial_ids} if isinstance(trial_ids, int) else trial_ids
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")

    def __enter__(self) -> Heartbeat:
        self._record()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self._record()

    def _record(self) -> None:
        for trial_id in list(self.trial_ids):
            # A finished trial, or a storage hiccup: the next beat retries.
            with contextlib.suppress(Exception):
                self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())


def watch_parent(parent_pid: int, interval: float = 1.0) -> None:
    """Exit this process soon after ``parent_pid`` dies (a worker must not outlive its run)."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(interval)

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def _pid_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:  # a zombie has exited: its trial is over
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return True
    return True


def _start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot), or "" off Linux."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


_BOOT_ID: list[str] = []


def _boot_id() -> str:
    if not _BOOT_ID:
        try:
            _BOOT_ID.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        except OSError:
            _BOOT_ID.append("")
    return _BOOT_ID[0]
