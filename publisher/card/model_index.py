"""`model-index` entries for the card's metadata: only measured values, only on data the Hub can name.

Figures measured on local files (a BBQ folder, a Tulu sample) stay in the card's table but get no
`model-index` entry: the Hub's schema wants a dataset id, and naming the full dataset for a local sample
would be wrong.

    >>> [e.metric_type for e in eval_results(results)]
    ['perplexity', 'srs', ...]
"""

from __future__ import annotations

from huggingface_hub import EvalResult

from ..results import Results


def _hub_dataset(source: str) -> tuple[str, str | None] | None:
    """'hub:allenai/tulu-3-sft-mixture@<sha>' → (id, sha); anything else → None."""
    kind, _, rest = source.partition(":")
    if kind != "hub":
        return None
    name, _, revision = rest.partition("@")
    return name, revision or None


def eval_results(results: Results) -> list[EvalResult]:
    metrics, found = results.metrics or {}, []
    if ppl := metrics.get("perplexity"):
        data = ppl["pruned"]["data"]
        hub = _hub_dataset(data["source"])
        if hub:
            found.append(EvalResult(
                task_type="text-generation", dataset_type=hub[0], dataset_name=hub[0].split("/")[-1],
                dataset_split=data.get("split") or "train", dataset_revision=hub[1], metric_type="perplexity",
                metric_name=f"perplexity ({ppl['pruned']['rows']}x{ppl['pruned']['seq_len']} tokens)",
                metric_value=round(ppl["pruned"]["ppl"], 4)))
    if srs := metrics.get("srs"):
        hub = _hub_dataset(srs["data"]["source"])
        if hub:
            for group in srs["pruned"]["per_category"]:
                if group["srs"]["rate"] is None:
                    continue
                found.append(EvalResult(
                    task_type="text-generation", dataset_type=hub[0], dataset_name="BBQ",
                    dataset_config=group["category"], dataset_split=group["category"].lower(),
                    dataset_revision=hub[1], metric_type="srs",
                    metric_name=f"stereotype reliance score ({group['condition']})",
                    metric_value=round(group["srs"]["rate"], 4)))
    return found


def hub_datasets(results: Results) -> list[str]:
    """Hub ids of the calibration and evaluation sets this run used (local files have none)."""
    found: list[str] = []
    calibration = results.pruning.calibration
    if calibration and not calibration.get("file_sha256"):
        found.append(calibration["dataset"])
    metrics = results.metrics or {}
    sources = [(metrics.get("perplexity") or {}).get("pruned", {}).get("data", {}).get("source"),
               (metrics.get("srs") or {}).get("data", {}).get("source")]
    for source in sources:
        hub = _hub_dataset(source or "")
        if hub and hub[0] not in found:
            found.append(hub[0])
    return found
