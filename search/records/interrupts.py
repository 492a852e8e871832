"""Ctrl-C and SIGTERM that never cut a storage write in half.

A ``KeyboardInterrupt`` raised in the middle of a database transaction can leave the session
unusable, so the trial's FAIL record that should follow is lost. Here the signal handler only
raises when the main thread is not inside a ``deferred()`` block; inside one, it notes the
signal and the block raises ``KeyboardInterrupt`` when it ends. (Blocking the signal with
``pthread_sigmask`` would not do: another thread would take it and Python would still run the
handler in the main thread.) ``protect_storage`` wraps every method of a storage in
``deferred()``. After the first interrupt, later ones are ignored while the run records its
trials as FAIL and exits.

Python swallows an exception raised where it cannot propagate: a weakref callback or a
``__del__`` run by the garbage collector prints "Exception ignored in ..." and goes on. An
interrupt that lands there would be lost (measured: 1 SIGTERM in 30 let a run finish with
exit 0), so the run's loops call ``check()`` at every epoch report and every deal, which
raises it again.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import optuna

_state = {"depth": 0, "pending": False, "interrupted": False}


def install(signals: tuple[int, ...] = (signal.SIGINT,)) -> dict[int, Any]:
    """Handle ``signals`` with the deferring handler and forget earlier interrupts; return
    the previous handlers (for ``restore``). Does nothing outside the main thread."""
    _state.update(depth=0, pending=False, interrupted=False)
    previous: dict[int, Any] = {}
    for signum in signals:
        try:
            previous[signum] = signal.signal(signum, _handler)
        except ValueError:  # not the main thread: signals are not ours to handle
            break
    return previous


def restore(previous: dict[int, Any]) -> None:
    """Put back the handlers ``install`` replaced."""
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _handler(_signum: int, _frame: object) -> None:
    if _state["interrupted"]:
        return  # the run is already stopping: let it record its trials
    if _state["depth"]:
        _state["pending"] = True
        return
    _state["interrupted"] = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold an interrupt until the block ends, then raise it (main thread only: signal
    handlers run there; other threads, such as heartbeats, pass straight through)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if _state["depth"] == 0 and _state["pending"] and not _state["interrupted"]:
            _state["pending"] = False
            _state["interrupted"] = True
            raise KeyboardInterrupt


def check() -> None:
    """Raise ``KeyboardInterrupt`` if this process was interrupted (main thread only): an
    interrupt the garbage collector swallowed still stops the run at its next check."""
    if _state["interrupted"] and threading.current_thread() is threading.main_thread():
        raise KeyboardInterrupt


def interrupted() -> bool:
    """Whether this process has been interrupted."""
    return bool(_state["interrupted"])


def protect_storage(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """Make each of ``storage``'s public methods run inside ``deferred()`` (in place)."""
    for name in dir(optuna.storages.BaseStorage):
        if name.startswith("_") or not callable(getattr(storage, name, None)):
            continue
        setattr(storage, name, _deferring(getattr(storage, name)))
    return storage


def _deferring(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with deferred():
            return method(*args, **kwargs)

    return wrapper
