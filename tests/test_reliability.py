"""Hostile input and faults, as a user meets them: the results store shared by several processes,
file names built from user text, file-system failures and bad options. Each test is one probe: it
gives a clear one-line error or the correct result, never a traceback, a silent wrong answer or data
written where it should not be."""

import errno
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import NEGATIVE, POSITIVE, SUBJECTS
from prompting.cli import main
from prompting.core.ids import run_id
from prompting.experiment.results import ResultsStore

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def record(task="toy", label="PET", data_seed=13, train_seed=1, test=None, **extra):
    settings = {"task": task, "method": "manual", "label": label, "template": "{text_a} It was {mask}.",
                "verbalizer": {"0": ["bad"], "1": ["good"]}, "model": "tiny", "k": 4,
                "data_seed": data_seed, "train_seed": train_seed}
    return {**settings, "run_id": run_id(settings), "dev": {"accuracy": 0.75, "macro_f1": 0.7},
            "test": {"accuracy": 0.7, "macro_f1": 0.6} if test is None else test, "seconds": 1.0, **extra}


def one_error_line(capsys, command):
    err = capsys.readouterr().err
    assert err.startswith(f"prompting {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def model_dir(tiny_llama_dir):
    return tiny_llama_dir


def write_task(folder: Path, name="toy", data_seeds=(13,), extra_methods="", patterns=1):
    """A custom-task config on the tiny model with its train/test files; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [f"{s} was {adjective}.\t{label}" for s in SUBJECTS[:6]
            for adjective, label in ((POSITIVE[0], 1), (NEGATIVE[0], 0), (POSITIVE[1], 1), (NEGATIVE[1], 0))]
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    (folder / "test.tsv").write_text("sentence\tlabel\n" + "\n".join(rows[:6]) + "\n")
    config = folder / "exp.yaml"
    templates = ", ".join(json.dumps(p) for p in ["{text_a} It was {mask}.", "Review: {text_a} Sentiment: {mask}"][:patterns])
    config.write_text(f"""
name: {json.dumps(name)}
device: cpu
task: {{name: {json.dumps(name)}, train: train.tsv, test: test.tsv, fields: {{text_a: sentence}}, labels: [0, 1]}}
fewshot: {{k: 2, data_seeds: {list(data_seeds)}}}
templates: {{patterns: [{templates}], verbalizers: [{{0: [bad], 1: [good]}}]}}
methods:
  - {{name: manual, train: false}}
{extra_methods}""")
    return config


def with_model(config: Path, model_dir) -> Path:
    config.write_text(f"model: {model_dir}\n" + config.read_text())
    return config


# ----------------------------------------------------------------------- several processes, one folder
# One interpreter imports what `prompting run` needs, then forks every process of every group: each
# child is a separate process running the command's main (its own pid, file handles and claims), and
# the import, most of a start, is paid once. In each group the children wait at a barrier until all
# are started, log every run they compute, and take a moment per run, so that they really contend.
CONTENDERS = """
import json, os, sys, time, traceback
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot
import sklearn.metrics
import transformers.models.llama.modeling_llama
import prompting.experiment.harness as harness
from prompting.cli import main
from prompting.experiment.executor import RunExecutor

run, execute = harness.Experiment.run, RunExecutor.execute
folder = None


def run_together(self, *args, **kwargs):
    barrier = folder / "barrier"
    (barrier / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(barrier.iterdir())) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    return run(self, *args, **kwargs)


def logged_execute(self, planned, *args, **kwargs):
    with open(folder / "executed.log", "a") as f:
        f.write(f"{os.getpid()} {planned.run_id}\\n")
    time.sleep(0.3)
    return execute(self, planned, *args, **kwargs)


harness.Experiment.run, RunExecutor.execute = run_together, logged_execute
children = []
for group in json.loads(sys.argv[1]):
    folder, n = Path(group["folder"]), group["n"]
    (folder / "barrier").mkdir()
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            with open(folder / f"{i}.out", "w") as out, open(folder / f"{i}.err", "w") as err:
                os.dup2(out.fileno(), 1)
                os.dup2(err.fileno(), 2)
                try:
                    code = main(group["args"])
                except BaseException:
                    traceback.print_exc()
                    code = 99
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)
        children.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
