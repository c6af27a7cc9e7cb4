"""The command-line options the AutoPrompt SST-2 benchmarks share (model, data, template, seeds, search size)."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def sst2_search_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every AutoPrompt-on-SST-2 benchmark takes; a script adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parents[1] / "shared" / "data" / "sst2")
    parser.add_argument("--template", default="{text_a} {trigger:5} {mask}")
    parser.add_argument("--seeds", default="13,21,42,87,100")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--test-limit", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    return parser


def append_record(path: Path, record: dict) -> None:
    """Add one finished seed's record to a benchmark's JSONL file (a re-run skips the seeds it holds)."""
    import json

    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
