"""Many workers for ``prompting run``: the planned runs as units of work in an optuna study.

    prompting run CONFIG --output-dir DIR --workers 4                     # SQLite: DIR/.workers/runs.db
    prompting run CONFIG --output-dir DIR --workers 2 --devices cuda:0,cuda:1   # one GPU per worker
    prompting run CONFIG --output-dir DIR --storage postgresql://USER:PW@HOST:5432/DB   # on each machine

The harness claims every run before it starts it. Without ``--storage`` the claims are files in the
output folder (:class:`prompting.experiment.claims.Claims`); with it they are :class:`StudyClaims`: each planned
run is a trial of the study ``CONFIG_NAME-runs`` (user attribute ``run_id``), queued once by the first
worker that plans it. A worker claims a run by moving its trial from WAITING to RUNNING (the database
lets exactly one worker do that), sends heartbeats while it runs it, and completes the trial with the
run's record and label scores as user attributes. A worker that dies stops beating; once
``grace_period`` seconds have passed, the next worker that looks fails its trial and queues the run
again (optuna's heartbeat callback), and one of the others runs it.

Records land in the output folder as usual. Where that folder is shared by every worker (one machine,
or a shared file system) it holds every run once; where it is not, each worker copies the runs the
others recorded into its own folder from the study as it waits for them, and ``prompting report DIR
--storage URL`` gathers them into any folder. Workers run the same harness on the same plan, so the
results equal a single-process run (same run ids, same numbers); each worker ends by adding the
ensembles and the report once every run it planned is recorded.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import threading
import time
import warnings
from collections import Counter
from datetime import datetime
from pathlib import Path

from prompting.core.paths import slug
from prompting.experiment.claims import Claims
from prompting.experiment.heartbeat import Heartbeat
from prompting.experiment.results import ResultsStore, json_default
from prompting.experiment.storage import open_storage, retry_trial

__all__ = ["StudyClaims", "share_runs", "gather", "study_name"]

BUSY_ATTEMPTS = 40  # SQLite answers "database is locked" when two workers write at the same moment
PLAN_WAIT = 300.0  # seconds a worker waits for another to finish queueing the plan


def study_name(config_name: str) -> str:
    """The study that holds a config's runs."""
    return f"{slug(config_name)}-runs"


def _busy(err: Exception) -> bool:
    text = f"{err} {err.__cause__}"
    return "database is locked" in text or "could not serialize" in text or "deadlock detected" in text


def _retrying(call):
    """``call()``, again after a short pause while the database is busy with another worker's write."""
    for attempt in range(BUSY_ATTEMPTS):
        try:
            return call()
        except Exception as err:  # optuna wraps the driver's error in StorageInternalError
            if attempt + 1 == BUSY_ATTEMPTS or not _busy(err):
                raise
            time.sleep(0.05 * (1 + attempt % 5))


def _jsonable(value):
    return json.loads(json.dumps(value, default=json_default))


