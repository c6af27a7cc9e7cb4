"""The committed result folders' reports are what ``prompting report`` derives from their records, byte
for byte (the multiple-choice COPA runs and the fact-probing runs: the two kinds of record a report
reads besides classification; and PET's recipe, whose stages are rows and paired sections of their own;
every folder is re-derived by ``make check-reports``)."""

import shutil
from pathlib import Path

import pytest

from prompting.cli import main

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results"


@pytest.mark.parametrize("folder", ["copa", "lama", "pet_recipe_check", "e2e", "e2e_full", "answers"])
def test_a_committed_report_is_derived_again_byte_for_byte(folder, tmp_path, capsys):
    copy = shutil.copytree(RESULTS / folder, tmp_path / folder)
    assert main(["report", str(copy)]) == 0
    for name in ("report.md", "summary.csv", "runs.csv"):
        assert (copy / name).read_bytes() == (RESULTS / folder / name).read_bytes(), name
