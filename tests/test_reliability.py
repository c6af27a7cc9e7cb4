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

from conftest import NEGATIVE, POSITIVE, SUBJECTS, build_tiny_lm
from prompting.cli import main
from prompting.results import ResultsFileError, ResultsStore, run_id

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


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, bpe_tokenizer):
    lm = build_tiny_lm("llama", bpe_tokenizer)
    path = tmp_path_factory.mktemp("tiny-llama")
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path


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
import prompting.harness as harness
from prompting.cli import main

run, execute = harness.Experiment.run, harness.Experiment._execute
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


harness.Experiment.run, harness.Experiment._execute = run_together, logged_execute
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
