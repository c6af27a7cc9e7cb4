"""``prompting search-labels``: label words for a template from labelled examples."""

from __future__ import annotations

import time
from pathlib import Path

from prompting.cli.common import add_task_and_model, prompts_of, task_source

__all__ = ['add_search_labels_parser', 'cmd_search_labels', 'search_labels_table']


def _search_template(args, task: dict, base, prompts) -> str:
    """The template to search label words for: --template, else pattern --pattern of --templates (or
    of the config's templates, or of the task's built-in prompt file)."""
    from prompting.config.experiment import ConfigError

    if args.template is not None:
        if args.templates is not None or args.pattern is not None:
            raise ValueError("--template is a template of its own; give it without --templates / --pattern")
        return args.template
    source = args.templates or (args.config if prompts else task["name"])
    try:
        patterns, _ = prompts_of(args, task, base, prompts)
    except ConfigError as err:
        raise ConfigError(f"--templates {source!r}: {err}") from None
    index = 0 if args.pattern is None else args.pattern
    if not 0 <= index < len(patterns):
        raise ValueError(f"--pattern {index} is out of range; {source} has {len(patterns)} patterns "
                         f"(0 to {len(patterns) - 1})")
    return patterns[index]


def _search_examples(args, task) -> tuple[list, str]:
    """The labelled examples to rank words on, and a few words saying which."""
    import random

    from prompting.core.data import sample_kshot

    if args.k is not None:
        train, _ = sample_kshot(task.train, args.k, args.data_seed, task.labels)  # the harness's train split
        return train, f"K = {args.k} per class, data seed {args.data_seed}"
    if args.limit is not None and args.limit < len(task.train):
        return (random.Random(args.data_seed).sample(list(task.train), args.limit),
                f"random {args.limit} of {len(task.train)}, data seed {args.data_seed}")
    return list(task.train), "all of train"


def search_labels_table(result, labels, n: int) -> str:
    """Per label, one block: its ``n`` best words with their scores, best first."""
    blocks = []
    width = max([4] + [len(w) for ranked in result.words.values() for w, _ in ranked[:n]])
    for label in labels:
        ranked = result.words[str(label)][:n]
        lines = [f"label {label}:", f"  {'rank':>4}  {'word':<{width}}  score"]
        lines += [f"  {i:>4}  {word:<{width}}  {score:.4f}" for i, (word, score) in enumerate(ranked, 1)]
        if len(ranked) < n:
            lines.append(f"  (only {len(ranked)} words pass the filters)")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _check_search_options(args, task: dict) -> None:
    """Every option of search-labels that can be checked before any data or model is loaded."""
    from prompting.training.labelsearch import RANKINGS

    if task.get("choices") is not None:
        raise ValueError(f"task {task['name']!r} is a multiple-choice task: its label words are each example's "
                         "choices, there are no words to search")
    if args.method not in RANKINGS:
        raise ValueError(f"--method {args.method!r} is not valid; choose one of {', '.join(RANKINGS)}")
    for option, value in (("--k", args.k), ("--limit", args.limit), ("--top", args.top),
                          ("--words-per-label", args.words_per_label), ("--pattern", args.pattern)):
        low = 0 if option == "--pattern" else 1
        if value is not None and value < low:
            raise ValueError(f"{option} {value} is not valid; give an integer >= {low}")
    if args.k is not None and args.limit is not None:
        raise ValueError(f"--limit {args.limit} is not valid together with --k {args.k}; give one of them "
                         "(--k: K per class as the harness samples it; --limit: a random subset of train)")
    if args.write:  # a file the result cannot be added to is refused now, not after the search
        from prompting.training.labelsearch import read_templates_file
        from prompting.core.paths import check_output_dir

        try:
            read_templates_file(args.write, task["name"])
        except ValueError as err:
            raise ValueError(f"--write: {err}") from None
        check_output_dir(Path(args.write).parent, "--write folder")