print(json.dumps(codes))
"""


def test_two_and_three_run_processes_on_one_folder_record_every_run_once_and_compute_none_twice(
        tmp_path, model_dir):
    ensembled = "  - {name: manual, train: false, label: zero-shot ensemble, ensemble: mean}\n"
    groups = []
    for n in (2, 3):
        folder = tmp_path / f"{n}-processes"
        config = with_model(write_task(folder, data_seeds=(13, 21), extra_methods=ensembled, patterns=2), model_dir)
        groups.append({"folder": str(folder), "n": n,
                       "args": ["run", str(config), "--output-dir", str(folder / "out"), "-q"]})
    hook = tmp_path / "contenders.py"
    hook.write_text(CONTENDERS)
    done = subprocess.run([sys.executable, str(hook), json.dumps(groups)], env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [0] * 5, done.stdout

    for group in groups:
        folder = Path(group["folder"])
        out, log = folder / "out", folder / "executed.log"
        for i in range(group["n"]):
            stderr = (folder / f"{i}.err").read_text()
            assert "Traceback" not in stderr and "error" not in stderr.lower(), stderr[-3000:]
            assert "runs in" in (folder / f"{i}.out").read_text()
        lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        ids = Counter(r["run_id"] for r in lines)
        # 2 data seeds x 2 patterns x 2 methods = 8 runs, plus one ensemble per data seed of the ensembled entry
        assert len(ids) == 10 and set(ids.values()) == {1}, ids
        executed = Counter(line.split()[1] for line in log.read_text().splitlines())
        assert len(executed) == 8 and set(executed.values()) == {1}, executed
        # the work was shared, not done by one process while the others waited
        assert len({line.split()[0] for line in log.read_text().splitlines()}) > 1
        assert sorted(p.name for p in (out / "predictions").iterdir()) == sorted(f"{rid}.json" for rid in ids)
        assert not list((out / ".claims").glob("*.claim"))  # every claim given back


def toy_experiment(lm, out):
    from prompting.core.data import Example, Task
    from prompting.experiment.harness import Experiment, MethodSpec, Protocol

    train = [Example({"text_a": f"{s} was {w}."}, label) for s in SUBJECTS[:6]
             for w, label in ((POSITIVE[0], "1"), (NEGATIVE[0], "0"))]
    task = Task("toy", ("0", "1"), ("text_a",), train, train[:4])
    return Experiment(lm, task, [MethodSpec("manual", train=False)],
                      [("{text_a} It was {mask}.", {0: ["bad"], 1: ["good"]}),
                       ("Review: {text_a} {mask}", {0: ["bad"], 1: ["good"]})],
                      Protocol(k=2, data_seeds=(13,)), output_dir=out)


def test_a_run_claimed_by_a_live_process_is_waited_for_and_taken_over_when_that_process_dies(
        tiny_causal_lm, tmp_path, capsys):
    import socket
    import threading

    experiment = toy_experiment(tiny_causal_lm, tmp_path)
    first = experiment.plan()[0]
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    claim = experiment.store.claims.path(first.run_id)
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": time.time(),
                                 "token": "theirs", "what": "manual seed 13/None"}))

    def die():
        # once the other run is recorded this process can only be waiting for the held one: then the
        # holder dies without recording its run (killed), and is reaped
        results = tmp_path / "results.jsonl"
        deadline = time.monotonic() + 60
        while not (results.exists() and results.read_text().count("\n") == 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        holder.kill()
        holder.wait()

    killer = threading.Thread(target=die)
    killer.start()
    records = experiment.run(progress=False)
    killer.join()
    # it waited for the live holder, saying so and naming the process...
    err = capsys.readouterr().err
    assert f"waiting for 1 run that another process is running (pid {holder.pid} on {socket.gethostname()})" in err
    # ...and ran the run itself once its holder was gone: every run recorded once
    assert sorted(r["run_id"] for r in records) == sorted(r.run_id for r in experiment.plan())
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and not claim.exists()


def test_a_claim_left_by_another_host_goes_stale_only_without_heartbeat(tmp_path):
    from prompting.experiment.claims import Claims

    claims = Claims(tmp_path, stale_after=600, heartbeat=60)
    assert claims.claim("run-a", what="PET seed 13/1")
    path = claims.path("run-a")
    theirs = {"pid": 1, "host": "another-machine", "started": time.time(), "token": "t", "what": "x"}
    path.write_text(json.dumps(theirs))
    other = Claims(tmp_path, stale_after=600, heartbeat=60)
    assert not other.claim("run-a")  # refreshed lately: its owner on the other machine is alive
    assert other.holder("run-a")["host"] == "another-machine"
    os.utime(path, (time.time() - 601, time.time() - 601))  # ten minutes without a heartbeat
    assert other.holder("run-a") is None and other.claim("run-a")
    claims.release("run-a")  # the old owner giving back late does not remove the new owner's claim
    assert path.exists() and other.holder("run-a")["pid"] == os.getpid()
    other.release("run-a")
    assert not path.exists()


# --------------------------------------------------------------------------------- the results store
def test_a_run_after_a_record_without_its_final_newline_keeps_both_records(tmp_path, model_dir):
    config = with_model(write_task(tmp_path), model_dir)
    out = tmp_path / "out"
    out.mkdir()
    old = record()
    # a record cut after its closing brace: whole, but the file does not end with a newline
    (out / "results.jsonl").write_text(json.dumps(old))
    assert main(["run", str(config), "--output-dir", str(out), "-q"]) == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == old  # the old record is intact, not joined with the new one
    records = ResultsStore(out).records()
    assert len(records) == 2 and records[0] == old and records[1]["task"] == "toy"


def test_a_garbage_line_in_the_middle_is_reported_as_damage_not_as_a_killed_run(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    store.append(record(train_seed=1))
    with open(store.path, "a") as f:
        f.write("this is not json\n")
    store.append(record(train_seed=2))
    assert main(["report", str(tmp_path)]) == 2
    err = one_error_line(capsys, "report")
    assert f"{store.path}: line 2 is not a JSON record" in err and "damaged or edited" in err
    assert "cut off" not in err and "killed" in err  # says only the last line can be a killed run's


def test_two_writers_saving_predictions_at_once_never_collide(tmp_path):
    # the temporary file of each write has a name of its own: no writer renames another's away
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        failures = list(pool.map(_save_predictions_many, [tmp_path] * 2, [0, 1]))
    assert failures == [0, 0]
    assert json.loads((tmp_path / "predictions" / "abc.json").read_text())["test"] in ([[0.0]], [[1.0]])
    assert [p.name for p in (tmp_path / "predictions").iterdir()] == ["abc.json"]


def _save_predictions_many(folder, value, n=200):
    store, failures = ResultsStore(folder), 0
    for _ in range(n):
        try:
            store.save_predictions("abc", {"test": [[float(value)]]})
        except OSError:
            failures += 1
    return failures


# ---------------------------------------------------------------------------------------- the report
def test_report_on_a_record_without_test_scores_shows_a_dash(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    store.append(record(train_seed=1))
    store.append(record(label="no test set", train_seed=1, test={}))
    assert main(["report", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| no test set |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert [cells[i] for i in (6, 7, 9, 10)] == ["–", "–", "– ± –", "–––"]  # test (sel.), its interval, test (all), min–max
    pet = next(line for line in report.splitlines() if line.startswith("| PET |"))
    assert "70.0" in pet  # the run with scores is reported as before
    assert report.index("| PET |") < report.index("| no test set |")  # a row without scores goes last


def test_report_keeps_plots_of_a_task_named_like_a_path_inside_the_output_folder(tmp_path, capsys):
    out = tmp_path / "a" / "b" / "c" / "runs"
    store = ResultsStore(out)
    store.append(record(task="../../../escape", train_seed=1))
    store.append(record(task="../../../escape", train_seed=2))
    assert main(["report", str(out)]) == 0
    pngs = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert pngs == [f"a/b/c/runs/plots/escape_{name}.png" for name in ("by_method", "dev_vs_test", "runs")]
    assert "](plots/escape_by_method.png)" in (out / "report.md").read_text()


# ------------------------------------------------------------------------- file-system failures, up front
@pytest.fixture
def read_only(monkeypatch):
    """Make a folder read-only, as a read-only mount is: chmod, and for root (whom permissions do not
    stop) every file-system call that would create or change something inside it fails with EROFS."""
    import builtins

    folders = []

    def refuse(path):
        path = os.path.abspath(os.fspath(path)) if isinstance(path, (str, bytes, os.PathLike)) else None
        if path and any(path == f or path.startswith(f + os.sep) for f in folders):
            raise OSError(errno.EROFS, "Read-only file system", path)

    def guard(function, writes):
        def guarded(path, *args, **kwargs):
            if writes(args, kwargs):
                refuse(path)
            return function(path, *args, **kwargs)
        return guarded

    if os.geteuid() == 0:
        flags = lambda args, kwargs: bool((args[0] if args else kwargs.get("flags", 0))
                                          & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        mode = lambda args, kwargs: any(c in (args[0] if args else kwargs.get("mode", "r")) for c in "wax+")
        monkeypatch.setattr(os, "open", guard(os.open, flags))
        monkeypatch.setattr(builtins, "open", guard(builtins.open, mode))
        monkeypatch.setattr(os, "mkdir", guard(os.mkdir, lambda a, k: True))
        monkeypatch.setattr(os, "replace", guard(os.replace, lambda a, k: True))

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        folders.append(os.path.abspath(folder))
        folder.chmod(0o555)
        return folder

    yield make
    for folder in folders:
        os.chmod(folder, 0o755)


def test_run_into_a_read_only_folder_is_refused_before_the_model_loads(tmp_path, read_only, capsys):
    config = write_task(tmp_path / "cfg")
    config.write_text(f"model: {tmp_path / 'no-such-model'}\n" + config.read_text())
    out = read_only(tmp_path / "out")
    assert main(["run", str(config), "--output-dir", str(out), "-q"]) == 2
    err = one_error_line(capsys, "run")
    # the folder is named, with what to do; the (missing) model was never reached
    assert f"--output-dir '{out}' is not writable" in err and "give a folder you can write to" in err


def test_run_with_an_output_dir_that_is_a_file_is_refused_before_the_model_loads(tmp_path, capsys):
    config = write_task(tmp_path / "cfg")
    config.write_text(f"model: {tmp_path / 'no-such-model'}\n" + config.read_text())
    out = tmp_path / "out.txt"
    out.write_text("notes\n")
    assert main(["run", str(config), "--output-dir", str(out), "-q"]) == 2
    err = one_error_line(capsys, "run")
    assert f"--output-dir '{out}' is a file, not a folder" in err
    assert out.read_text() == "notes\n"


def test_eval_into_a_folder_below_a_file_is_refused_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    assert main(["eval", "--task", "mr", "--model", str(tmp_path / "no-such-model"), "--output-dir", str(out),
                 "-q"]) == 2
    err = one_error_line(capsys, "eval")
    assert f"'{out}' cannot be created: '{tmp_path / 'file'}' is a file, not a folder" in err


def test_report_on_a_read_only_folder_says_so_in_one_line(tmp_path, read_only, capsys):
    store = ResultsStore(tmp_path / "runs")
    store.append(record())
    read_only(store.directory)
    assert main(["report", str(store.directory)]) == 2
    err = one_error_line(capsys, "report")
    assert f"report folder '{store.directory}' is not writable" in err


def test_a_config_path_that_is_a_folder_is_named(tmp_path, capsys):
    assert main(["run", str(tmp_path), "--output-dir", str(tmp_path / "out")]) == 2
    err = one_error_line(capsys, "run")
    assert f"config file '{tmp_path}' is a folder; give the path of a YAML file" in err


def test_a_config_file_that_is_not_utf8_is_named(tmp_path, capsys):
    config = tmp_path / "exp.yaml"
    config.write_bytes("name: caf\u00e9\ntask: sst2\n".encode("latin-1"))
    assert main(["sweep", str(config), "--n-trials", "1", "--output-dir", str(tmp_path / "out")]) == 2
    err = one_error_line(capsys, "sweep")
    assert f"config file '{config}' is not UTF-8 text" in err and "save it as UTF-8" in err


def test_a_data_file_that_is_not_utf8_is_named(tmp_path, capsys):
    config = write_task(tmp_path / "cfg")
    config.write_text(f"model: {tmp_path / 'no-such-model'}\n" + config.read_text())
    train = tmp_path / "cfg" / "train.tsv"
    train.write_bytes(train.read_bytes() + "the caf\u00e9 was good .\t1\n".encode("latin-1"))
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    err = one_error_line(capsys, "run")
    assert f"data file '{train}' is not UTF-8 text" in err


def test_search_labels_with_a_write_file_it_cannot_add_to_stops_before_the_search(tmp_path, capsys):
    templates = tmp_path / "mine.yaml"
    templates.write_bytes(b"task: mr\npatterns: ['\xff {text_a} {mask}']\n")
    assert main(["search-labels", "--task", "mr", "--model", str(tmp_path / "no-such-model"), "--k", "2",
                 "--write", str(templates), "-q"]) == 2
    err = one_error_line(capsys, "search-labels")
    assert f"--write: {templates} is not UTF-8 text" in err
    assert main(["search-labels", "--task", "mr", "--model", str(tmp_path / "no-such-model"), "--k", "2",
                 "--write", str(tmp_path), "-q"]) == 2
    assert f"'{tmp_path}' is a folder; give the path of a templates YAML file" in one_error_line(capsys, "search-labels")


# ----------------------------------------------------------------------------------------- interrupts
INTERRUPT_ON_IMPORT = """
import sys


