"""Open an Optuna storage from a URL, lock it for claims, and find its artifact folder.

SQLite is set up for several writers: WAL journal mode, ``synchronous=NORMAL`` and a long busy
timeout, so several worker processes never fail with "database is locked" (WAL needs a local
disk: it does not work on network filesystems). PostgreSQL connections are checked before use
(``pool_pre_ping``) and time out instead of hanging. A URL of the form
``journal:///path/file.log`` (or a path ending in ``.log``) opens a journal file.

``storage_lock(url)`` is one lock per storage shared by every command on this machine (a lock
file beside a SQLite or journal file, an advisory lock on PostgreSQL): schema creation and
trial claims happen under it, so several commands starting at once neither race to create the
tables nor claim the same grid point. A storage that cannot be read (a corrupt file, a
garbled journal line) is refused on open with one line naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from objectives.errors import ConfigError

DEFAULT_STORAGE = "sqlite:///studies.db"
SQLITE_BUSY_TIMEOUT_S = 120
CONNECT_TIMEOUT_S = 10
LOCK_TIMEOUT_S = 300


def open_storage(url: str) -> BaseStorage:
    """An Optuna storage for ``url`` (sqlite, postgresql, mysql or journal), checked readable."""
    journal_path = _journal_path(url)
    if journal_path is not None:
        journal_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            storage = JournalStorage(JournalFileBackend(str(journal_path)))
            storage.get_all_studies()
            _check_journal_tail(journal_path)
        except Exception as exc:  # a garbled line: JSON, key or value errors while replaying
            raise ConfigError(f"journal file {journal_path} cannot be read ({_first_line(exc)}); "
                              "restore it from a backup or pass another --storage") from None
        return storage
    if "://" not in url:
        raise ConfigError(f"--storage {url!r} is not a storage URL; use for example "
                          "sqlite:///studies.db, postgresql://user@host/db or journal:///file.log")
    try:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        with storage_lock(url):  # several commands creating one new storage at once
            storage = _open_rdb(url)
    except ImportError as exc:
        raise ConfigError(f"--storage {url!r} needs a database driver that is not installed "
                          f"({exc}); for PostgreSQL run pip install 'psycopg[binary]'") from None
    except ConfigError:
        raise
    except Exception as exc:  # SQLAlchemy's errors: unreachable server, bad URL, bad file
        if url.startswith("sqlite:///"):
            raise ConfigError(f"SQLite file {url.removeprefix('sqlite:///')} cannot be read "
                              f"({_first_line(exc)}); restore it from a backup or pass another "
                              "--storage") from None
        raise ConfigError(f"cannot open storage {url!r}: {_first_line(exc)}; check the URL and "
                          "that the database is reachable") from None
    return storage


def _check_journal_tail(path: Path) -> None:
    """Optuna skips a bad last line (a write in progress); a complete one is corruption, and
    lines appended after it would make the whole file unreadable."""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - 65536))
        lines = handle.read().splitlines(keepends=True)
    if lines and lines[-1].endswith(b"\n") and lines[-1].strip():
        import json

        try:
            json.loads(lines[-1])
        except ValueError:
            raise ValueError(f"its last line is not a journal record: {lines[-1][:60]!r}"
                             ) from None


def _open_rdb(url: str) -> RDBStorage:
    if url.startswith("sqlite:///"):
        storage = RDBStorage(url, engine_kwargs={
            "connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}})
        _tune_sqlite(storage)
        _check_sqlite(storage)
        return storage
    engine_kwargs: dict = {"pool_pre_ping": True}  # a dropped connection is reopened
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return RDBStorage(url, engine_kwargs=engine_kwargs)


def _check_sqlite(storage: RDBStorage) -> None:
    """Refuse a SQLite file whose pages are corrupt (a valid header opens without error)."""
    from sqlalchemy import text

    with storage.engine.connect() as connection:
        result = connection.execute(text("PRAGMA quick_check")).scalars().all()
    if result != ["ok"]:
        raise ValueError(f"integrity check failed: {result[0]}")
    storage.get_all_studies()


@contextlib.contextmanager
def storage_lock(url: str) -> Iterator[None]:
    """Hold this storage's machine-wide lock (for schema creation and trial claims)."""
    path = _journal_path(url)
    if path is None and url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
    if path is not None:
        from filelock import FileLock

        lock_file = path.with_name(path.name + ".hpsearch-lock")
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_file), timeout=LOCK_TIMEOUT_S):
            yield
        return
    if url.startswith("postgresql"):
        with _advisory_lock(url):
            yield
        return
    yield  # other databases: their transactions are the only guard


_ENGINES: dict[str, object] = {}


@contextlib.contextmanager
def _advisory_lock(url: str) -> Iterator[None]:
    """A PostgreSQL session-level advisory lock keyed by the database URL."""
    import sqlalchemy

    engine = _ENGINES.get(url)
    if engine is None:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                          connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
        _ENGINES[url] = engine
    key = int.from_bytes(hashlib.sha256(b"hpsearch:" + url.encode()).digest()[:8], "big",
                         signed=True)
    with engine.connect() as connection:  # type: ignore[attr-defined]
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        try:
            yield
        finally:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
