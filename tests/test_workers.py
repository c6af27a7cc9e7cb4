"""`prompting run` workers sharing the planned runs through an optuna study (SQLite, PostgreSQL):
workers started together record every run once, equal to one process; a killed worker's run is
redone by another; ``--workers N`` starts N local workers; ``prompting report --storage`` gathers the
runs into a folder that no worker wrote."""

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from test_reliability import ENV, with_model, write_task
from test_sweep import postgres_url  # noqa: F401 - the fixture: CI's server, or a private one

TRAINED = "  - {name: soft, prompt_tokens: 2, max_steps: 2, batch_size: 2}\n" \
          "  - {name: manual, train: false, label: zero-shot ensemble, ensemble: mean}\n"
N_RUNS, N_ENSEMBLES = 12, 2  # 2 data seeds x 2 patterns x 3 method entries; one ensemble per data seed

# One interpreter imports what `prompting run` needs, then forks the workers, which wait for a common
# start second and run the command's main. Each logs the runs it computes; the worker named
# "victim" is SIGKILLed inside its first run, after claiming it.
WORKERS = """
import json, os, signal, sys, time, traceback
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot
import optuna, sqlalchemy.dialects.sqlite, sklearn.metrics
import transformers.models.llama.modeling_llama
from prompting.experiment.executor import RunExecutor
import prompting.experiment.workers
from prompting.cli import main

spec = json.loads(sys.argv[1])
folder, n, victim = Path(spec["folder"]), spec["n"], spec.get("victim")
execute = RunExecutor.execute
me = None


def logged_execute(self, planned, *args, **kwargs):
    with open(folder / "executed.log", "a") as f:
        f.write(f"{os.getpid()} {planned.run_id}\\n")
    if me == victim:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.1)
    return execute(self, planned, *args, **kwargs)


RunExecutor.execute = logged_execute
start, children = time.time() + 1.0, []
for i in range(n):
    pid = os.fork()
    if pid == 0:
        me = i
        with open(folder / f"{i}.out", "w") as out:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            time.sleep(max(0.0, start - time.time()))
            try:
                code = main(spec["args"] + spec.get("own", {}).get(str(i), []))
            except BaseException:
                traceback.print_exc()
                code = 99
            sys.stdout.flush()
        os._exit(code)
    children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
print(json.dumps(codes))
"""


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_llama_dir):
    """The config, and its records and predictions from one plain `prompting run` process."""
    folder = tmp_path_factory.mktemp("single")
    config = with_model(write_task(folder, data_seeds=(13, 21), extra_methods=TRAINED, patterns=2), tiny_llama_dir)
    done = subprocess.run([sys.executable, "-m", "prompting.cli", "run", str(config), "--output-dir",
                           str(folder / "out"), "-q", "--no-summary"], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return config, _results(folder / "out")


def _results(out: Path) -> dict[str, tuple[dict, dict]]:
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    counts = Counter(r["run_id"] for r in lines)
    assert set(counts.values()) == {1}, counts  # every run recorded exactly once
    return {r["run_id"]: (r, json.loads((out / "predictions" / f"{r['run_id']}.json").read_text())) for r in lines}


def _same_results(ours: dict, theirs: dict) -> None:
    assert sorted(ours) == sorted(theirs) and len(ours) == N_RUNS + N_ENSEMBLES
    for rid, (record, predictions) in theirs.items():
        mine, my_predictions = ours[rid]
        for key in ("dev", "test", "dev_loss", "steps", "best_step", "describe", "dev_curve"):
            assert mine.get(key) == record.get(key), (rid, key)
        assert my_predictions == predictions, rid


def _start(tmp_path, config, storage: str, n: int, victim: int | None = None, grace: int = 60,
           folders: bool = False) -> tuple[Path, list]:
    """``n`` workers on ``storage``, writing ``tmp_path/out`` (or, with ``folders``, each its own
    ``tmp_path/out-N``, as on machines that share no file system)."""
    out = tmp_path / "out"
    args = ["run", str(config), "--storage", storage, "-q", "--no-summary",
            "--heartbeat-interval", "1", "--grace-period", str(grace)]
    own = {str(i): ["--output-dir", str(tmp_path / f"out-{i}" if folders else out)] for i in range(n)}
    script = tmp_path / "workers.py"
    script.write_text(WORKERS)
    spec = {"folder": str(tmp_path), "n": n, "victim": victim, "args": args, "own": own}
    done = subprocess.run([sys.executable, str(script), json.dumps(spec)], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    codes = json.loads(done.stdout.splitlines()[-1])
    for i, code in enumerate(codes):
        if i != victim:
            output = (tmp_path / f"{i}.out").read_text()
            assert code == 0 and "Traceback" not in output, output[-3000:]
    return out, codes


def _executed(tmp_path) -> Counter:
    return Counter(line.split()[1] for line in (tmp_path / "executed.log").read_text().splitlines())


def test_workers_started_in_the_same_second_on_one_sqlite_file_record_every_run_once(single, tmp_path):
    config, theirs = single
    out, _ = _start(tmp_path, config, f"sqlite:///{tmp_path / 'runs.db'}", 4)
    _same_results(_results(out), theirs)
    executed = _executed(tmp_path)
    assert len(executed) == N_RUNS and set(executed.values()) == {1}, executed  # none computed twice
    log = (tmp_path / "executed.log").read_text().splitlines()
    assert len({line.split()[0] for line in log}) > 1  # the work was shared


def test_workers_on_postgresql_record_every_run_once(single, tmp_path, postgres_url):  # noqa: F811
    import uuid

    from sqlalchemy.engine import make_url

    config, theirs = single
    # a study of its own: the config's name, made unique for this test, on the shared server
    config.write_text(config.read_text().replace('name: "toy"\n', f'name: "toy-{uuid.uuid4().hex[:8]}"\n', 1))
    assert make_url(postgres_url).get_backend_name() == "postgresql"
    out, _ = _start(tmp_path, config, postgres_url, 2)
    ours = _results(out)
    assert {rid: (r["dev"], r["test"]) for rid, (r, _) in ours.items()} == \
        {rid: (r["dev"], r["test"]) for rid, (r, _) in theirs.items()}  # ensembles have the same ids too
    executed = _executed(tmp_path)
    assert len(executed) == N_RUNS and set(executed.values()) == {1}, executed


def test_workers_that_share_no_folder_each_end_with_every_run_from_the_storage(single, tmp_path):
    config, theirs = single
    _start(tmp_path, config, f"sqlite:///{tmp_path / 'runs.db'}", 2, folders=True)
    executed = _executed(tmp_path)
    assert len(executed) == N_RUNS and set(executed.values()) == {1}, executed  # none computed twice
    for i in range(2):  # each folder: its own runs, the other's copied from the study, and the ensembles
        _same_results(_results(tmp_path / f"out-{i}"), theirs)


def test_a_worker_killed_mid_run_has_that_run_redone_by_another(single, tmp_path):
    config, theirs = single
    out, codes = _start(tmp_path, config, f"sqlite:///{tmp_path / 'runs.db'}", 3, victim=0, grace=8)
    assert codes[0] == -9  # SIGKILLed
    _same_results(_results(out), theirs)
    log = [line.split() for line in (tmp_path / "executed.log").read_text().splitlines()]
    killed = [rid for pid, rid in log if pid == str(_pid_of(log, tmp_path))]
    # the victim started exactly one run and died in it; another worker ran it again
    assert len(killed) == 1 and _executed(tmp_path)[killed[0]] == 2
    assert set(_executed(tmp_path).values()) == {1, 2} and sum(_executed(tmp_path).values()) == N_RUNS + 1


def _pid_of(log, tmp_path) -> str:
    """The pid of the victim: the one worker whose output file is empty (killed before printing), but
    for the line saying the task's protocol that every run prints first."""
    pids = Counter(pid for pid, _ in log)
    said = [line for line in (tmp_path / "0.out").read_text().splitlines() if not re.match(r"task '.*': protocol ", line)]
    return next(pid for pid, count in pids.items() if count == 1 and not "".join(said).strip())


def test_workers_option_starts_local_workers_and_report_gathers_from_the_storage(single, tmp_path):
    config, theirs = single
    out, url = tmp_path / "out", f"sqlite:///{tmp_path / 'queue.db'}"
    done = subprocess.run([sys.executable, "-m", "prompting.cli", "run", str(config), "--output-dir", str(out),
                           "--workers", "2", "--storage", url, "-q"], env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "2 workers on" in done.stdout and "report:" in done.stdout
    _same_results(_results(out), theirs)
    assert sorted(p.name for p in (out / ".workers").glob("*.log")) == ["worker-0.log", "worker-1.log"]
    # a folder no worker wrote: the report copies every run (not the ensembles, which workers add
    # in their own folders) in from the storage
    elsewhere = tmp_path / "elsewhere"
    done = subprocess.run([sys.executable, "-m", "prompting.cli", "report", str(elsewhere), "--storage", url,
                           "--no-plots"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"gathered {N_RUNS} runs" in done.stdout
    gathered = _results(elsewhere)
    assert sorted(gathered) == sorted(rid for rid, (r, _) in theirs.items() if not r.get("ensemble_of"))
    assert all(gathered[rid][1] == theirs[rid][1] for rid in gathered)


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers 0 is not valid"),
    (["--devices", "cuda:0"], "give --workers N too"),
    (["--workers", "2", "--devices", "cuda:0,,cuda:1"], "has an empty entry"),
    (["--workers", "2", "--devices", "gpu0"], "device='gpu0' is not valid"),
    (["--storage", "sqlite://"], "in-memory SQLite"),
    (["--heartbeat-interval", "10", "--grace-period", "5"], "must be shorter than --grace-period 5"),
])
def test_bad_worker_options_are_refused_before_any_model_loads(tmp_path, capsys, argv, message):
    from prompting.cli import main

    config = write_task(tmp_path)  # no model: an option error must come first
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


KILLED_AFTER_RECORDING = """
import json, os, signal, sys
from prompting.experiment.results import ResultsStore
from prompting.experiment.workers import share_runs

url, folder, record = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
store = ResultsStore(folder)
claims = share_runs(store, url, "toy-runs", heartbeat=1, grace_period=2)
claims.expect({"r1": "run 1", "r2": "run 2"})
assert claims.claim("r1", "run 1")
store.save_predictions("r1", {"dev": [], "test": [[0.0, 1.0]], "labels": ["0", "1"], "dev_gold": [], "test_gold": ["1"]})
store.append(record)
os.kill(os.getpid(), signal.SIGKILL)  # recorded, its trial never completed
"""


def test_a_run_a_killed_worker_recorded_but_never_completed_is_completed_and_gathered(tmp_path):
    """SIGKILL between writing a run's record and completing its trial: the trial must not stay RUNNING
    for ever. The next worker on the folder completes it from the record once its worker's grace period
    has passed, and gathering from the storage warns about planned runs that are not recorded."""
    from prompting.experiment.results import ResultsStore
    from prompting.experiment.workers import gather, share_runs

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    record = {"run_id": "r1", "task": "toy", "method": "manual", "label": "m", "template": "{text_a} {mask}",
              "verbalizer": {"0": ["bad"], "1": ["good"]}, "model": "tiny", "k": 2, "data_seed": 13,
              "train_seed": None, "dev": {}, "test": {"accuracy": 1.0}, "seconds": 1.0}
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_RECORDING, url, str(tmp_path / "out"),
                             json.dumps(record)], env=ENV, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    time.sleep(3.5)  # the grace period (2 s) passes without a heartbeat
    store = ResultsStore(tmp_path / "out")
    claims = share_runs(store, url, "toy-runs", heartbeat=1, grace_period=2)
    claims.expect({"r1": "run 1", "r2": "run 2"}, skip=store.done())
    assert claims.completed() == ["r1"] and claims.unfinished() == {"waiting": 1}
    new, unfinished = gather(tmp_path / "elsewhere", url)
    assert new == 1 and unfinished == {"waiting": 1}
    assert ResultsStore(tmp_path / "elsewhere").record("r1")["test"] == {"accuracy": 1.0}
