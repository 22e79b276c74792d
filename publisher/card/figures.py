"""Every figure the card shows, formatted once from results.json; `card lint` checks the card against these.

    >>> [row.metric for row in metric_rows(results)]
    ['actual sparsity', 'perplexity', 'SRS (ambiguous, mean of categories)', ...]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..results import Results

CHANCE_SRS = 1 / 3


@dataclass(frozen=True)
class MetricRow:
    """One row of the results table: the pruned value, the dense value, the change, how it was measured."""

    metric: str
    value: str
    dense: str = "—"
    change: str = "—"
    how: str = ""


def _pct(x: float | None, digits: int = 1, sign: bool = True) -> str:
    return "—" if x is None else f"{100 * x:{'+' if sign else ''}.{digits}f} %"


def _rate(p: dict[str, Any] | None) -> str:
    """A proportion with its 95 % Wilson interval, e.g. '0.179 [0.160, 0.199]'."""
    if not p or p.get("rate") is None:
        return "—"
    return f"{p['rate']:.3f} [{max(p['low'], 0):.3f}, {min(p['high'], 1):.3f}]"


def _mean(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "—"
    if m.get("low") is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{max(m['low'], 0):.3f}, {min(m['high'], 1):.3f}]"


def _data_name(source: str) -> str:
    """'hub:allenai/tulu-3-sft-mixture@abc' → 'allenai/tulu-3-sft-mixture'; 'jsonl:/a/b.jsonl' → 'b.jsonl'."""
    kind, _, name = source.partition(":")
    return name.split("@")[0] if kind == "hub" else name.rsplit("/", 1)[-1]


def latency_caveat(results: Results) -> str:
    """The storage/latency caveat's latency half, from the measurement when there is one."""
    latency = (results.metrics or {}).get("latency")
    if not latency or not latency.get("measured"):
        return "Unstructured zeros run at dense speed on dense kernels; latency was not measured in this run."
    ratio = latency["ratio"]
    return (f"Measured with MLX on {latency['machine']['device']}: pruned / dense latency ×{ratio['value']:.2f} "
            f"(95 % interval {ratio['ci95_low']:.2f}–{ratio['ci95_high']:.2f}, {latency['settings']['n_items']} "
            "items): unstructured zeros run at dense speed on dense kernels.")


def metric_rows(results: Results) -> list[MetricRow]:
    """The results table of the card, only rows that were measured."""
    sparsity = results.sparsity
    rows = [MetricRow("actual sparsity", f"{100 * sparsity.actual_sparsity:.2f} %",
                      how=f"zeros / prunable weights, {sparsity.measured_from}")]
    metrics = results.metrics or {}
    if ppl := metrics.get("perplexity"):
        pruned, dense = ppl["pruned"], ppl["dense"]
        data = pruned["data"]
        rows.append(MetricRow(
            "perplexity", f"{pruned['ppl']:.2f} ± {pruned['se']:.2f}", f"{dense['ppl']:.2f} ± {dense['se']:.2f}",
            _pct(ppl["change"]),
            f"{pruned['rows']} × {pruned['seq_len']} tokens of {_data_name(data['source'])}, ± delta-method SE"))
    if srs := metrics.get("srs"):
        for condition, comparison in srs["comparison"].items():
            label = "ambiguous" if condition == "ambig" else "disambiguated"
            overall_p, overall_d = srs["pruned"]["overall"][condition], srs["dense"]["overall"][condition]
            rows.append(MetricRow(f"SRS ({label}, mean of categories)", _mean(comparison["srs_pruned"]),
                                  _mean(comparison["srs_dense"]), _pct(comparison["change"]),
                                  "share of parsed replies choosing the stereotype target; chance ≈ 0.333"))
            rows.append(MetricRow(f"USR ({label})", _mean(overall_p["usr"]), _mean(overall_d["usr"]),
                                  how="share choosing 'unknown' (correct in ambiguous contexts)"))
            rows.append(MetricRow(f"parse failures ({label})", _rate(overall_p["parse_failure"]),
                                  _rate(overall_d["parse_failure"]), how="replies with no A/B/C found"))
            if condition == "ambig":
                rows.append(MetricRow("new-bias emergence", _rate(comparison["emergence"]),
                                      how="items with SRS 0 dense and > 0 pruned, over items compared"))
    latency = metrics.get("latency")
    if latency and latency.get("measured"):
        ratio, machine = latency["ratio"], latency["machine"]
        rows.append(MetricRow(
            "latency per item (MLX)", f"{latency['pruned']['mean_s']:.3f} s", f"{latency['dense']['mean_s']:.3f} s",
            f"×{ratio['value']:.2f} [{ratio['ci95_low']:.2f}, {ratio['ci95_high']:.2f}]",
            f"{latency['settings']['n_items']} items, ≤{latency['settings']['max_tokens']} tokens, "
            f"interleaved, {machine['device']} ({machine['chip']})"))
    return rows


def srs_category_rows(results: Results, condition: str = "ambig") -> list[dict[str, str]]:
    """Per-category SRS and USR, pruned vs dense, with intervals."""
    srs = (results.metrics or {}).get("srs")
    if not srs or condition not in srs["comparison"]:
        return []
    usr = {g["category"]: g for g in srs["pruned"]["per_category"] if g["condition"] == condition}
    rows = []
    for change in srs["comparison"][condition]["categories"]:
        group = usr.get(change["category"], {})
        rows.append({"category": change["category"], "pruned": _rate(change["srs_pruned"]),
                     "dense": _rate(change["srs_dense"]), "change": _pct(change["change"]),
                     "usr": _rate(group.get("usr")), "n_items": str(group.get("items", "—"))})
    return rows


def not_measured(results: Results) -> list[str]:
    """What the card does not show, and why."""
    metrics = results.metrics
    if metrics is None:
        return ["perplexity, SRS on BBQ and latency: the measure stage did not run"]
    names = {"ppl": "perplexity", "srs": "SRS on BBQ", "latency": "latency"}
    found = [f"{names[k]}: {why}" for k, why in metrics.get("not_measured", {}).items()]
    latency = metrics.get("latency")
    if latency and not latency.get("measured"):
        found.append(f"latency: {latency.get('reason')}")
    return found
