"""``prompting schema``: the JSON Schema of an experiment config, for editors that complete and check YAML."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_schema_parser", "cmd_schema"]


def cmd_schema(args) -> int:
    from prompting.config.schema import json_schema

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.output is None:
        print(text, end="")
        return 0
    from prompting.core.paths import check_output_dir

    output = Path(args.output)
    if output.is_dir():
        raise ValueError(f"--output {args.output!r} is a folder; give the path of a JSON file to write")
    check_output_dir(output.parent, "--output folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    print(f"schema: {output}")
    return 0


def add_schema_parser(sub) -> None:
    p = sub.add_parser("schema", help="write the JSON Schema of a config (for an editor's YAML completion and checks)")
    p.add_argument("--output", help="the JSON file to write (default: standard output)")
    p.set_defaults(func=cmd_schema)
