"""A heartbeat: while a process holds pieces of work, a daemon thread says so every few seconds, so
that other processes can tell a live owner from a dead one."""

from __future__ import annotations

import threading
import time
from typing import Callable, Hashable, Iterable

__all__ = ["Heartbeat"]


class Heartbeat:
    """Calls ``beat(key)`` for each key ``held()`` returns, every ``interval`` seconds, from a daemon
    thread that runs while any key is held (``start`` after taking one; it stops by itself). ``lock``
    guards what ``held`` reads. A beat that fails is tried again at the next: a grace period of several
    beats covers a missed one."""

    def __init__(self, interval: float, held: Callable[[], Iterable[Hashable]], beat: Callable[[Hashable], None],
                 lock: threading.Lock, name: str = "heartbeat"):
        self.interval, self.held, self.beat, self.lock, self.name = interval, held, beat, lock, name
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self.lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            with self.lock:
                held = list(self.held())
                if not held:
                    self._thread = None
                    return
            for key in held:
                try:
                    self.beat(key)
                except Exception:  # noqa: BLE001 - released meanwhile, or a storage hiccup: the next beat tries again
                    pass
