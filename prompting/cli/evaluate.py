"""``prompting eval``: every pattern x verbalizer of a task zero-shot (or a LAMA relation's template)."""

from __future__ import annotations

import time
from pathlib import Path

from prompting.cli.common import add_task_and_model, check_count, prompts_of, task_source

__all__ = ['add_eval_parser', 'cmd_eval']


def cmd_eval(args) -> int:
    from prompting.config.experiment import parse_config
    from prompting.experiment.harness import build_experiment
    from prompting.core.paths import check_output_dir, slug
    from prompting.reporting.tables import zero_shot_table

    check_count("--limit", args.limit, "test examples to score (leave it out for the whole test set)")
    if args.task == "lama" or args.relation:
        return cmd_probe_eval(args)
    task, base, prompts = task_source(args)
    patterns, verbalizers = prompts_of(args, task, base, prompts)
    name = task["name"]
    data = {"name": f"{name}-zero-shot", "model": args.model, "device": args.device, "task": task,
            "fewshot": {"k": args.k, "data_seeds": [args.data_seed], "test_limit": args.limit,
                        "eval_batch_size": args.batch_size},
            "templates": {"patterns": patterns, "verbalizers": verbalizers},
            "methods": [{"name": "manual", "train": False}]}
    if args.max_length:
        data["max_length"] = args.max_length
    cfg = parse_config(data, base=base)
    output = check_output_dir(args.output_dir or Path("runs") / f"{slug(name)}-zero-shot")
    started = time.perf_counter()
    records = build_experiment(cfg, output, allow_download=args.allow_download).run(progress=not args.quiet)
    n = records[0]["n_test"] if records else 0
    print(f"\nzero-shot on {name} ({n} test examples, model {args.model}), "
          f"{time.perf_counter() - started:.0f} s\n")
    print(zero_shot_table(records))
    print(f"\nrecords: {output / 'results.jsonl'}")
    return 0


def cmd_probe_eval(args) -> int:
    """``prompting eval --task lama --relation P103``: the relation's manual template, zero-shot, both
    protocols (or --protocol), over --limit test facts (default all)."""
    from prompting.config.experiment import parse_probe_config
    from prompting.core.paths import check_output_dir, slug
    from prompting.experiment.harness import build_experiments
    from prompting.reporting.probing import probe_table

    if args.task != "lama" or not args.relation or not args.data_dir:
        raise ValueError("fact probing: give --task lama, --relation (e.g. P103) and --data-dir (the folder "
                         "with relations.tsv and one folder per relation)")
    data = {"name": f"lama-{args.relation}-zero-shot", "model": args.model, "device": args.device,
            "task": {"name": "lama", "data_dir": args.data_dir, "relations": [args.relation],
                     **({"template": args.template} if args.template else {})},
            "limits": {"test": args.limit, "vocab_test": args.limit},
            "protocols": [args.protocol] if args.protocol else ["candidates", "vocab"],
            "methods": [{"name": "manual", "train": False}]}
    cfg = parse_probe_config(data)
    output = check_output_dir(args.output_dir or Path("runs") / slug(f"lama-{args.relation}-zero-shot"))
    started = time.perf_counter()
    records = [r for experiment in build_experiments(cfg, output, allow_download=args.allow_download)
               for r in experiment.run(progress=not args.quiet)]
    print(f"\nzero-shot fact probing, relation {args.relation} (model {args.model}), "
          f"{time.perf_counter() - started:.0f} s\n")
    for metric in ("p_at_1", "p_at_10", "mrr"):
        print(f"{metric}:\n{probe_table(records, metric)}\n")
    print(f"records: {output / 'results.jsonl'}")
    return 0


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="zero-shot: score every pattern x verbalizer of a task")
    add_task_and_model(p)
    p.add_argument("--templates", help="prompt file (default: the built-in one for the task)")
    p.add_argument("--relation", help="fact probing (--task lama): the relation to probe, e.g. P103")
    p.add_argument("--protocol", choices=["candidates", "vocab"],
                   help="fact probing: rank the relation's objects or the whole vocabulary (default both)")
    p.add_argument("--template", help="fact probing: a template of your own ([X] subject, [Y] object)")
    p.add_argument("--limit", type=int, help="score a fixed random subset of this many test examples")
    p.add_argument("--k", type=int, default=16, help="K per class of the dev set drawn from train")
    p.add_argument("--data-seed", type=int, default=13)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--output-dir", help="where results.jsonl goes (default runs/TASK-zero-shot)")
    p.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded (off by default)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)
