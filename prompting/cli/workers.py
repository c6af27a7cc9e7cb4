"""Options of ``prompting run`` for many workers, and the local worker processes it starts
(see :mod:`prompting.experiment.workers` for how they share the runs)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from prompting.cli.common import check_count, quiet_optuna
from prompting.experiment.storage import engine_url, open_storage, shown_url

__all__ = ["add_worker_options", "check_worker_options", "check_storage", "run_workers"]


def add_worker_options(p) -> None:
    p.add_argument("--storage", help="database URL of the work queue: sqlite:///PATH/runs.db (one machine) or "
                                     "postgresql://USER:PW@HOST:PORT/DB (many); every worker given it shares the runs")
    p.add_argument("--workers", type=int, help="start this many local worker processes (default storage: "
                                               "sqlite:///OUTPUT_DIR/.workers/runs.db)")
    p.add_argument("--devices", help="comma-separated devices, one per worker in turn (e.g. cuda:0,cuda:1)")
    p.add_argument("--device", help="device for this process (overrides the config's device)")
    p.add_argument("--heartbeat-interval", type=int, default=30, help="seconds between a worker's heartbeats")
    p.add_argument("--grace-period", type=int, default=120,
                   help="seconds without heartbeat before a worker's run is given to another")


def check_worker_options(args, output: Path) -> None:
    check_count("--workers", args.workers, "worker processes to start")
    check_count("--heartbeat-interval", args.heartbeat_interval, "seconds between heartbeats")
    check_count("--grace-period", args.grace_period, "seconds without heartbeat before a run is given to another")
    if args.heartbeat_interval >= args.grace_period:
        raise ValueError(f"--heartbeat-interval {args.heartbeat_interval} must be shorter than --grace-period "
                         f"{args.grace_period}")
    if args.devices is not None and args.workers is None:
        raise ValueError(f"--devices {args.devices!r} assigns devices to workers; give --workers N too "
                         "(or --device for this one process)")
    if args.devices is not None and args.device is not None:
        raise ValueError("give --devices (one per worker) or --device (every worker), not both")
    if args.workers is not None:
        _devices(args)  # a device that is not there fails every worker: refused before they start
    if args.workers is not None and args.storage is None:
        args.storage = "sqlite:///" + str((output / ".workers" / "runs.db").resolve())
    if args.storage is not None:
        engine_url(args.storage)  # a bad URL is refused before any model loads


def check_storage(args) -> None:
    """Connect to ``--storage`` once, before any model loads: a database that cannot be reached (no server,
    a wrong password) is found now, not after the model has loaded."""
    quiet_optuna(args)
    open_storage(args.storage, args.heartbeat_interval, args.grace_period).engine.dispose()


def _devices(args) -> list[str | None]:
    from prompting.lm.loading import resolve_device

    if args.devices is None:
        if args.device is not None:
            resolve_device(args.device)  # every worker would fail on it: refused before they start
        return [args.device] * args.workers
    devices = [d.strip() for d in args.devices.split(",")]
    if not all(devices):
        raise ValueError(f"--devices {args.devices!r} has an empty entry; give e.g. cuda:0,cuda:1")
    for d in devices:
        try:
            resolve_device(d)
        except ValueError as err:
            raise ValueError(f"--devices: {err}") from None
    return [devices[i % len(devices)] for i in range(args.workers)]


def _worker_command(args, device: str | None) -> list[str]:
    command = [sys.executable, "-m", "prompting.cli", "run", str(args.config), "--output-dir", str(args.output_dir),
               "--storage", args.storage, "--heartbeat-interval", str(args.heartbeat_interval),
               "--grace-period", str(args.grace_period), "-q", "--no-summary"]
    if device is not None:
        command += ["--device", device]
    if args.test_limit is not None:
        command += ["--test-limit", str(args.test_limit)]
    if args.allow_download:
        command.append("--allow-download")
    if args.tensorboard:
        command += ["--tensorboard", str(args.tensorboard)]
    if args.mlflow:
        command += ["--mlflow"] + ([] if args.mlflow is True else [str(args.mlflow)])
    return command


def run_workers(args, output: Path) -> int:
    """Start ``args.workers`` local ``prompting run`` processes on one storage and wait for them all;
    each writes its output to ``OUTPUT_DIR/.workers/worker-N.log``. Returns 0 when every one finished."""
    logs = output / ".workers"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / ".gitignore").write_text("*\n")
    args.output_dir = str(output)
    children = []
    for i, device in enumerate(_devices(args)):
        log = open(logs / f"worker-{i}.log", "w")
        children.append((subprocess.Popen(_worker_command(args, device), stdout=log, stderr=subprocess.STDOUT), log, device))
    print(f"{len(children)} workers on {shown_url(args.storage)} (logs: {logs}): "
          + ", ".join(f"pid {p.pid}" + (f" on {d}" if d else "") for p, _, d in children), flush=True)
    try:
        codes = [p.wait() for p, _, _ in children]
    except KeyboardInterrupt:
        for p, _, _ in children:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p, _, _ in children:
            p.wait()
        raise
    finally:
        for _, log, _ in children:
            log.close()
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    for i, code in failed:
        tail = (logs / f"worker-{i}.log").read_text(errors="replace").strip().splitlines()[-5:]
        print(f"worker {i} ended with exit status {code}; the end of {logs / f'worker-{i}.log'}:\n  "
              + "\n  ".join(tail), file=sys.stderr)
    return 1 if failed else 0
