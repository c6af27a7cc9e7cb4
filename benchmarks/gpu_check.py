"""The GPU check: device tests, the main job in bfloat16, and a throughput benchmark, in one go.

    bash benchmarks/gpu_check.sh                         # install, then this on cuda: benchmarks/results/gpu.md
    python benchmarks/gpu_check.py --device cuda         # the same, without the install step
    python benchmarks/gpu_check.py --device cpu --config tiny.yaml --model TINY_DIR --out check.md   # a dry run

Steps, each timed and written to the Markdown file (default benchmarks/results/gpu.md on a GPU,
benchmarks/results/gpu_check_cpu.md with ``--device cpu``):

1. the tests that need the device (``tests/test_device.py`` with ``PROMPTING_TEST_DEVICE``);
2. the main job (``--config``, default experiments/quickstart.yaml) in ``--dtype`` (bfloat16): the
   methods that keep the LM frozen in that dtype, those that train its weights (PET) in float32, as
   a second document of the same config; with several GPUs one ``prompting run`` worker per GPU
   (``--workers N --devices cuda:0,...``);
3. throughput per method of the config: scoring and training examples per second in ``--dtype``
   (PET in float32) and the peak GPU memory of each phase.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu (a dry run of the script)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--config", default=str(ROOT / "experiments" / "quickstart.yaml"))
    p.add_argument("--model", help="replace the config's model (e.g. a larger one from the local cache)")
    p.add_argument("--test-limit", type=int, help="replace the config's fewshot.test_limit")
    p.add_argument("--output-dir", default=str(ROOT / "runs" / "gpu-check"), help="where the main job records its runs")
    p.add_argument("--score-examples", type=int, default=512, help="examples scored per method in the benchmark")
    p.add_argument("--train-steps", type=int, default=20, help="training steps timed per method in the benchmark")
    p.add_argument("--skip", nargs="*", default=[], choices=["tests", "main", "throughput"])
    p.add_argument("--out", help="the Markdown file to write")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------ main job
def split_config(path: Path, dtype: str, model: str | None, folder: Path) -> Path:
    """The config in ``dtype`` for the methods that keep the LM frozen, plus a float32 document for
    those that train its weights (which ``dtype`` other than float32 refuses)."""
    from prompting.config.experiment import METHODS

    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    out = []
    for data in documents:
        data = {**data, **({"model": model} if model else {})}
        # the copy lives elsewhere: files named relative to the config are named by their full path
        for section, keys in (("task", ("data_dir", "train", "dev", "test")), ("templates", ("file",))):
            if isinstance(data.get(section), dict):
                data[section] = {k: str((path.parent / v).resolve()) if k in keys and isinstance(v, str)
                                 and (path.parent / v).exists() else v for k, v in data[section].items()}
        tunes = lambda m: m.get("train", True) and {**METHODS.config(m["name"]).train_defaults, **m}.get("tune_lm")
        frozen = [m for m in data["methods"] if not tunes(m)]
        tuned = [m for m in data["methods"] if tunes(m)]
        if frozen:
            out.append({**copy.deepcopy(data), "dtype": dtype, "methods": frozen})
        if tuned:
            out.append({**copy.deepcopy(data), "dtype": "float32", "methods": tuned})
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{path.stem}-{dtype}.yaml"
    target.write_text(yaml.safe_dump_all(out, sort_keys=False, allow_unicode=True))
    return target


def main_job(args, device: str) -> dict:
    config = split_config(Path(args.config), args.dtype, args.model, Path(args.output_dir))
    command = [sys.executable, "-m", "prompting.cli", "run", str(config), "--output-dir", args.output_dir, "-q"]
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    if gpus > 1:
        command += ["--workers", str(gpus), "--devices", ",".join(f"cuda:{i}" for i in range(gpus))]
    else:
        command += ["--device", device]
    if args.test_limit:
        command += ["--test-limit", str(args.test_limit)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    return {"command": " ".join(command[1:]).replace(str(ROOT) + "/", ""), "exit": done.returncode,
            "seconds": round(seconds, 1), "table": table,
            "error": "" if done.returncode == 0 else (done.stderr or done.stdout)[-2000:]}


# ------------------------------------------------------------------------------------ throughput
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _examples(items: list, n: int) -> list:
    return [items[i % len(items)] for i in range(n)]


def measure(cfg, spec, lm, task, args) -> dict:
    """Scoring and training examples/s of one method entry, and the peak GPU memory of each."""
    from prompting.tasks.classification import prompts_for
    from prompting.methods import build_method
    from prompting.core.settings import TrainConfig
    from prompting.training.loop import train
    from prompting.core.verbalizer import Verbalizer

    template, verbalizer = prompts_for(spec, cfg.prompts)[0]
    torch.manual_seed(0)
    method = build_method(spec.name, lm, template, Verbalizer(verbalizer), labels=task.labels,
                          max_length=cfg.max_length, **spec.params)
    scored = method.encode(_examples(list(task.test), args.score_examples))
    batch = cfg.protocol.eval_batch_size
    method.predict_scores(method.encode(list(task.test)[:batch]), batch)  # warm-up: kernels, caches
    _reset(lm.device)
    _sync(lm.device)
    started = time.perf_counter()
    method.predict_scores(scored, batch)
    _sync(lm.device)
    row = {"label": spec.label, "dtype": str(lm.dtype).replace("torch.", ""),
           "score_per_s": round(args.score_examples / (time.perf_counter() - started), 1),
           "score_peak_mb": _peak(lm.device)}
    if spec.train:
        config = TrainConfig(**{**method.config_class.train_defaults, **spec.train_config, "seed": 1,
                                "max_steps": args.train_steps, "eval_every": None, "patience": None})
        examples = method.encode(_examples(list(task.train), max(32, config.batch_size * 4)))
        _reset(lm.device)
        _sync(lm.device)
        started = time.perf_counter()
        result = train(method, examples, None, config, progress=False)
        _sync(lm.device)
        seconds = time.perf_counter() - started
        if spec.name == "autoprompt":  # a search, not gradient steps: its time, not examples/s
            row.update(train_per_s=None, train_what=f"search: {result.steps} iterations over {len(examples)} "
                                                    f"examples in {seconds:.1f} s")
        else:
            row.update(train_per_s=round(result.steps * config.batch_size / seconds, 1),
                       train_what=f"{result.steps} steps x {config.batch_size}")
        row["train_peak_mb"] = _peak(lm.device)
    return row


def throughput(args, device: str) -> list[dict]:
    from prompting.lm.model import LanguageModel
    from prompting.config.experiment import load_configs, load_task_spec

    cfg = load_configs(args.config)[0]
    task = load_task_spec(cfg.task, cfg.base)
    models: dict[str, tuple] = {}  # dtype -> (the LM, its weights as loaded)
    rows = []
    for spec in cfg.methods:
        tunes = spec.train and {**_defaults(spec.name), **spec.train_config}.get("tune_lm")
        dtype = "float32" if tunes else args.dtype
        if dtype not in models:
            models.clear()  # one model in memory at a time
            _reset(torch.device(device))
            lm = LanguageModel.load(args.model or cfg.model, device=device, dtype=dtype,
                                    max_length=cfg.max_length or 512)
            models[dtype] = (lm, {k: v.detach().clone() for k, v in lm.model.state_dict().items()} if dtype == "float32" else None)
        lm, weights = models[dtype]
        rows.append(measure(cfg, spec, lm, task, args))
        if tunes:  # the next entry starts from the weights as loaded
            lm.model.load_state_dict(weights)
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _defaults(name: str) -> dict:
    from prompting.methods import METHODS

    return METHODS.config(name).train_defaults


# ------------------------------------------------------------------------------------ tests, report
def device_tests(device: str) -> dict:
    env = {**os.environ, "PROMPTING_TEST_DEVICE": device}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_device.py"],
                          capture_output=True, text=True, cwd=ROOT, env=env)
    lines = done.stdout.strip().splitlines()
    return {"exit": done.returncode, "summary": lines[-1] if lines else done.stderr[-500:],
            "seconds": round(time.perf_counter() - started, 1),
            "failures": "" if done.returncode == 0 else done.stdout[-3000:]}


def machine(device: str) -> list[str]:
    import transformers

    lines = [f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}"]
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        lines.append(f"- GPU: {torch.cuda.device_count()} x {props.name}, {props.total_memory / 2**30:.0f} GiB; "
                     f"CUDA {torch.version.cuda}")
    else:
        lines.append(f"- CPU only ({os.cpu_count()} cores): a dry run of the script, not GPU figures")
    return lines


def markdown(args, device: str, tests: dict | None, job: dict | None, rows: list[dict] | None) -> str:
    out = [f"# GPU check ({device}, {args.dtype})", "",
           "Made by `bash benchmarks/gpu_check.sh` (`python benchmarks/gpu_check.py`): the device tests, the "
           f"main job and the throughput of each method, with the LM in {args.dtype} (PET, which trains the "
           "LM's weights, in float32).", ""] + machine(device) + [""]
    if tests is not None:
        out += ["## Device tests", "", f"`tests/test_device.py` on {device}: {tests['summary']} ({tests['seconds']} s)", ""]
        if tests["failures"]:
            out += ["```", tests["failures"], "```", ""]
    if job is not None:
        out += ["## Main job", "", f"`{job['command']}`: exit {job['exit']}, {job['seconds']} s", ""]
        out += (job["table"] + [""]) if job["table"] else []
        if job["error"]:
            out += ["```", job["error"], "```", ""]
    if rows is not None:
        out += ["## Throughput", "",
                f"{args.score_examples} test examples scored per method; {args.train_steps} training steps per "
                "trained method (AutoPrompt: its whole search, as many iterations as the config sets, timed).", "",
                "| method | dtype | scoring examples/s | peak MB scoring | training examples/s | peak MB training | timed |",
                "|---|---|---:|---:|---:|---:|---|"]
        shown = lambda v: "–" if v is None else f"{v:,}"
        for r in rows:
            out.append(f"| {r['label']} | {r['dtype']} | {shown(r['score_per_s'])} | {shown(r['score_peak_mb'])} | "
                       f"{shown(r.get('train_per_s'))} | {shown(r.get('train_peak_mb'))} | {r.get('train_what', 'scoring only')} |")
        out.append("")
    return "\n".join(out)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {device}: torch {torch.__version__} sees no CUDA device; give --device cpu for a dry run",
              file=sys.stderr)
        return 2
    out = Path(args.out or RESULTS / ("gpu.md" if device.startswith("cuda") else "gpu_check_cpu.md"))
    tests = None if "tests" in args.skip else device_tests(device)
    job = None if "main" in args.skip else main_job(args, device)
    rows = None if "throughput" in args.skip else throughput(args, device)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown(args, device, tests, job, rows))
    print(f"written: {out}")
    return 0 if (tests is None or tests["exit"] == 0) and (job is None or job["exit"] == 0) else 1


if __name__ == "__main__":
    raise SystemExit(main())
