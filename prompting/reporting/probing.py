"""Fact-probing tables: relation x method, P@1 (and P@10, MRR), with the macro-average over relations."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from prompting.tasks.lama import macro_average

__all__ = ["probe_table", "is_probe_record"]


def is_probe_record(record: dict) -> bool:
    return record.get("task") == "lama" and "protocol" in record


def _columns(records: Sequence[dict]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["label"], r["protocol"]) for r in records))


def probe_table(records: Sequence[dict], metric: str = "p_at_1") -> str:
    """Markdown: one row per relation, one column per (method, protocol), ``metric`` in percent;
    a last row with each column's macro-average over the relations that have it."""
    records = [r for r in records if is_probe_record(r)]
    if not records:
        return "(no fact-probing records)"
    columns = _columns(records)
    cells: dict[str, dict] = defaultdict(dict)
    sizes: dict[str, dict] = defaultdict(dict)
    for r in records:
        cells[r["relation"]][(r["label"], r["protocol"])] = r["test"]
        sizes[r["relation"]][r["protocol"]] = r["n_test"]
    head = ["relation", "test facts (cand. / vocab)"] + [f"{label} ({protocol})" for label, protocol in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * len(columns)]
    for relation in cells:
        size = f"{sizes[relation].get('candidates', '-')} / {sizes[relation].get('vocab', '-')}"
        row = [relation, size] + [_pct(cells[relation].get(c), metric) for c in columns]
        lines.append("| " + " | ".join(row) + " |")
    macro = []
    for c in columns:
        have = {rel: cells[rel][c] for rel in cells if c in cells[rel]}
        macro.append(_pct(macro_average(have) if len(have) == len(cells) else None, metric))
    lines.append("| **macro-average** | | " + " | ".join(macro) + " |")
    return "\n".join(lines)


def _pct(metrics: dict | None, metric: str) -> str:
    return "-" if not metrics else f"{100 * metrics[metric]:.1f}"


def templates_table(records: Sequence[dict]) -> str | None:
    """Markdown: the template each (method, protocol) ran on each relation, learned slots included
    (``template_used``; records written before it have none: None when no record has it)."""
    records = [r for r in records if is_probe_record(r) and r.get("template_used")]
    if not records:
        return None
    relations = list(dict.fromkeys(r["relation"] for r in records))
    used = {(r["label"], r["protocol"], r["relation"]): r["template_used"] for r in records}
    lines = ["| method | " + " | ".join(relations) + " |", "|---|" + "---|" * len(relations)]
    for label, protocol in _columns(records):
        cells = [used.get((label, protocol, rel)) for rel in relations]
        shown = ["-" if c is None else "`" + c.replace("\n", "⏎").replace("|", "\\|") + "`" for c in cells]
        lines.append(f"| {label} ({protocol}) | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def probe_report(records: Sequence[dict]) -> list[str]:
    """report.md's lines for fact-probing records."""
    lines = ["## Fact probing (LAMA)", ""]
    for metric, name in (("p_at_1", "P@1"), ("p_at_10", "P@10"), ("mrr", "MRR (x100)")):
        lines += [f"### {name}", "", probe_table(records, metric), ""]
    templates = templates_table(records)
    if templates is not None:
        lines += ["### Templates used", "", "The template each row ran on each relation, its learned slots "
                  "included ({sub_label}: the subject, {mask}: the object).", "", templates, ""]
    return lines
