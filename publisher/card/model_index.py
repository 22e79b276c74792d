"""`model-index` entries for the card's metadata: only measured values, only on data the Hub can name, only at
the protocol's sizes; and the `datasets:` list (the data that made the weights).

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


_LIMITS = {"ppl": "ppl_rows", "srs": "bbq_limit_per_category"}  # EvalSettings.limits' name for each measurement


def _limited(results: Results, kind: str) -> bool:
    """Whether `kind` ("ppl" or "srs") was measured with a quick-run limit: such figures are not the protocol's."""
    return _LIMITS[kind] in ((results.metrics or {}).get("limits") or {})


def eval_results(results: Results) -> list[EvalResult]:
    """model-index entries: figures measured on a Hub dataset at a pinned commit with the protocol's sizes.

    A quick run's figures (`--bbq-limit`, fewer or shorter perplexity rows) stay in the card's table only: in
    model-index they would read as the protocol's. BBQ's categories are the dataset's splits, not configs.
    """
    metrics, found = results.metrics or {}, []
    if (ppl := metrics.get("perplexity")) and not _limited(results, "ppl"):
        data = ppl["pruned"]["data"]
        hub = _hub_dataset(data["source"])
        if hub:
            found.append(EvalResult(
                task_type="text-generation", dataset_type=hub[0], dataset_name=hub[0].split("/")[-1],
                dataset_split=data.get("split") or "train", dataset_revision=hub[1], metric_type="perplexity",
                metric_name=f"perplexity ({ppl['pruned']['rows']}x{ppl['pruned']['seq_len']} tokens)",
                metric_value=round(ppl["pruned"]["ppl"], 4)))
    if (srs := metrics.get("srs")) and not _limited(results, "srs"):
        hub = _hub_dataset(srs["data"]["source"])
        if hub:
            for group in srs["pruned"]["per_category"]:
                if group["srs"]["rate"] is None:
                    continue
                found.append(EvalResult(
                    task_type="text-generation", dataset_type=hub[0], dataset_name="BBQ",
                    dataset_split=group["category"].lower(), dataset_revision=hub[1], metric_type="srs",
                    metric_name=f"stereotype reliance score, {group['category']} ({group['condition']})",
                    metric_value=round(group["srs"]["rate"], 4)))
    return found


def hub_datasets(results: Results) -> list[str]:
    """Hub ids of the data that produced the weights: the calibration set (Wanda, SparseGPT) when it came from the
    Hub. The Hub lists `datasets:` as training data, so evaluation sets belong in model-index only."""
    calibration = results.pruning.calibration
    if calibration and not calibration.get("file_sha256"):
        return [calibration["dataset"]]
    return []
