"""Claims: which process is doing which piece of work, so that processes sharing a folder never do
the same work at once.

    claims = Claims("runs/demo/.claims")
    if claims.claim(run_id, what="PET seed 13/1"):
        try:
            ...                               # only this process runs it now
        finally:
            claims.release(run_id)
    else:
        claims.holder(run_id)                 # {"pid": ..., "host": ..., "what": ...} of the live holder

A claim is a file ``KEY.claim`` created with ``O_CREAT | O_EXCL`` (so exactly one creator wins, also
over NFS), holding the owner's pid, host, start time and a random token. It is stale, and the next
claimer takes it over, when its process is gone (same host) or when it has not been refreshed for
``stale_after`` seconds (any host: a background thread of the owner touches its claims every
``heartbeat`` seconds, so only a dead owner, or one cut off from the folder, goes stale; a hung one
keeps its claims until it is stopped). A claim file that is still empty or unreadable after
:data:`UNWRITTEN` seconds is stale too (its creator writes it at once; one killed in between leaves it
so). Taking over and releasing run under an ``flock`` on ``.guard``, so a claim is never removed
between another process's look and its move.
Nothing here knows about runs: a sweep worker can claim trials the same way.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Collection, ContextManager, Mapping, Protocol

from prompting.core.paths import naming, slug

try:  # POSIX; elsewhere the O_EXCL create alone decides, and a stale claim is taken over unguarded
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["Claims", "ClaimsBackend", "UNWRITTEN"]

UNWRITTEN = 2.0  # seconds after which a claim file that holds no owner is stale


class ClaimsBackend(Protocol):
    """What the harness asks of claims, whichever keeps them: files in the output folder
    (:class:`Claims`) or the trials of a study that many workers share
    (:class:`prompting.experiment.workers.StudyClaims`)."""

    def expect(self, work: Mapping[str, str], skip: Collection[str] = ()) -> None:
        """Know the plan before claiming (run id -> what it is; ``skip``: recorded already)."""

    def claim(self, key: str, what: str = "") -> bool:
        """Take ``key`` for this process; False while another live process holds it."""

    def release(self, key: str, record: dict | None = None) -> None:
        """Give ``key`` back (with the run's ``record`` when it was recorded)."""

    def release_all(self) -> None:
        """Give back every claim this process holds."""

    def holder(self, key: str) -> dict | None:
        """Who holds ``key`` (pid, host, what), or None."""

    def hold(self, key: str, what: str = "", poll: float = 0.2, on_wait=None) -> ContextManager:
        """Wait for ``key``, hold it for the ``with`` block."""


class Claims:
    """Exclusive, crash-tolerant claims on named pieces of work, kept as files in ``folder``."""

    def __init__(self, folder: str | Path, stale_after: float = 600.0, heartbeat: float = 60.0):
        if heartbeat >= stale_after:
            raise ValueError(f"heartbeat={heartbeat} must be shorter than stale_after={stale_after} seconds, "
                             "or a live owner's claims would go stale between two beats")
        self.folder = Path(folder)
        self.stale_after, self.heartbeat = stale_after, heartbeat
        self.host = socket.gethostname()
        self._held: dict[str, str] = {}  # key -> token of the claims this object holds
        self._lock = threading.Lock()
        self._beating: threading.Thread | None = None

    def path(self, key: str) -> Path:
        return self.folder / f"{slug(key)}.claim"

    def expect(self, work: Mapping[str, str], skip: Collection[str] = ()) -> None:
        """Files need no plan: a claim is made when a process comes to its run."""

    # ------------------------------------------------------------------------------ claim / release
    def claim(self, key: str, what: str = "") -> bool:
        """Take ``key`` for this process: True if it is now ours, False while another live process
        holds it. A stale claim (its owner died) is taken over."""
        if key in self._held:
            return True
        self._make_folder()
        path, token = self.path(key), uuid.uuid4().hex
        if not self._create(path, token, what):
            with self._guard():
                if not self._stale(path):
                    return False
                _unlink(path)
                if not self._create(path, token, what):
                    return False
        with self._lock:
            self._held[key] = token
        self._start_heartbeat()
        return True

    def release(self, key: str, record: dict | None = None) -> None:
        """Give ``key`` back (a claim this process does not hold is left alone). ``record``, what the
        work produced, is for claims that keep it (a study's); a file claim needs only to go."""
        with self._lock:
            token = self._held.pop(key, None)
        if token is None:
            return
        path = self.path(key)
        with self._guard():
            if (_read(path) or {}).get("token") == token:  # ours, not one that replaced it when ours went stale
                _unlink(path)

    def release_all(self) -> None:
        for key in list(self._held):
            self.release(key)

    @contextmanager
    def hold(self, key: str, what: str = "", poll: float = 0.2, on_wait=None):
        """Claim ``key``, waiting while another process holds it; released on leaving the block.
        ``on_wait(holder)`` is called once if it has to wait."""
        waited, delay = False, poll
        while not self.claim(key, what):
            if not waited and on_wait is not None:
                on_wait(self.holder(key))
            waited = True
            time.sleep(delay)
            delay = min(2 * delay, 5.0)
        try:
            yield
        finally:
            self.release(key)

    def holder(self, key: str) -> dict | None:
        """Who holds ``key`` (pid, host, started, what), or None when nobody does or the claim is stale;
        a claim being written this moment gives ``pid`` and ``host`` None."""
        path = self.path(key)
        if not path.exists() or self._stale(path):
            return None
        return _read(path) or {"pid": None, "host": None, "what": ""}

    # ------------------------------------------------------------------------------ internals
    def _create(self, path: Path, token: str, what: str) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        info = {"pid": os.getpid(), "host": self.host, "started": time.time(), "token": token, "what": what}
        try:
            with naming(path):
                os.write(fd, json.dumps(info).encode())
        except OSError:
            os.close(fd)
            _unlink(path)  # an empty claim would hold the work from others until it goes stale
            raise
        os.close(fd)
        # held up for longer than UNWRITTEN between creating and writing, the claim may have been taken
        # over as unwritten: then it is the other process's
        return (_read(path) or {}).get("token") == token

    def _make_folder(self) -> None:
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            # claims are bookkeeping of running processes, never results to commit
            (self.folder / ".gitignore").write_text("*\n")

    def _stale(self, path: Path) -> bool:
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True  # released meanwhile: free
        info = _read(path)
        if info is None:  # empty or unreadable: being written right now, or its creator died before writing it
            return age > UNWRITTEN
        if info.get("host") == self.host and isinstance(info.get("pid"), int) and not _alive(info["pid"]):
            return True
        return age > self.stale_after

    @contextmanager
    def _guard(self):
        if fcntl is None:  # pragma: no cover
            yield
            return
        self._make_folder()
        fd = os.open(self.folder / ".guard", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def _start_heartbeat(self) -> None:
        with self._lock:
            if self._beating is not None and self._beating.is_alive():
                return
            self._beating = threading.Thread(target=self._beat, name="claims-heartbeat", daemon=True)
            self._beating.start()

    def _beat(self) -> None:
        # touch every held claim so that other hosts see its owner alive; stop when none is held
        while True:
            time.sleep(self.heartbeat)
            with self._lock:
                held = list(self._held)
                if not held:
                    self._beating = None
                    return
            for key in held:
                try:
                    os.utime(self.path(key))
                except OSError:
                    pass  # released meanwhile, or the folder went away: nothing to keep alive


def _read(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return False
    return True