def _plain_template(text: str):
    """The template label search reads: one {mask}, no trigger or soft slots."""
    from prompting.core.template import Template, TemplateError

    try:
        template = Template(text)
    except TemplateError as err:
        raise TemplateError(f"--template: {err}") from None
    if template.n_trigger or template.has_soft:
        raise ValueError(f"--template {text!r} has trigger or soft slots; label search reads a plain template "
                         "with one {mask} (write AutoPrompt's found trigger words in first)")
    return template


def cmd_search_labels(args) -> int:
    from prompting.lm.model import LanguageModel
    from prompting.config.experiment import load_task_spec
    from prompting.training.labelsearch import search_label_words, write_verbalizer

    spec, base, prompts = task_source(args)
    _check_search_options(args, spec)
    text = _search_template(args, spec, base, prompts)
    template = _plain_template(text)
    task = load_task_spec(spec, base)
    missing = [f for f in template.fields if f not in task.text_fields]
    if missing:
        raise ValueError(f"--template {text!r} uses the field {{{missing[0]}}}, which task {task.name!r} does "
                         f"not have; its fields: {', '.join('{' + f + '}' for f in task.text_fields)}")
    examples, which = _search_examples(args, task)

    started = time.perf_counter()
    lm = LanguageModel.load(args.model, device=args.device, max_length=args.max_length or 512,
                            allow_download=args.allow_download)
    result = search_label_words(lm, template, examples, task.labels, ranking=args.method,
                                k=max(args.top, args.words_per_label), batch_size=args.batch_size,
                                seed=args.data_seed, progress=not args.quiet, chat=args.chat)
    print(f"label words for {task.name} by {args.method} ranking, model {args.model}: "
          f"{len(examples)} train examples ({which}), {time.perf_counter() - started:.0f} s")
    print(f"template: {text.replace(chr(10), '⏎')}" + (" (the user turn of the chat template; the word starts "
                                                      "the reply)" if args.chat else ""))
    print("score: " + ("cosine of the word's output embedding with the class's logistic-regression weights"
                       if args.method == "classifier" else
                       "mean log-likelihood of the training labels with the word standing for its class"))
    print()
    print(search_labels_table(result, task.labels, args.top))
    verbalizer = result.verbalizer(args.words_per_label)
    print(f"\nverbalizer ({args.words_per_label} per label): {verbalizer.describe()}")
    if args.write:
        path = write_verbalizer(args.write, verbalizer, task=task.name, pattern=text)
        print(f"written to: {path}")
    return 0


def add_search_labels_parser(sub) -> None:
    p = sub.add_parser("search-labels", help="find label words for a task's template from labelled examples")
    add_task_and_model(p)
    p.add_argument("--template", help="template string with one {mask} (default: --pattern of --templates)")
    p.add_argument("--templates", help="prompt file to take the template from (default: the built-in one)")
    p.add_argument("--pattern", type=int, help="index of the pattern in --templates; default 0")
    p.add_argument("--k", type=int, help="rank on the K-per-class train split of --data-seed (as the harness "
                                         "samples it); default: all train examples")
    p.add_argument("--limit", type=int, help="rank on a random subset of this many train examples (without --k)")
    p.add_argument("--data-seed", type=int, default=13)
    p.add_argument("--method", default="classifier",
                   help="classifier (AutoPrompt: logistic regression on the LM's features at {mask}) or "
                        "likelihood (LM-BFF: label likelihood of the words the LM finds likely); default classifier")
    p.add_argument("--top", type=int, default=10, help="words printed per label; default 10")
    p.add_argument("--words-per-label", type=int, default=1, help="words per label in the verbalizer written; default 1")
    p.add_argument("--write", metavar="FILE", help="add the verbalizer (and the template) to this templates YAML file")
    p.add_argument("--chat", action="store_true", help="words for a chat: true entry: the template up to {mask} "
                   "is the user turn of the model's chat template and the word starts the assistant's reply")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--allow-download", action="store_true", help="let a hub id be downloaded (off by default)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_search_labels)
