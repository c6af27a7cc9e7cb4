"""Run records: an append-only JSON-lines store, resume by run id, and aggregation.

Every finished run is one line of ``results.jsonl``, written (and flushed to disk) as soon as
the run ends; a run whose id is already in the file is skipped when the experiment is started
again, and a run that another process is running is left to it (see :class:`prompting.experiment.claims.Claims`). Which run the seed search selects is derived from the records when they are read
(the best dev score of a data split), so the file never needs rewriting.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from prompting.core.paths import atomic_write, naming, slug
from prompting.experiment.claims import Claims

try:  # POSIX; elsewhere appends rely on O_APPEND alone
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = ["ResultsFileError", "ResultsStore", "gold_indices", "json_default", "REQUIRED"]


class ResultsFileError(ValueError):
    """A results file with a line that is not a complete run record."""


REQUIRED = ("run_id", "task", "method", "label", "template", "verbalizer", "model", "k", "data_seed",
            "train_seed", "dev", "test")


class ResultsStore:
    """``results.jsonl`` in a directory, plus ``predictions/RUN_ID.json`` label scores.

    Several processes may share one directory: appends and reads take an ``flock`` on the file (a
    reader never sees half a line being written), predictions are written under a unique temporary
    name and renamed into place, and :attr:`claims` lets each run be run by one process at a time.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / "results.jsonl"
        self._claims = None
        self._shared = None

    @property
    def claims(self):
        """Per-run claims shared by every process using this directory: files (``.claims/RUN_ID.claim``),
        or the runs of a study that every worker shares (see :meth:`share`)."""
        if self._claims is None:
            self._claims = Claims(self.directory / ".claims")
        return self._claims

    def share(self, claims) -> None:
        """Claim runs with ``claims`` (:class:`prompting.experiment.workers.StudyClaims`), which also hold the runs
        that other workers recorded: :meth:`record` copies those into this directory when asked for."""
        self._claims = self._shared = claims

    def _lines(self) -> tuple[list[bytes], bool]:
        """The file's lines (without their newlines) and whether its last line ends with one."""
        if not self.path.exists():
            return [], True
        with open(self.path, "rb") as f:
            with _locked(f, shared=True):
                data = f.read()
        return data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"), data.endswith(b"\n")

    def records(self) -> list[dict]:
        """Every run record, in file order. A run id recorded twice (two processes ran the same
        experiment into one directory at once) counts once: the first record is kept."""
        lines, terminated = self._lines()
        out, seen = [], set()
        for n, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            record = self._parse(raw, n, last=n == len(lines) and not terminated)
            if record["run_id"] not in seen:
                seen.add(record["run_id"])
                out.append(record)
        return out

    def _parse(self, raw: bytes, n: int, last: bool) -> dict:
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            why = (f"{err.msg} at column {err.colno}" if isinstance(err, json.JSONDecodeError)
                   else f"not UTF-8 text at byte {err.start}")
            if last:  # only the end of the file can be a write that a killed process left unfinished
                raise ResultsFileError(
                    f"{self.path}: line {n} is not a complete JSON record ({why}); it is the last line and "
                    "does not end the file with a newline, so it was probably cut off when a run was killed. Delete that line to re-run that one run; every other "
                    "line is kept") from None
            raise ResultsFileError(
                f"{self.path}: line {n} is not a JSON record ({why}); the file was damaged or edited by hand "
                "(a killed run only ever cuts the last line). Restore that line from a copy, or delete it "
                "to re-run that one run") from None
        if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
            missing = [k for k in REQUIRED if not isinstance(record, dict) or k not in record]
            raise ResultsFileError(
                f"{self.path}: line {n} is not a run record (missing {', '.join(missing)}); "
                f"each line needs {', '.join(REQUIRED)}")
        return record

    def done(self) -> set[str]:
        """The ids of the recorded runs."""
        return {r["run_id"] for r in self.records()}

    def record(self, rid: str) -> dict | None:
        """The record of run ``rid`` (its first), or None if it is not recorded. Only the lines that
        mention the id are parsed, so asking after every run stays cheap in a long file. A run that
        another worker of a shared study recorded is copied in from the study."""
        found = self._find(rid)
        if found is None and self._shared is not None:
            stored = self._shared.stored(rid)
            if stored is not None:
                record, predictions = stored
                if predictions is not None:
                    self.save_predictions(rid, predictions)
                self.append(record, once=True)
                found = record
        return found

    def _find(self, rid: str) -> dict | None:
        needle = json.dumps(rid).encode()
        lines, terminated = self._lines()
        for n, raw in enumerate(lines, 1):
            if needle in raw:
                record = self._parse(raw, n, last=n == len(lines) and not terminated)
                if record["run_id"] == rid:
                    return record
        return None

    def append(self, record: dict, once: bool = False) -> None:
        """Add one record as one line, flushed to disk; with ``once``, only if its run id is not
        recorded yet (checked under the same lock as the write)."""
        missing = [k for k in REQUIRED if k not in record]
        if missing:
            raise ValueError(f"run record lacks {', '.join(missing)}")
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True, default=json_default) + "\n"
        # one write of the whole line, then fsync: a killed process leaves whole lines behind
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            with naming(self.path), _locked(fd):
                size = os.fstat(fd).st_size
                if once and size and self._holds(os.pread(fd, size, 0), record["run_id"]):
                    return
                # a file that does not end with a newline (a record cut after its closing brace, or an
                # edit) would have this record joined onto its last line: start a line of our own
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = "\n" + line
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _holds(data: bytes, rid: str) -> bool:
        """Whether the file's bytes ``data`` hold a record of run ``rid``."""
        needle = json.dumps(rid).encode()
        for raw in data.split(b"\n"):
            if needle in raw:
                try:
                    if json.loads(raw).get("run_id") == rid:
                        return True
                except (ValueError, AttributeError):
                    continue  # a damaged line: records() reports it
        return False

    def _predictions_path(self, rid: str) -> Path:
        if not isinstance(rid, str) or slug(rid) != rid:  # run ids are hex digests; never a path
            raise ValueError(f"run id {rid!r} is not valid; a run id is letters, digits, '_', '.' and '-'")
        return self.directory / "predictions" / f"{rid}.json"

    def save_predictions(self, rid: str, scores: dict[str, list]) -> None:
        """Write a run's label scores (a unique temporary file renamed into place: two processes
        saving at once, or a reader, never meet a half-written file)."""
        path = self._predictions_path(rid)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(scores))

    def load_predictions(self, rid: str) -> dict[str, list] | None:
        """A run's saved label scores, or None if there are none."""
        try:
            path = self._predictions_path(rid)
        except ValueError:
            return None
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            why = (f"{err.msg} at line {err.lineno} column {err.colno}" if isinstance(err, json.JSONDecodeError)
                   else f"not UTF-8 text at byte {err.start}")
            raise ResultsFileError(
                f"{path} is not complete JSON ({why}): it was cut off or damaged. Delete it: the run's record in "
                f"{self.path} stays (without the label scores that calibration, ensembles and the report's "
                "intervals use); or delete it and the run's line in results.jsonl to run it again") from None


@contextmanager
def _locked(file, shared: bool = False):
    """An advisory ``flock`` on an open file (object or descriptor) for the block; none without fcntl."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = file if isinstance(file, int) else file.fileno()
    fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def json_default(value):
    """How a record's values that JSON has no type for are written (tensors' items, sets as lists)."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


def gold_indices(saved: dict, split: str = "test") -> list[int]:
    """A predictions file's gold labels of ``split`` as column indices of its scores (-1: unknown).
    Files store them by name beside ``labels``, the scores' column order; files written before that
    store the indices themselves."""
    gold = saved.get(f"{split}_gold") or []
    labels = saved.get("labels")
    if labels is None:
        return [int(g) for g in gold]
    index = {label: i for i, label in enumerate(labels)}
    return [index.get(g, -1) for g in gold]


