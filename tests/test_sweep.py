"""Sweeps: workers that die or are interrupted lose nothing finished; studies and search spaces are checked.

Everything runs on a tiny *randomly initialised* Llama saved to a temporary folder and a tiny tsv task.
The PostgreSQL test uses ``PROMPTING_TEST_POSTGRES_URL`` (set by .ci/run) or starts a private server
with the local PostgreSQL binaries; without either it is skipped, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from conftest import NEGATIVE, POSITIVE, SUBJECTS, VERBS, build_tiny_lm  # noqa: E402
from prompting import cli  # noqa: E402
from prompting.config.experiment import ConfigError, load_config, parse_config  # noqa: E402
from prompting.experiment.results import ResultsStore  # noqa: E402
from prompting.experiment.storage import StorageError, open_storage  # noqa: E402
from prompting.sweeps.sweep import Sweep, SweepError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "{soft:2} {text_a} It was {mask}."
States = optuna.trial.TrialState


@pytest.fixture(scope="module")
def toy(tmp_path_factory, bpe_tokenizer):
    """A saved tiny random LM, a tiny sentiment task as tsv files, and a config writer."""
    root = tmp_path_factory.mktemp("toy")
    lm = build_tiny_lm("llama", bpe_tokenizer)
    lm.model.save_pretrained(root / "model")
    bpe_tokenizer.save_pretrained(root / "model")
    rows = [(f"{s} {v} {a}.", int(a in POSITIVE)) for s in SUBJECTS for v in VERBS[:2] for a in POSITIVE + NEGATIVE]
    random.Random(0).shuffle(rows)
    for name, part in (("train", rows[:120]), ("test", rows[120:150])):
        (root / f"{name}.tsv").write_text("text_a\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part))

    def config(name="cfg", max_steps=20, sweep=None, methods=None) -> Path:
        data = {"name": "toy", "model": str(root / "model"), "device": "cpu",
                "task": {"name": "toy", "train": str(root / "train.tsv"), "test": str(root / "test.tsv"),
                         "labels": ["0", "1"]},
                "fewshot": {"k": 4, "data_seeds": [13, 21]},
                "templates": {"patterns": ["{text_a} It was {mask}."], "verbalizers": [{"0": ["bad"], "1": ["good"]}]},
                "methods": methods or [{"name": "ptuning", "template": TEMPLATE, "max_steps": max_steps,
                                        "batch_size": 4, "hidden_size": 16}],
                "sweep": {"params": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}, "encoder": ["lstm", "mlp"]},
                          "pruner": "none", "seed": 0, **(sweep or {})}}
        path = root / f"{name}.json"  # JSON is YAML
        path.write_text(json.dumps(data))
        return path

    return config


def _trials(storage, study: str):
    return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)


def _check_records(out: Path, trials) -> None:
    """Every completed trial's runs are whole records whose dev scores give the trial's value."""
    records = {r["run_id"]: r for r in ResultsStore(out).records()}  # raises on a cut-off line
    lines = [json.loads(line)["run_id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == len(set(lines)), "a run was recorded twice"
    for t in trials:
        if t.state == States.COMPLETE:
            runs = [records[rid] for rid in t.user_attrs["run_ids"]]
            assert sorted(r["data_seed"] for r in runs) == [13, 21]
            assert t.value == pytest.approx(statistics.fmean(r["dev"]["accuracy"] for r in runs))
            assert all(r["sweep"]["params"] == t.params for r in runs)


def _check_retry(trials, killed) -> None:
    assert killed.state == States.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1, "the failed trial is re-run once, with its parameters"
    retry = retries[0]
    assert retry.params == killed.params and retry.system_attrs["retry_history"] == [killed.number]
    assert retry.state == States.COMPLETE
    # the data seed the killed trial had finished is reused, not run again
    assert killed.user_attrs["run_ids"][0] in retry.user_attrs["run_ids"]


# ------------------------------------------------------------------------------------ PostgreSQL
def _private_postgres(tmp_root: Path):
    """Start a throwaway PostgreSQL server on a free local port; returns (url, stop) or (None, reason)."""
    bins = [str(Path(p).parent) for p in [shutil.which("pg_ctl")] if p]
    bins += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    bindir = next((b for b in bins if Path(b, "initdb").exists() and Path(b, "pg_ctl").exists()), None)
    if bindir is None:
        return None, "no initdb/pg_ctl found (apt-get install postgresql)"
    prefix = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no 'postgres' user to run the server"
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(tmp_root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp_root / "data"
    run = lambda *args: subprocess.run(prefix + list(args), capture_output=True, text=True, timeout=120)
    done = run(f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    if done.returncode:
        return None, f"initdb failed: {done.stderr.strip()[-300:]}"
    options = f"-p {port} -k {tmp_root} -c listen_addresses=127.0.0.1 -c fsync=off"
    done = run(f"{bindir}/pg_ctl", "-D", str(data), "-o", options, "-l", str(tmp_root / "log"), "-w", "start")
    if done.returncode:
        return None, f"pg_ctl start failed: {done.stderr.strip()[-300:]}"
    return f"postgresql://postgres@127.0.0.1:{port}/postgres", \
        lambda: run(f"{bindir}/pg_ctl", "-D", str(data), "-m", "immediate", "stop")


def _missing(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None


@pytest.fixture(scope="module")
def postgres_url():
    if os.environ.get("PROMPTING_TEST_POSTGRES_URL") and not _missing("psycopg2"):
        yield os.environ["PROMPTING_TEST_POSTGRES_URL"]
        return
    url, stop, tmp_root = None, "psycopg2 is not installed (pip install 'prompting[postgres]')", None
    if not _missing("psycopg2"):
        tmp_root = Path(tempfile.mkdtemp(prefix="prompting-pg-"))  # not under pytest's root-only tmp
        url, stop = _private_postgres(tmp_root)
    if url is None:
        message = f"PostgreSQL is needed for this test and none could be started: {stop}"
        if tmp_root:
            shutil.rmtree(tmp_root, ignore_errors=True)
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield url
    finally:
        stop()
        shutil.rmtree(tmp_root, ignore_errors=True)


def test_two_postgres_workers_survive_one_killed_mid_trial(toy, postgres_url, tmp_path):
    """Two processes join one study; one is SIGKILLed between two data seeds of a trial. Its trial is
    failed by heartbeat and its parameters re-run (reusing the finished data seed) by a live worker, and
    the study reaches N finished trials with every record whole.

    A dead worker's trial is noticed when a live worker *starts* a trial after the grace period. The
    survivor may reach N before that (on a fast machine it does), so the same command is started again
    once the grace period is over, as a user would after a crash: it fails the dead trial and re-runs
    it (or the survivor, if still going, does) even when the study already has N finished trials."""
    # no sampler seed: two workers seeded alike would propose the same parameters
    config, study, n, grace = toy(max_steps=30, sweep={"seed": None}), f"two-workers-{uuid.uuid4().hex[:8]}", 6, 3
    out = tmp_path / "out"

    def worker(n_trials: int):
        command = [sys.executable, "-m", "prompting.cli", "sweep", str(config), "--storage", postgres_url,
                   "--study", study, "--n-trials", str(n_trials), "--output-dir", str(out), "-q",
                   "--heartbeat-interval", "1", "--grace-period", str(grace)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

    victim, survivor = worker(n), worker(n)
    victim_tag = f":{victim.pid}"
    storage = open_storage(postgres_url)  # as the workers read the URL (psycopg2)
    killed = None
    deadline = time.monotonic() + 90
    while killed is None and time.monotonic() < deadline:
        assert victim.poll() is None, victim.stdout.read()
        try:
            running = [t for t in _trials(storage, study) if t.state == States.RUNNING
                       and t.user_attrs.get("worker", "").endswith(victim_tag) and t.intermediate_values]
        except KeyError:  # the study is not created yet
            running = []
        if running:
            victim.send_signal(signal.SIGKILL)
            killed = running[0].number
        time.sleep(0.05)
    assert killed is not None, "the victim never got half-way through a trial"
    victim.wait(timeout=10)
    time.sleep(grace + 1)  # the victim's last heartbeat is now older than the grace period
    late = worker(n)
    outputs = [p.communicate(timeout=120)[0] for p in (survivor, late)]
    for p, output in zip((survivor, late), outputs):
        assert p.returncode == 0, output
    trials = _trials(storage, study)
    assert sum(t.state in (States.COMPLETE, States.PRUNED) for t in trials) >= n
    assert not [t.number for t in trials if t.state in (States.RUNNING, States.WAITING)]
    _check_retry(trials, trials[killed])
    _check_records(out, trials)
    assert sum(f"(retry of trial {killed})" in output for output in outputs) == 1


# ------------------------------------------------------------------------------------ SQLite
def test_sqlite_sweep_interrupted_resumes_and_exports_the_best(toy, tmp_path, monkeypatch, capsys):
    """Ctrl-C in the middle of a trial, then the same command again: the interrupted trial is failed
    and re-run with its parameters (its finished data seed reused); the best exports as a config
    whose `prompting run` gives the same dev scores."""
    from prompting.experiment.executor import RunExecutor

    config, out = toy(), tmp_path / "out"
    storage = f"sqlite:///{tmp_path / 'sweep.db'}"
    args = ["sweep", str(config), "--storage", storage, "--n-trials", "3", "--output-dir", str(out), "-q",
            "--export-best", str(tmp_path / "best.yaml")]
    execute, calls = RunExecutor.execute, []

    def interrupted(self, run, *rest, **kw):
        calls.append(run.data_seed)
        if len(calls) == 4:  # trial 1, second data seed
            raise KeyboardInterrupt
        return execute(self, run, *rest, **kw)

    monkeypatch.setattr(RunExecutor, "execute", interrupted)
    assert cli.main(args) == 130
    monkeypatch.setattr(RunExecutor, "execute", execute)
    assert cli.main(args) == 0
    study = optuna.load_study(study_name=Sweep(load_config(config), out).study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert sum(t.state == States.COMPLETE for t in trials) == 3
    _check_retry(trials, trials[1])
    _check_records(out, trials)

    best = load_config(tmp_path / "best.yaml")
    assert len(best.methods) == 1 and best.sweep is None
    assert best.methods[0].params["encoder"] == study.best_params["encoder"]
    assert best.methods[0].train_config["lr"] == study.best_params["lr"]
    assert cli.main(["run", str(tmp_path / "best.yaml"), "--output-dir", str(tmp_path / "rerun"), "-q"]) == 0
    rerun = {r["data_seed"]: r["dev"]["accuracy"] for r in ResultsStore(tmp_path / "rerun").records()}
    assert rerun == {int(k): v for k, v in study.best_trial.user_attrs["dev_by_seed"].items()}
    report = capsys.readouterr().out
    assert "sweep_history" in report and (out / "plots").is_dir()
    assert any(p.name.endswith("_history.png") for p in (out / "plots").iterdir())


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # the test asks for the dead trial by hand
def test_a_dead_workers_trial_is_rerun_by_the_same_command_after_the_study_finished(toy, tmp_path):
    """The study has its N trials, but a worker died in one more: starting the command again (after
    the grace period) fails that trial and runs its parameters, instead of returning at once."""
    cfg, url = load_config(toy(max_steps=8)), f"sqlite:///{tmp_path / 's.db'}"
    sweep = lambda: Sweep(cfg, tmp_path, storage=url, n_trials=2, heartbeat_interval=1, grace_period=1)
    study = sweep().run(log=lambda line: None)
    dead = study.ask(fixed_distributions=study.trials[0].distributions)  # beats once, then never again
    study._storage.record_heartbeat(dead._trial_id)
    time.sleep(2)
    lines = []
    trials = sweep().run(log=lines.append).get_trials(deepcopy=False)
    assert trials[dead.number].state == States.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert [t.state for t in retry] == [States.COMPLETE] and retry[0].params == dead.params
    assert len(trials) == 4 and any(f"(retry of trial {dead.number})" in line for line in lines)
    lines.clear()
    assert len(sweep().run(log=lines.append).get_trials()) == 4 and not lines, "nothing is left to run"


def test_a_pruned_trial_stops_after_its_first_data_seed(toy, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: calls.append(self.number) or self.number == 1)
    cfg = load_config(toy(sweep={"pruner": "median"}))
    sweep = Sweep(cfg, tmp_path, storage=f"sqlite:///{tmp_path / 's.db'}", n_trials=3)
    trials = sweep.run(log=lambda line: None).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [States.COMPLETE, States.PRUNED, States.COMPLETE]
    assert list(trials[1].intermediate_values) == [0] and list(trials[1].user_attrs["dev_by_seed"]) == ["13"]
    tagged = [r for r in ResultsStore(tmp_path).records() if r["sweep"]["trial"] == 1]
    assert [r["data_seed"] for r in tagged] == [13], "a pruned trial runs no further data seed"
    assert calls == [0, 1, 2], "no pruning after the last data seed: the trial's work is done"


def test_seed_sweep_tries_each_training_seed_once_and_plots_them(toy, tmp_path):
    cfg = load_config(toy(max_steps=8))
    sweep = Sweep(cfg, tmp_path, storage=f"sqlite:///{tmp_path / 's.db'}", seed_sweep=True, n_trials=3)
    study = sweep.run(log=lambda line: None)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.params["train_seed"] for t in trials) == [1, 2, 3]
    seeds = {r["train_seed"] for r in ResultsStore(tmp_path).records()}
    assert seeds == {1, 2, 3}
    paths = sweep.write_report(study)
    assert paths["sweep_seeds"].exists() and "training seeds" in paths["sweep_report"].read_text()


# ------------------------------------------------------------------------------------ clear errors
@pytest.mark.parametrize("url, message", [
    ("runs/sweep.db", "is not a database URL"),
    ("postgres://me@localhost/sweeps", "write postgresql://"),
    ("http://example.org/db", "not a supported database"),
    ("postgresql://me:secret@127.0.0.1:1/sweeps", "cannot open storage"),
])
def test_bad_storage_urls_get_clear_errors(url, message):
    if "127.0.0.1:1" in url and _missing("psycopg2"):
        pytest.skip("psycopg2 is not installed")
    with pytest.raises(StorageError, match=message) as err:
        open_storage(url)
    assert "secret" not in str(err.value)


def test_bad_storage_url_on_the_command_line(toy, tmp_path, capsys):
    assert cli.main(["sweep", str(toy()), "--storage", "sweep.db", "--n-trials", "1",
                     "--output-dir", str(tmp_path)]) == 2
    assert "is not a database URL" in capsys.readouterr().err


@pytest.mark.parametrize("params, message", [
    ({"learning_rate": {"low": 1e-4, "high": 1e-2}}, "unknown parameter 'learning_rate' for method 'ptuning'"),
    ({"lr": {"low": 1e-2, "high": 1e-4}}, "low=0.01 must be below high=0.0001"),
    ({"lr": {"low": 0, "high": 1e-2, "log": True}}, "log: true needs low > 0"),
    ({"encoder": {"choices": []}}, "choices=\\[\\] is not valid"),
    ({"lr": {"low": 1e-4, "high": 1e-2, "scale": "log"}}, "unknown key 'scale'"),
    ({"trigger_length": {"low": 1, "high": 4}}, "'trigger_length' needs one template with a {trigger:N} slot"),
])
def test_bad_search_spaces_name_the_parameter(toy, params, message):
    data = json.loads(toy().read_text())
    data["sweep"]["params"] = params
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_sweep_section_and_method_choice_are_checked(toy):
    data = json.loads(toy().read_text())
    with pytest.raises(ConfigError, match="sweep: unknown key 'trials'"):
        parse_config({**data, "sweep": {"trials": 3}})
    with pytest.raises(ConfigError, match="sweep.objective: 'median' is not valid; choose one of mean, stable"):
        parse_config({**data, "sweep": {"objective": "median"}})
    two = {**data, "methods": data["methods"] + [{"name": "manual", "train": False}], "sweep": {}}
    with pytest.raises(ConfigError, match="the config has 2 methods"):
        Sweep(parse_config(two), "out")
    with pytest.raises(ConfigError, match="'prefix' is not one of the config's methods"):
        Sweep(parse_config(two), "out", method="prefix")


def test_joining_a_study_made_for_another_method_is_refused(toy, tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    methods = [{"name": "ptuning", "template": TEMPLATE, "max_steps": 4},
               {"name": "manual", "train": True, "max_steps": 4}]
    cfg = parse_config({**json.loads(toy().read_text()), "methods": methods, "sweep": {"params": {}}})
    Sweep(cfg, tmp_path, storage=storage, study_name="shared", method="ptuning").run()  # creates it, runs nothing
    with pytest.raises(SweepError, match="created for method 'ptuning'; this command sweeps method 'manual'"):
        Sweep(cfg, tmp_path, storage=storage, study_name="shared", method="manual").run()
    with pytest.raises(SweepError, match="created for objective 'mean'; this command sweeps objective 'stable'"):
        Sweep(cfg, tmp_path, storage=storage, study_name="shared", method="ptuning", objective="stable").run()


def test_the_stable_objective_subtracts_lambda_times_the_spread_over_data_seeds():
    from prompting.sweeps.sweep import objective_value

    assert objective_value([0.8, 0.6]) == pytest.approx(0.7)
    assert objective_value([0.8, 0.6], "stable", 2.0) == pytest.approx(0.7 - 2.0 * statistics.stdev([0.8, 0.6]))
    assert objective_value([0.8], "stable", 2.0) == pytest.approx(0.8)


def test_a_diverged_trial_leaves_the_lm_as_it_was_for_the_next(make_tiny_lm, monkeypatch):
    """Sweeps reuse one LM across trials: a tune_lm run that raises must not leave its weights behind."""
    import torch

    from prompting.core.data import Example, Task
    from prompting.experiment.executor import RunExecutor
    from prompting.experiment.harness import Experiment, MethodSpec, Protocol
    from prompting.training.loop import TrainingError

    lm = make_tiny_lm("llama")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}

    def diverge(method, *args, **kwargs):
        with torch.no_grad():
            for p in method.lm.model.parameters():
                p.add_(1.0)
        raise TrainingError("loss became nan")

    monkeypatch.setattr(RunExecutor, "fit", lambda self, run, method, *args: diverge(method))
    examples = [Example({"text_a": f"the film was {a}."}, str(int(a in POSITIVE))) for a in POSITIVE + NEGATIVE]
    task = Task("toy", ("0", "1"), ("text_a",), examples, examples[:4])
    experiment = Experiment(lm, task, [MethodSpec("manual", train=True, train_config={"max_steps": 1})],
                            [("{text_a} It was {mask}.", {"0": ["bad"], "1": ["good"]})], Protocol(k=2, data_seeds=(13,)))
    with pytest.raises(TrainingError):
        experiment.run(progress=False)
    assert all(torch.equal(before[k], v) for k, v in lm.model.state_dict().items())


def _open_and_join(url: str, barrier, results) -> None:
    import optuna

    barrier.wait()
    try:
        optuna.create_study(study_name="race", storage=open_storage(url), load_if_exists=True)
        results.put("ok")
    except Exception as err:  # noqa: BLE001 - the test reports whatever went wrong
        results.put(f"{type(err).__name__}: {err}")


def test_workers_started_at_the_same_moment_on_a_new_sqlite_storage_all_join(tmp_path):
    """Three workers open a storage that does not exist yet at the same instant, 20 times in a row (a new
    storage takes about a second to create): the first creates the tables while the others find them
    half made; every worker must join. Before the retry, 9 rounds in 10 lost a worker."""
    import multiprocessing

    import optuna  # noqa: F401 - imported once here, so the forked workers start at once
    import sqlalchemy.dialects.sqlite  # noqa: F401

    context = multiprocessing.get_context("fork")
    for round_ in range(20):
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"
        barrier, results = context.Barrier(3), context.Queue()
        workers = [context.Process(target=_open_and_join, args=(url, barrier, results)) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        outcomes = [results.get(timeout=5) for _ in workers]
        assert outcomes == ["ok"] * 3, f"round {round_}: {outcomes}"


# ------------------------------------------------------------------------------------ watching a sweep
def test_a_sweep_with_tensorboard_writes_every_trials_curves(toy, tmp_path):
    """`prompting sweep --tensorboard DIR`: every run of every trial has its folder, with its training
    loss and dev curve, and its trial and parameters among its TensorBoard hyper-parameters."""
    pytest.importorskip("tensorboard")
    from test_curves import read_runs

    out, curves = tmp_path / "out", tmp_path / "tb"
    assert cli.main(["sweep", str(toy(max_steps=4)), "--n-trials", "2", "--output-dir", str(out), "-q",
                     "--tensorboard", str(curves)]) == 0
    records = {r["run_id"]: r for r in ResultsStore(out).records()}
    runs = read_runs(curves)
    assert set(runs) == set(records) and len(runs) == 4  # two trials, two data seeds each
    for run_id, run in runs.items():
        record = records[run_id]
        assert [s for s, _ in run["scalars"]["train/loss"]] == [1, 2, 3, 4]
        assert [(s, pytest.approx(v)) for s, v in run["scalars"]["dev/accuracy"]] == \
            [(s, dev) for s, dev, _ in record["dev_curve"]]
        assert run["settings"]["sweep_trial"] == record["sweep"]["trial"]
        assert run["settings"]["sweep_params_lr"] == pytest.approx(record["sweep"]["params"]["lr"])


def test_optuna_dashboard_reads_a_sweeps_storage_as_it_is(toy, tmp_path):
    """The storage a sweep writes by default (sqlite:///OUTPUT_DIR/sweep.db), opened by optuna-dashboard's
    own server: the study, its trials' parameters and their intermediate values per data seed."""
    dashboard = pytest.importorskip("optuna_dashboard")
    from wsgiref.util import setup_testing_defaults

    out = tmp_path / "out"
    assert cli.main(["sweep", str(toy(max_steps=4)), "--n-trials", "1", "--output-dir", str(out), "-q"]) == 0
    app = dashboard.wsgi(f"sqlite:///{out / 'sweep.db'}")

    def get(path: str) -> dict:
        environ, answer = {"PATH_INFO": path}, {}
        setup_testing_defaults(environ)
        body = b"".join(app(environ, lambda status, headers, exc_info=None: answer.update(status=status)))
        assert answer["status"] == "200 OK", body[:300]
        return json.loads(body)

    (study,) = get("/api/studies")["study_summaries"]
    (swept,) = _trials(f"sqlite:///{out / 'sweep.db'}", study["study_name"])
    assert study["study_name"] == Sweep(load_config(toy(max_steps=4)), out).study_name
    (trial,) = get(f"/api/studies/{study['study_id']}")["trials"]
    assert trial["state"] == "Complete" and {p["name"] for p in trial["params"]} == set(swept.params) >= {"lr"}
    assert [(v["step"], v["value"]) for v in trial["intermediate_values"]] == sorted(swept.intermediate_values.items())
    assert len(trial["intermediate_values"]) == 2  # one per data seed