class StudyClaims:
    """Per-run claims in an optuna study: the same interface as :class:`~prompting.experiment.claims.Claims`
    (``claim``, ``release``, ``holder``, ``hold``), plus ``expect`` (queue the plan once) and
    ``stored`` (a run another worker recorded). ``store`` is the :class:`~prompting.experiment.results.ResultsStore`
    whose runs these are; claims on anything but a run (the ensembles step) stay file claims there."""

    def __init__(self, store, url: str, name: str, heartbeat: int = 30, grace_period: int = 120, max_retry: int = 3):
        if heartbeat >= grace_period:
            raise ValueError(f"--heartbeat-interval {heartbeat} must be shorter than --grace-period {grace_period} "
                             "seconds, or a live worker's runs would be taken from it between two beats")
        self.store, self.url, self.name = store, url, name
        self.heartbeat, self.grace_period, self.max_retry = heartbeat, grace_period, max_retry
        self.local = Claims(Path(store.directory) / ".claims")
        self.worker = {"pid": os.getpid(), "host": socket.gethostname()}
        self._study = None
        self._held: dict[str, int] = {}  # run id -> trial id of the runs this process holds
        self._lock = threading.Lock()
        self._heartbeat = Heartbeat(heartbeat, lambda: self._held.values(),
                                    lambda trial_id: self._storage_call("record_heartbeat", trial_id), self._lock,
                                    "runs-heartbeat")
        self._trials_read, self._trials_cache, self._stale_checked = -math.inf, [], -math.inf

    # ------------------------------------------------------------------------------ the study
    @property
    def study(self):
        if self._study is None:
            import optuna

            storage = open_storage(self.url, self.heartbeat, self.grace_period, self.max_retry)
            self._study = _retrying(lambda: optuna.create_study(study_name=self.name, storage=storage,
                                                                direction="minimize", load_if_exists=True))
            if _retrying(lambda: self._study.user_attrs).get("kind") != "runs":
                _retrying(lambda: self._study.set_user_attr("kind", "runs"))
        return self._study

    def _storage_call(self, name: str, *args, **kwargs):
        storage = self.study._storage
        return _retrying(lambda: getattr(storage, name)(*args, **kwargs))

    def _trials(self, fresh: bool = False) -> list:
        """The study's trials that are not failed (read at most once a second unless ``fresh``)."""
        from optuna.trial import TrialState

        if fresh or time.monotonic() - self._trials_read > 1.0:
            states = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
            self._trials_cache = self._storage_call("get_all_trials", self.study._study_id, deepcopy=False,
                                                    states=states)
            self._trials_read = time.monotonic()
        return self._trials_cache

    def _of(self, key: str, fresh: bool = False) -> list:
        return [t for t in self._trials(fresh) if t.user_attrs.get("run_id") == key]

    def expect(self, work: dict[str, str], skip=()) -> None:
        """Queue a trial for every run of ``work`` (run id -> what it is) the study does not have yet,
        except those in ``skip`` (already recorded in the output folder).
        Workers that start together plan the same runs: the first to create the plan's marker study
        queues them, the others wait until it has."""
        from optuna.exceptions import DuplicatedStudyError
        from optuna.study import StudyDirection

        self._complete_recorded({key: work[key] for key in skip if key in work})
        digest = hashlib.sha256(json.dumps(sorted(work)).encode()).hexdigest()[:12]
        done = f"planned-{digest}"
        if done in _retrying(lambda: self.study.user_attrs):
            return
        try:
            self._storage_call("create_new_study", [StudyDirection.MINIMIZE], f"{self.name}:plan-{digest}")
        except DuplicatedStudyError:
            self._wait_for_plan(done)
            return
        known = {t.user_attrs.get("run_id") for t in self._trials(fresh=True)}
        for key, what in work.items():
            if key not in known and key not in skip:
                self._queue(key, what)
        _retrying(lambda: self.study.set_user_attr(done, len(work)))

    def _complete_recorded(self, recorded: dict[str, str]) -> None:
        """Runs recorded in this folder whose trial never completed (a worker killed after recording a
        run and before completing its trial): once that worker is gone, each trial is completed with the
        record, so that the study, and every folder that gathers from it, has the run."""
        from optuna.trial import TrialState

        if not recorded:
            return
        self._stale_checked = -math.inf
        self._fail_stale()
        states: dict[str, set] = {}
        for trial in self._trials(fresh=True):
            states.setdefault(trial.user_attrs.get("run_id"), set()).add(trial.state)
        for key, what in recorded.items():
            if states.get(key, set()) & {TrialState.COMPLETE, TrialState.RUNNING}:
                continue  # complete, or its worker may still be completing it
            record = self.store.record(key)
            if record is not None and self.claim(key, what):
                self.release(key, record)

    def _queue(self, key: str, what: str) -> None:
        import optuna

        trial = optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING,
                                          user_attrs={"run_id": key, "what": what})
        _retrying(lambda: self.study.add_trial(trial))

    def _wait_for_plan(self, done: str) -> None:
        deadline = time.monotonic() + PLAN_WAIT
        while done not in _retrying(lambda: self.study.user_attrs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"study {self.name!r}: another worker began queueing these runs {PLAN_WAIT:.0f} s "
                                   "ago and has not finished; if it was stopped, delete the study "
                                   f"(optuna delete-study --study-name {self.name!r} and {self.name!r}:plan-*)")
            time.sleep(0.2)

    # ------------------------------------------------------------------------------ claim / release
    def claim(self, key: str, what: str = "") -> bool:
        """Take run ``key``: True if this process now runs it, False while another worker does (or
        once it is recorded: :meth:`stored` then has it)."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        if key in self._held:
            return True
        self._fail_stale()
        mine = self._of(key) or self._of(key, fresh=True)  # the database decides below; the cache only saves reads
        if not mine and self._unqueued(key, what):
            self._queue(key, what)  # a run no worker planned (the plan changed), or one whose retry was lost
            mine = self._of(key, fresh=True)
        waiting = [t for t in mine if t.state == TrialState.WAITING]
        if not waiting:
            return False
        trial_id = waiting[0]._trial_id
        self._storage_call("record_heartbeat", trial_id)  # a worker that dies right after the next line goes stale
        try:
            if not self._storage_call("set_trial_state_values", trial_id, TrialState.RUNNING):
                return False  # another worker moved it first
        except UpdateFinishedTrialError:
            return False  # finished since this worker last read the trials

        self._storage_call("set_trial_user_attr", trial_id, "worker", {**self.worker, "what": what,
                                                                       "started": time.time()})
        with self._lock:
            self._held[key] = trial_id
        self._trials_read = -math.inf
        self._heartbeat.start()
        return True

    def _unqueued(self, key: str, what: str) -> bool:
        """Whether run ``key``, which has no live trial, should be queued: never tried, or its last try
        failed more than a grace period ago and the retry that should follow never came (its worker
        died in between). Raises once its retries are spent."""
        from optuna.trial import TrialState

        trials = self._storage_call("get_all_trials", self.study._study_id, deepcopy=False, states=(TrialState.FAIL,))
        failed = [t for t in trials if t.user_attrs.get("run_id") == key]
        if len(failed) > self.max_retry:
            raise RuntimeError(f"run {key} ({what}) failed {len(failed)} times (workers that died or stopped with an "
                               "error before recording it); look at what stops it (memory? the workers' output), "
                               f"then delete study {self.name!r} or give another storage")
        if not failed:
            return True
        last = max(t.datetime_complete or t.datetime_start for t in failed)
        return (datetime.now() - last).total_seconds() > self.grace_period

    def _fail_stale(self) -> None:
        """Fail the trials of workers that stopped beating and queue their runs again (at most once a second)."""
        import optuna

        if time.monotonic() - self._stale_checked < 1.0:
            return
        self._stale_checked = time.monotonic()
        with warnings.catch_warnings():  # "experimental" in optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            _retrying(lambda: optuna.storages.fail_stale_trials(self.study))

    def release(self, key: str, record: dict | None = None) -> None:
        """Give run ``key`` back: completed with its ``record`` (and saved label scores), or, without
        one, failed and queued again for whoever comes next."""
        import optuna
        from optuna.trial import TrialState

        with self._lock:
            trial_id = self._held.pop(key, None)
        if trial_id is None:
            return
        try:
            if record is not None:
                self._storage_call("set_trial_user_attr", trial_id, "record", _jsonable(record))
                predictions = self.store.load_predictions(key)
                if predictions is not None:
                    self._storage_call("set_trial_user_attr", trial_id, "predictions", _jsonable(predictions))
                self._storage_call("set_trial_state_values", trial_id, TrialState.COMPLETE,
                                   [float(record.get("seconds") or 0.0)])
            elif self._storage_call("set_trial_state_values", trial_id, TrialState.FAIL):
                retry_trial(self.study, self._storage_call("get_trial", trial_id), self.max_retry)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # this worker fell silent past the grace period: its run was failed and queued again
        self._trials_read = -math.inf

    def release_all(self) -> None:
        for key in list(self._held):
            self.release(key)

    def holder(self, key: str) -> dict | None:
        """The worker running ``key`` (pid, host, what, started), or None."""
        running = [t for t in self._of(key) if t.state.name == "RUNNING"]
        return running[0].user_attrs.get("worker") if running else None

    def hold(self, key: str, what: str = "", poll: float = 0.2, on_wait=None):
        """A claim on anything but a run (the ensembles step): a file claim in the output folder."""
        return self.local.hold(key, what, poll, on_wait)

    def stored(self, key: str) -> tuple[dict, dict | None] | None:
        """The record and label scores of run ``key`` if a worker completed it, else None."""
        done = [t for t in self._of(key) if t.state.name == "COMPLETE" and "record" in t.user_attrs]
        if not done:
            return None
        full = self._storage_call("get_trial", done[0]._trial_id)
        return full.user_attrs["record"], full.user_attrs.get("predictions")

    def unfinished(self) -> dict[str, int]:
        """How many queued runs have no completed trial, by the state of their last trial."""
        last: dict[str, object] = {}
        for trial in self._trials(fresh=True):
            key = trial.user_attrs.get("run_id")
            if key is not None and last.get(key) != "COMPLETE":
                last[key] = "COMPLETE" if trial.state.name == "COMPLETE" and "record" in trial.user_attrs \
                    else trial.state.name.lower()
        return dict(Counter(state for state in last.values() if state != "COMPLETE"))

    def completed(self) -> list[str]:
        """The run ids of every completed trial, in the order they were queued."""
        return [t.user_attrs["run_id"] for t in self._trials(fresh=True)
                if t.state.name == "COMPLETE" and "record" in t.user_attrs]


def share_runs(store, url: str, name: str, heartbeat: int = 30, grace_period: int = 120) -> StudyClaims:
    """Make ``store``'s runs claims in the study ``name`` on ``url``; returns the claims."""
    claims = StudyClaims(store, url, name, heartbeat, grace_period)
    store.share(claims)
    return claims


def gather(directory, url: str, name: str | None = None) -> tuple[int, dict[str, int]]:
    """Copy every run recorded in the run studies on ``url`` (``name``, or all of them) into
    ``directory``; returns how many were new there, and how many planned runs the studies have not
    completed, by state (running, waiting, failed)."""
    import optuna

    storage = open_storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
             if s.user_attrs.get("kind") == "runs" and (name is None or s.study_name == name)]
    if name is not None and not names:
        raise ValueError(f"--study {name!r}: the storage holds no study of runs by that name")
    new, unfinished = 0, Counter()
    for each in names:
        store = ResultsStore(directory)
        claims = share_runs(store, url, each)
        done = store.done()
        for key in claims.completed():
            if key not in done:
                store.record(key)
                new += 1
        unfinished.update(claims.unfinished())
    return new, dict(unfinished)
