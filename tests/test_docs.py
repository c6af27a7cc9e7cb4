"""The README is a front door and docs/ the documentation: the README stays short, its links reach the
pages and headings they name, every page is in the site's navigation, and the README's example config
is the committed main job. (The strict site build checks the links between pages; tests/test_settings.py
checks the settings table and the example method in docs/.)"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as MkDocs writes it (Python-Markdown's toc slugify)."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.M)}


def test_the_readme_is_a_front_door_of_at_most_300_lines():
    assert len(README.splitlines()) <= 300


def test_the_readme_links_reach_their_pages_and_headings():
    links = [m.group(1) for m in LINK.finditer(README) if not m.group(1).startswith(("http://", "https://"))]
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else ROOT / "README.md"
        assert target.exists(), f"README links to {link}, which does not exist"
        if anchor:
            assert anchor in anchors(target), f"README links to {link}, which has no such heading"


def test_every_docs_page_is_in_the_site_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, dict):
            return [p for v in nav.values() for p in pages(v)]
        return [p for item in nav for p in pages(item)]

    assert config["docs_dir"] == "docs" and config["strict"] is True
    assert sorted(pages(config["nav"])) == sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))


def test_the_readme_example_config_is_the_main_job():
    start = README.index("<!-- example-config: experiments/quickstart.yaml -->")
    block = README[start:README.index("<!-- /example-config -->")]
    shown = yaml.safe_load(block[block.index("```yaml") + len("```yaml"):block.rindex("```")])
    assert shown == yaml.safe_load((ROOT / "experiments" / "quickstart.yaml").read_text())


@pytest.mark.parametrize("page", ["configuration.md", "data.md", "icl.md", "sweeps.md"])
def test_the_documented_config_sections_are_valid(page):
    from prompting.config.experiment import parse_config

    base = {"name": "t", "task": {"name": "sst2", "data_dir": "data/sst2"}, "templates": "sst2",
            "methods": [{"name": "ptuning", "template": "{soft:2} Review: {text_a}\nSentiment: {mask}"}]}
    blocks = re.findall(r"```yaml\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        # a block of alternatives (task: mr / task: {...}) is one section per top-level key; `---` separates configs
        lines = block.splitlines()
        starts = [i for i, line in enumerate(lines) if line and not line[0].isspace() and not line.startswith("#")]
        keys = [lines[i].split(":")[0] for i in starts]
        if "---" not in keys and len(set(keys)) < len(keys):
            parts = ["\n".join(lines[a:b]) for a, b in zip(starts, starts[1:] + [len(lines)])]
        else:
            parts = [block]
        for part in parts:
            for doc in (d for d in yaml.safe_load_all(part) if d is not None):
                config = {**base, **doc}
                if "task" in doc and "templates" not in doc and doc["task"] not in ("sst2", "mr") and \
                        not (isinstance(doc["task"], dict) and doc["task"]["name"] in ("sst2", "mr")):
                    labels = doc["task"].get("labels") or ["0", "1"]
                    labels = list(labels.values()) if isinstance(labels, dict) else labels
                    config["templates"] = {"patterns": ["{text_a} {mask}"],
                                           "verbalizers": [{str(label): [f"w{i}"] for i, label in enumerate(labels)}]}
                if doc.get("task") == "mr":
                    config["templates"] = "mr"
                parse_config(config)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


E2E_TABLE = re.compile(r"<!-- e2e-table: (\S+) -->\n(\|.+\|\n\|[-:|]+\|\n(?:\|.+\|\n)+)")


@pytest.mark.parametrize("page", [ROOT / "README.md", DOCS / "results" / "e2e.md"], ids=lambda p: p.name)
def test_the_generation_tables_in_the_docs_are_their_committed_reports(page):
    """Every figure of a `<!-- e2e-table: FOLDER -->` table is the committed report's, row by row."""
    tables = E2E_TABLE.findall(page.read_text())
    assert tables, f"{page.name} has no generation table marked with its results folder"
    for folder, table in tables:
        report = (ROOT / folder / "report.md").read_text()
        head = next(line for line in report.splitlines() if line.startswith("| method | template | trainable"))
        names = _cells(head)
        rows = {_cells(line)[0]: dict(zip(names, _cells(line))) for line in report.splitlines()
                if line.startswith("| ") and len(_cells(line)) == len(names) and line != head}
        lines = table.strip().splitlines()
        shown = [dict(zip(_cells(lines[0]), _cells(line))) for line in lines[2:]]
        assert [r["method"] for r in shown] == [r for r in rows if r != "method"][:len(shown)]
        for row in shown:  # a score as the report has it (mean ± std over data seeds), or its mean alone
            mine = rows[row["method"]]
            for metric in ("BLEU", "chrF", "ROUGE-L"):
                cell = mine[f"{metric} (sel.) mean ± std"]
                assert row[metric] in (cell, cell.split(" ± ")[0]), (folder, row["method"], metric)
            assert row["95% CI (test inputs)"] == mine["95% CI (BLEU, test sample)"]
            assert (row["trainable"], row["time (s)"]) == (mine["trainable"], mine["time (s)"])
