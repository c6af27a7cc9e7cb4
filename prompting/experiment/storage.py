"""The optuna storage that sweeps and many-worker runs share: SQLite on one machine, PostgreSQL on many.

    storage = open_storage("sqlite:///runs/demo/sweep.db")      # heartbeats, retries, atomic claims
    engine_url("postgresql://user:pw@db:5432/runs")              # checked before any model loads
"""

from __future__ import annotations

import importlib.util
import random
import time
import warnings
from pathlib import Path
from typing import Any

from prompting.core.paths import os_error_message

__all__ = ["StorageError", "shown_url", "default_storage", "open_storage", "engine_url", "retry_trial"]

SCHEMA_ATTEMPTS = 8  # workers started together race to create a new storage's tables


class StorageError(RuntimeError):
    """A database URL or storage that cannot be used by every worker."""


def shown_url(url: str) -> str:
    """A storage URL without its password (``***`` in its place), also when it does not parse."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        if "@" not in (parsed.host or ""):  # an "@" left in the host: the password had one, unescaped
            return parsed.render_as_string(hide_password=True)
    except Exception:
        pass
    # whatever stands before the last "@" may hold a password: never print it
    text = str(url)
    if "@" not in text:
        return text
    scheme, sep, rest = text.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}" if sep else f"***@{text.rpartition('@')[2]}"


def default_storage(output_dir: str | Path) -> str:
    return "sqlite:///" + str((Path(output_dir) / "sweep.db").resolve())


def open_storage(url: str, heartbeat_interval: int = 30, grace_period: int = 120, max_retry: int = 3):
    """An optuna RDB storage with heartbeats: a trial whose worker stops beating for ``grace_period``
    seconds is failed and its parameters are queued again (at most ``max_retry`` times)."""
    import optuna

    shown = shown_url(url)
    url, engine_kwargs = engine_url(url)
    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)  # optuna >= 4.9
    with warnings.catch_warnings():  # heartbeats are "experimental" in optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = {"heartbeat_stale_trial_callback": retry(max_retry=max_retry)} if retry else \
            {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)}
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                     heartbeat_interval=heartbeat_interval,
                                                     grace_period=grace_period, **callback)
            if storage.engine.dialect.name == "sqlite":
                _immediate_transactions(storage.engine)
            return storage
        except Exception as err:  # sqlalchemy/driver errors: no server, wrong password, no such database...
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if attempt + 1 < SCHEMA_ATTEMPTS and _schema_race(first):
                time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))
                continue
            raise StorageError(f"cannot open storage {shown!r}: {first}; check that the database can be reached "
                               "from here and that the URL's host, port, user, password and database are right") from None


def _immediate_transactions(engine) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    Python's sqlite3 module starts a transaction only at the first write, so optuna's read-then-write
    steps (claim a WAITING trial, fail a stale one) are not atomic there: two workers both read
    WAITING and both move the trial to RUNNING (measured: 202 claims of 200 trials by 3 processes).
    ``BEGIN IMMEDIATE`` serialises those steps, as ``SELECT ... FOR UPDATE`` does on PostgreSQL.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # SQLAlchemy says when a transaction begins, not sqlite3

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # the connections made while the tables were created had sqlite3's own habit


def engine_url(url: str) -> tuple[str, dict[str, Any]]:
    """The URL SQLAlchemy is given (the driver spelled out) and the engine's settings, after checking
    that it names a database every worker can share."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    valid = "sqlite:///PATH/sweep.db (one machine) or postgresql://USER:PASSWORD@HOST:PORT/DATABASE (many)"
    if not isinstance(url, str) or "://" not in url:
        raise StorageError(f"storage {shown_url(url)!r} is not a database URL; use {valid}")
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as err:
        why = str(err).replace(url, shown_url(url))  # the parser's message may quote the URL, password and all
        raise StorageError(f"storage {shown_url(url)!r} is not a valid database URL ({why}); use {valid}") from None
    shown = shown_url(url)
    dialect = parsed.get_backend_name()
    if dialect == "postgres":
        raise StorageError(f"storage {shown!r}: write postgresql://, not postgres://")
    if dialect not in ("sqlite", "postgresql", "mysql"):
        raise StorageError(f"storage {shown!r}: {dialect!r} is not a supported database; use {valid}")
    if dialect == "sqlite" and _in_memory(parsed):
        # each connection (every worker, and each heartbeat thread) would get its own empty database,
        # and the study would vanish when the process ends
        raise StorageError(f"storage {shown!r} is an in-memory SQLite database, which no other worker or thread "
                         "can see and which is gone at exit; give a file: sqlite:///PATH/sweep.db "
                         "(or leave --storage out for OUTPUT_DIR/sweep.db)")
    engine_kwargs: dict[str, Any] = {}
    if dialect == "postgresql":
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; ours is psycopg2 (the postgres extra)
        chosen = [parsed.get_driver_name()] if "+" in parsed.drivername else ["psycopg2", "psycopg"]
        driver = next((d for d in chosen if importlib.util.find_spec(d) is not None), None)
        if driver is None:
            raise StorageError(f"storage {shown!r} needs the {chosen[0]} driver: pip install 'prompting[postgres]'")
        url = parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)
        # long trials leave pooled connections idle: check them before use; fail fast on a dead host
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    if dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
        _database_folder(Path(parsed.database).expanduser(), shown)
    return url, engine_kwargs


def _database_folder(database: Path, shown: str) -> None:
    """Make the folder of a SQLite database; a file in its place is named."""
    folder = database.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise StorageError(f"storage {shown!r}: {str(blocking)!r} is a file, not a folder, so the database "
                               f"{str(database)!r} cannot be made there; give a path in a folder "
                               "(sqlite:///PATH/runs.db)") from None
        raise StorageError(f"storage {shown!r}: {os_error_message(err)}") from None


def _schema_race(message: str) -> bool:
    """Whether opening a storage failed because another worker was creating its tables at the same
    moment (optuna creates the schema on first use): then the next try finds them made."""
    return any(m in message for m in ("already exists", "UNIQUE constraint failed", "database is locked",
                                      "duplicate key value"))


def _in_memory(parsed) -> bool:
    database = parsed.database or ""
    return database in ("", ":memory:") or database.startswith("file::memory:") or \
        parsed.query.get("mode") == "memory"


def retry_trial(study, trial, max_retry: int) -> None:
    """Queue a failed trial's parameters again, as the heartbeat callback does for a dead worker."""
    import optuna

    retry = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or \
        optuna.storages.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry(max_retry=max_retry)(study, trial)
