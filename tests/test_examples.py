"""The example scripts run end to end, on a tiny *randomly initialised* model saved to a folder
(see conftest), as a user would start them."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import build_tiny_lm

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_custom_csv_example_prints_a_summary_table(bpe_tokenizer, tmp_path):
    lm = build_tiny_lm("llama", bpe_tokenizer)
    lm.model.save_pretrained(tmp_path / "model")
    lm.tokenizer.save_pretrained(tmp_path / "model")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_csv.py"), "--model", str(tmp_path / "model"),
         "--k", "2", "--steps", "2", "--test-limit", "4"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("| method | template |")
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert sorted(row.split(" | ")[0] for row in rows) == ["| manual zero-shot", "| soft"]
