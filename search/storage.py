"""Open an Optuna storage from a URL, and find the artifact folder that goes with it.

SQLite is set up for several writers: WAL journal mode, ``synchronous=NORMAL`` and a long busy
timeout, so several worker processes never fail with "database is locked". A URL of the form
``journal:///path/file.log`` (or a path ending in ``.log``) opens a journal file.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from objectives.errors import ConfigError

DEFAULT_STORAGE = "sqlite:///studies.db"
SQLITE_BUSY_TIMEOUT_S = 120


def open_storage(url: str) -> BaseStorage:
    """An Optuna storage for ``url`` (sqlite, postgresql, mysql or journal)."""
    journal_path = _journal_path(url)
    if journal_path is not None:
        journal_path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(journal_path)))
    if "://" not in url:
        raise ConfigError(f"--storage {url!r} is not a storage URL; use for example "
                          "sqlite:///studies.db, postgresql://user@host/db or journal:///file.log")
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            storage = RDBStorage(url, engine_kwargs={
                "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}})
            _tune_sqlite(storage)
            return storage
        return RDBStorage(url, heartbeat_interval=None)
    except ImportError as exc:
        raise ConfigError(f"--storage {url!r} needs a database driver that is not installed "
                          f"({exc}); for PostgreSQL run pip install 'psycopg[binary]'") from None
    except Exception as exc:  # SQLAlchemy's errors: unreachable server, bad URL, bad file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open storage {url!r}: {first_line}; check the URL and that "
                          "the database is reachable") from None


def _tune_sqlite(storage: RDBStorage) -> None:
    from sqlalchemy import event

    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(storage.engine, "connect", on_connect)
    storage.engine.dispose()  # reconnect so every pooled connection gets the pragmas


def _journal_path(url: str) -> Path | None:
    if url.startswith("journal:///"):
        return Path(url.removeprefix("journal:///"))
    if "://" not in url and url.endswith((".log", ".journal")):
        return Path(url)
    return None


def artifact_dir_for(url: str) -> Path:
    """The artifact folder beside a file storage (``studies.db`` -> ``studies-artifacts/``),
    or ``./artifacts`` for a database server."""
    path = _journal_path(url)
    if path is None and url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
    if path is None:
        return Path("artifacts")
    return path.with_name(path.stem + "-artifacts")


def load_existing_study(study_name: str, url: str) -> optuna.Study:
    """Load a study that must already exist; a ConfigError lists the studies in the storage."""
    storage = open_storage(url)
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        raise ConfigError(f"no study named {study_name!r} in {url}; studies there: "
                          f"{', '.join(sorted(names)) or 'none'} (run it with search.run first)")
    return optuna.load_study(study_name=study_name, storage=storage)


def require_existing_storage(url: str) -> None:
    """For a file storage (SQLite or journal), a ConfigError when the file does not exist
    (opening it would create an empty one)."""
    path = _journal_path(url)
    if path is None and url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
    if path is not None and not path.is_file():
        raise ConfigError(f"no study storage at {path}; run a study first (python -m search.run "
                          "--study NAME) or pass --storage")