class Interrupt:
    # Ctrl-C arriving during the first heavy import (YAML for the config, or torch)
    def find_spec(self, name, path=None, target=None):
        if name in ("yaml", "torch"):  # the first import of either, wherever it comes
            raise KeyboardInterrupt


sys.meta_path.insert(0, Interrupt())
"""


def test_ctrl_c_during_the_imports_prints_the_interrupted_line(tmp_path):
    # as the installed `prompting` command starts: the entry point imports prompting.cli, then calls main
    (tmp_path / "sitecustomize.py").write_text(INTERRUPT_ON_IMPORT)
    config = write_task(tmp_path / "cfg")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run([sys.executable, "-c", "import sys; from prompting.cli import main; sys.exit(main())",
                           "run", str(config), "--output-dir", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().startswith("interrupted") and "Traceback" not in done.stderr


# ------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("limit", ["0", "-5"])
def test_a_test_limit_below_one_is_refused_naming_the_option(tmp_path, limit, capsys):
    config = write_task(tmp_path / "cfg")
    for command in (["run", str(config), "--test-limit", limit], ["sweep", str(config), "--n-trials", "1",
                                                                   "--test-limit", limit]):
        assert main([*command, "--output-dir", str(tmp_path / "out")]) == 2
        err = one_error_line(capsys, command[0])
        assert f"--test-limit {limit} is not valid; give an integer >= 1" in err
    assert not (tmp_path / "out").exists()


def test_an_in_memory_sqlite_storage_is_refused_before_the_sweep_starts(tmp_path, capsys):
    config = write_task(tmp_path / "cfg")
    config.write_text(config.read_text() + "  - {name: soft, train: true}\nsweep: {method: soft}\n")
    assert main(["sweep", str(config), "--storage", "sqlite://", "--n-trials", "1",
                 "--output-dir", str(tmp_path / "out")]) == 2
    err = one_error_line(capsys, "sweep")
    assert "storage 'sqlite://' is an in-memory SQLite database" in err and "sqlite:///PATH/sweep.db" in err


def test_a_sweep_export_path_that_is_a_folder_is_refused_before_the_sweep(tmp_path, capsys):
    config = write_task(tmp_path / "cfg")
    config.write_text(f"model: {tmp_path / 'no-such-model'}\n" + config.read_text()
                      + "  - {name: soft, train: true}\nsweep: {method: soft}\n")
    assert main(["sweep", str(config), "--n-trials", "1", "--export-best", str(tmp_path),
                 "--output-dir", str(tmp_path / "out")]) == 2
    err = one_error_line(capsys, "sweep")
    assert f"--export-best '{tmp_path}' is a folder; give the path of a YAML file to write" in err


def test_a_storage_url_is_never_shown_with_its_password():
    from prompting.experiment.storage import StorageError, open_storage, shown_url

    # a port that is no number, an unescaped "@" in the password, no scheme at all
    for url in ("postgresql://me:s3cret@db:port/sweeps", "postgresql://me:s3c@ret@db/sweeps", "me:s3cret@db/sweeps"):
        assert "s3c" not in shown_url(url) and "ret" not in shown_url(url).split("@")[0], url
        with pytest.raises(StorageError) as err:
            open_storage(url)
        assert "s3c" not in str(err.value), url


# ------------------------------------------------------------------------------------ label search
def test_a_verbalizer_that_would_not_read_back_is_refused_by_name(tmp_path, monkeypatch):
    import prompting.training.labelsearch as labelsearch

    # a writer that quotes nothing: the word "null" would read back as no word at all
    monkeypatch.setattr(labelsearch, "_flow", str)
    path = tmp_path / "mine.yaml"
    with pytest.raises(ValueError, match=r"the verbalizer \{'0': \['null'\], '1': \['good'\]\} would read back"):
        labelsearch.write_verbalizer(path, {0: ["null"], 1: ["good"]}, task="sst2")
    assert not path.exists()


# ------------------------------------------------------------------- data files as editors and spreadsheets save them
def test_a_field_over_the_csv_modules_limit_loads(tmp_path, model_dir):
    # csv refuses a field over 131,072 characters by default: a long document in one cell
    config = with_model(write_task(tmp_path), model_dir)
    long_text = "the film was great and the cast was good , " * 5000  # 215,000 characters
    with open(tmp_path / "test.tsv", "a") as f:
        f.write(f"{long_text}\t1\n")
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q", "--no-summary"]) == 0
    assert ResultsStore(tmp_path / "out").records()[0]["n_test"] == 7
    csv_file = tmp_path / "long.csv"
    csv_file.write_text(f'sentence,label\n"{long_text}",1\n')
    from prompting.core.data import load_examples

    assert load_examples(csv_file, {"text_a": "sentence"})[0]["text_a"] == long_text


def label_first(folder: Path, header: bool, extra: str) -> Path:
    """A config whose train file has the label first (with or without a header), then ``extra`` as a row."""
    config = write_task(folder)
    config.write_text(f"model: {folder / 'no-such-model'}\n" + config.read_text())
    rows = [line.split("\t") for line in (folder / "train.tsv").read_text().splitlines()[1:]]
    (folder / "train.tsv").write_text(("label\tsentence\n" if header else "")
                                      + "".join(f"{label}\t{text}\n" for text, label in rows) + extra)
    if not header:
        config.write_text(config.read_text().replace(
            "fields: {text_a: sentence}", "header: false, label_column: 0, text_columns: [1]"))
    return config


@pytest.mark.parametrize("header", [True, False])
def test_a_tab_inside_a_text_is_refused_naming_the_row_not_read_as_the_words_before_it(tmp_path, header, capsys):
    config = label_first(tmp_path, header, "1\tgreat film\tI loved it\n")
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    err = one_error_line(capsys, "run")
    train = tmp_path / "train.tsv"
    counts = "but the header has 2 (label, sentence)" if header else "but the first row has 2"
    assert f"{train}: row 24 (line {26 if header else 25} of the file) has 3 fields, {counts}" in err
    assert "a tab inside a text makes an extra field" in err and "or save the data as JSONL" in err
    assert "'great film' | 'I loved it'" in err
    assert "no-such-model" not in err  # refused before the model loads
    # a row with fewer fields than the first is refused too in a file without a header
    if not header:
        config = label_first(tmp_path, header, "1\n")
        assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
        assert f"{train}: row 24 (line 25 of the file) has 1 fields, but the first row has 2" in \
            one_error_line(capsys, "run")


def test_files_saved_with_a_byte_order_mark_read_as_without_one(tmp_path, model_dir):
    # Excel's "CSV UTF-8" starts the file with a byte-order mark, as some editors do for YAML and JSONL
    config = with_model(write_task(tmp_path), model_dir)
    for name in ("train", "test"):
        rows = [line.split("\t") for line in (tmp_path / f"{name}.tsv").read_text().splitlines()]
        (tmp_path / f"{name}.csv").write_text("".join(f"{s},{label}\n" for s, label in rows), encoding="utf-8-sig")
    jsonl = "".join(json.dumps({"sentence": s, "label": int(label)}) + "\n" for s, label in rows[1:])
    (tmp_path / "test.jsonl").write_text(jsonl, encoding="utf-8-sig")
    text = config.read_text().replace("train.tsv", "train.csv").replace("test.tsv", "test.jsonl")
    config.write_text(text, encoding="utf-8-sig")
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q", "--no-summary"]) == 0
    record = ResultsStore(tmp_path / "out").records()[0]
    assert record["model"] == str(model_dir) and record["n_test"] == 6
    # without a header the mark would have gone into the first text; a fact file is read the same way
    from prompting.core.data import load_examples
    from prompting.tasks.lama import load_facts

    first = load_examples(tmp_path / "test.csv", {"text_a": 0}, label_column=1, header=False)[0]
    assert first["text_a"] == "sentence"
    facts = tmp_path / "facts.csv"
    facts.write_text("sub_label,obj_label\nParis,France\n", encoding="utf-8-sig")
    assert load_facts(facts)[0].fields == {"sub_label": "Paris"}


def test_texts_in_both_train_and_dev_of_a_split_are_noted_once_per_split_and_the_split_is_unchanged(
        tmp_path, model_dir, capsys):
    from prompting.core.data import load_examples, sample_kshot, shared_texts

    config = with_model(write_task(tmp_path, data_seeds=(13, 21, 42)), model_dir)
    train = tmp_path / "train.tsv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[:9] + lines[1:9] * 3) + "\n")  # 8 texts, each four times
    examples = load_examples(train, {"text_a": "sentence"})
    splits = {seed: sample_kshot(examples, 2, seed, ("0", "1")) for seed in (13, 21, 42)}
    shared = {seed: shared_texts(*split) for seed, split in splits.items()}
    assert any(shared.values())
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q", "--no-summary"]) == 0
    err = capsys.readouterr().err
    for seed, n in shared.items():
        note = f"note: task 'toy': data seed {seed}: {n} of the 4 dev examples have a text that is also in train"
        assert err.count(note) == (1 if n else 0), err
    assert err.count("de-duplicate the data file") == sum(1 for n in shared.values() if n)
    # the runs were trained and scored on the splits the sampler always drew
    for record in ResultsStore(tmp_path / "out").records():
        assert record["n_train"] == record["n_dev"] == 4


# ------------------------------------------------------------------------------------ claims left behind
def test_an_empty_claim_file_left_by_a_killed_process_is_taken_over_without_naming_no_process(
        tmp_path, model_dir, capsys):
    config = with_model(write_task(tmp_path), model_dir)
    out = tmp_path / "out"
    assert main(["run", str(config), "--output-dir", str(out), "-q", "--no-summary"]) == 0
    rid = ResultsStore(out).records()[0]["run_id"]
    # a process killed between creating its claim and writing it left an empty file; the run is not recorded
    (out / "results.jsonl").unlink()
    claim = out / ".claims" / f"{rid}.claim"
    claim.write_text("")
    os.utime(claim, (time.time() - 10, time.time() - 10))
    capsys.readouterr()
    started = time.monotonic()
    assert main(["run", str(config), "--output-dir", str(out), "-q", "--no-summary"]) == 0
    err = capsys.readouterr().err
    assert time.monotonic() - started < 60 and "waiting" not in err  # taken over at once
    assert [r["run_id"] for r in ResultsStore(out).records()] == [rid] and not claim.exists()
    # one that is still being written is waited for a moment, and its (unknown) process is not named
    (out / "results.jsonl").unlink()
    claim.write_text("")
    assert main(["run", str(config), "--output-dir", str(out), "-q", "--no-summary"]) == 0
    err = capsys.readouterr().err
    assert "waiting for 1 run" in err and "pid None" not in err and "None on None" not in err
    assert [r["run_id"] for r in ResultsStore(out).records()] == [rid] and not claim.exists()


# ------------------------------------------------------------------------ messages that name what is wrong
def test_a_cut_off_predictions_file_is_named_with_what_to_do(tmp_path, capsys):
    store = ResultsStore(tmp_path)
    store.append(record(train_seed=1))
    store.append(record(train_seed=2))
    rid = store.records()[0]["run_id"]
    store.save_predictions(rid, {"labels": ["0", "1"], "test": [[0.2, 0.8]] * 4, "test_gold": ["1"] * 4})
    path = tmp_path / "predictions" / f"{rid}.json"
    path.write_text(path.read_text()[:50])  # cut off
    assert main(["report", str(tmp_path)]) == 2
    err = one_error_line(capsys, "report")
    assert f"{path} is not complete JSON" in err and "Delete it: the run's record" in err
    assert "delete it and the run's line in results.jsonl to run it again" in err
    path.unlink()  # as the message says: the report is made without that run's scores
    assert main(["report", str(tmp_path)]) == 0


def test_a_full_disk_names_the_file_being_written(tmp_path, model_dir, monkeypatch, capsys):
    import prompting.core.paths as paths

    config = with_model(write_task(tmp_path), model_dir)
    out = tmp_path / "out"

    class Full:
        """A file on a full disk: writes fail with ENOSPC, which names no file."""

        def __init__(self, *args, **kwargs):
            self.file = open(*args, **kwargs)

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(paths, "open", Full, raising=False)  # the predictions file, written whole
    assert main(["run", str(config), "--output-dir", str(out), "-q", "--no-summary"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after the task's line, as the run had begun
    assert f"no space left on the device holding '{out / 'predictions'}{os.sep}" in err and ".json'" in err
    assert ".tmp" not in err
    monkeypatch.undo()

    records, write = set(), os.write
    opened = os.open

    def open_fd(path, flags, *args, **kwargs):
        fd = opened(path, flags, *args, **kwargs)
        (records.add if str(path).endswith("results.jsonl") else records.discard)(fd)
        return fd

    def full_write(fd, data):
        if fd in records:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(fd, data)

    monkeypatch.setattr(os, "open", open_fd)
    monkeypatch.setattr(os, "write", full_write)
    assert main(["run", str(config), "--output-dir", str(out), "-q", "--no-summary"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert f"no space left on the device holding '{out / 'results.jsonl'}'; free some space" in err


def test_an_output_dir_that_is_a_dangling_symbolic_link_says_so(tmp_path, capsys):
    config = write_task(tmp_path / "cfg")
    config.write_text(f"model: {tmp_path / 'no-such-model'}\n" + config.read_text())
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "gone")
    for out, where in ((link, ""), (link / "sub", f" (its part '{link}')")):
        assert main(["run", str(config), "--output-dir", str(out), "-q"]) == 2
        err = one_error_line(capsys, "run")
        assert f"--output-dir '{out}'{where} is a symbolic link to '{tmp_path / 'gone'}', which does not exist" in err


def test_a_sqlite_storage_below_a_file_says_so(tmp_path, capsys):
    config = write_task(tmp_path / "cfg")
    (tmp_path / "notes").write_text("")
    for database in (tmp_path / "notes" / "runs.db", tmp_path / "notes" / "more" / "runs.db"):
        assert main(["run", str(config), "--storage", f"sqlite:///{database}", "--output-dir",
                     str(tmp_path / "out"), "-q"]) == 2
        err = one_error_line(capsys, "run")
        assert f"'{tmp_path / 'notes'}' is a file, not a folder, so the database '{database}' cannot be made" in err


def test_a_typo_in_a_local_model_folder_says_the_folder_does_not_exist(tmp_path, monkeypatch, capsys):
    config = write_task(tmp_path)
    (tmp_path / "checkpoints" / "tiny-llama").mkdir(parents=True)
    config.write_text("model: ./checkpoints/tiny-lama\n" + config.read_text())
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    err = one_error_line(capsys, "run")
    assert ("model './checkpoints/tiny-lama': folder './checkpoints/tiny-lama' does not exist; folders in "
            "'checkpoints' with a close name: tiny-llama") in err
    assert "Hugging Face cache" not in err


def test_a_jsonl_line_that_is_a_list_is_named_as_one(tmp_path, capsys):
    config = write_task(tmp_path)
    config.write_text(f"model: {tmp_path / 'no-such-model'}\n"
                      + config.read_text().replace("test: test.tsv", "test: test.jsonl"))
    (tmp_path / "test.jsonl").write_text('{"sentence": "the film was great .", "label": 1}\n["the film was bad .", 0]\n')
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    err = one_error_line(capsys, "run")
    assert f"{tmp_path / 'test.jsonl'}: line 2 is a JSON list, not an object with named fields" in err
    assert "position" not in err


# --------------------------------------------------------------------------------- before the model loads
def test_a_k_larger_than_the_data_holds_is_refused_before_the_model_loads(tmp_path, capsys):
    config = write_task(tmp_path, data_seeds=(13, 21))
    config.write_text(f"model: {tmp_path / 'no-such-model'}\n"
                      + config.read_text().replace("fewshot: {k: 2,", "fewshot: {k: 500,"))
    assert main(["run", str(config), "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    err = one_error_line(capsys, "run")
    assert "task 'toy', K = 500 (fewshot: k), data seed 13: label '0' has 12 examples" in err
    assert "this data allows K up to 6; lower fewshot: k" in err and "no-such-model" not in err


def test_an_unreachable_storage_is_refused_before_the_model_loads(tmp_path, capsys):
    config = write_task(tmp_path)
    config.write_text(f"model: {tmp_path / 'no-such-model'}\n" + config.read_text())
    assert main(["run", str(config), "--storage", "postgresql://me:s3cret@127.0.0.1:1/runs",
                 "--output-dir", str(tmp_path / "out"), "-q"]) == 2
    err = one_error_line(capsys, "run")
    assert "cannot open storage 'postgresql://me:***@127.0.0.1:1/runs'" in err and "can be reached" in err
    assert "no-such-model" not in err and "s3cret" not in err
