"""Offline checks of a rendered card before it is pushed.

    >>> lint_card(Path("runs/x/README.md").read_text(), results)   # raises CardError listing problems
"""

from __future__ import annotations

from ..errors import CardError
from ..front_matter import split_card
from ..results import Results
from .figures import literature_rows, metric_rows
from .render import RESEARCH_ONLY_TAG

REQUIRED_KEYS = ("license", "library_name", "pipeline_tag", "tags")


def lint_card(text: str, results: Results | None = None) -> None:
    problems = []
    meta, body = split_card(text)  # as the Hub splits it, whatever the line endings
    body = body.replace("\r\n", "\n").replace("\r", "\n")  # the checks below read "\n"-separated lines
    problems += [f"front matter lacks '{key}'" for key in REQUIRED_KEYS if key not in meta]
    if RESEARCH_ONLY_TAG not in (meta.get("tags") or []):
        problems.append(f"tag '{RESEARCH_ONLY_TAG}' missing")
    if "Research use only" not in body:
        problems.append("research-only warning missing")
    if meta.get("license") == "other" and not meta.get("license_name"):
        problems.append("license 'other' without license_name")
    base = meta.get("base_model")
    if base is not None and (not isinstance(base, str) or base.count("/") != 1 or base.startswith((".", "/"))):
        problems.append(f"base_model {base!r} is not a Hub id")
    problems += _model_index_problems(meta.get("model-index"))
    if "{{" in text or "{%" in text:
        problems.append("unrendered template syntax")
    if results is not None:
        shown = _results_table(body)
        for row in [*metric_rows(results), *literature_rows(results)]:  # both tables lie under '## Results'
            expected = [row.value, row.dense, row.change]
            if shown.get(row.metric) != expected:
                found = " | ".join(shown[row.metric]) if row.metric in shown else "nothing"
                problems.append(f"{row.metric}: results.json says {' | '.join(expected)}, the card's results "
                                f"table says {found}")
    if problems:
        raise CardError("card lint failed: " + "; ".join(problems))


def _results_table(body: str) -> dict[str, list[str]]:
    """metric → [pruned, dense, change] from the table under '## Results'."""
    section = body.split("\n## Results", 1)[-1].split("\n## ", 1)[0] if "\n## Results" in body else ""
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 4 and cells[0] not in ("metric", "") and set(cells[1]) != {"-"}:
            rows[cells[0]] = cells[1:4]
    return rows


def _model_index_problems(index: object) -> list[str]:
    """The Hub rejects entries with null dataset fields or non-numeric values."""
    if index is None:
        return []
    problems = []
    for model in index if isinstance(index, list) else [index]:
        for result in (model or {}).get("results") or []:
            dataset = result.get("dataset") or {}
            for key in ("type", "name"):
                if not dataset.get(key):
                    problems.append(f"model-index dataset lacks '{key}'")
            for key in ("config", "split", "revision"):
                if key in dataset and dataset[key] in (None, ""):
                    problems.append(f"model-index dataset '{key}' is null")
            for metric in result.get("metrics") or []:
                if not isinstance(metric.get("value"), int | float) or isinstance(metric.get("value"), bool):
                    problems.append(f"model-index metric {metric.get('type')!r} value is not a number")
    return problems
