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


# EvalSettings.limits' name for each measurement
_LIMITS = {"ppl": "ppl_rows", "srs": "bbq_limit_per_category", "ppl_presets": "ppl_preset_windows",
           "lm_eval": "lm_eval_limit"}


def _limited(results: Results, kind: str) -> bool:
    """Whether `kind` (a key of _LIMITS) was measured with a quick-run limit: such figures are not the protocol's."""
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
    return found + _preset_results(results) + _harness_results(results)


def _preset_results(results: Results) -> list[EvalResult]:
    """WikiText-2/C4 perplexity with the papers' protocol: every window of the Hub file at a pinned commit."""
    found = []
    for section in ((results.metrics or {}).get("perplexity_presets") or {}).values():
        pruned = section.get("pruned")
        if not pruned or _limited(results, "ppl_presets") or pruned["data"].get("window_limit") is not None:
            continue
        data = pruned["data"]
        hub = _hub_dataset(data["source"])
        if hub:
            title = section["preset"]["title"]
            found.append(EvalResult(
                task_type="text-generation", dataset_type=hub[0], dataset_name=title, dataset_config=data.get("config"),
                dataset_split=data["split"], dataset_revision=hub[1], metric_type="perplexity",
                metric_name=f"{title} perplexity ({data['windows']} windows x {data['seq_len']} tokens, "
                            "SparseGPT/Wanda protocol)", metric_value=round(pruned["ppl"], 4)))
    return found


def _harness_results(results: Results) -> list[EvalResult]:
    """lm-eval tasks on Hub datasets, every document evaluated (a `--lm-eval-limit` run stays in the table)."""
    harness, found = (results.metrics or {}).get("lm_eval") or {}, []
    version = (harness.get("harness") or {}).get("version")
    for task, record in (harness.get("tasks") or {}).items():
        dataset = record["dataset"]
        if record.get("limit") is not None or not dataset.get("hub") or _limited(results, "lm_eval"):
            continue
        for metric, score in record["metrics"].items():
            value = (score.get("pruned") or {}).get("value")
            if value is None:
                continue
            found.append(EvalResult(
                task_type="text-generation", task_name=task, dataset_type=dataset["path"], dataset_name=task,
                dataset_config=dataset.get("name"), dataset_split=dataset.get("split"),
                dataset_revision=dataset.get("revision"), dataset_args={"num_few_shot": record["n_shot"]},
                metric_type=metric, metric_name=f"{task} {metric} ({record['n_shot']}-shot, lm-eval {version})",
                metric_value=round(value, 4), source_name="lm-evaluation-harness",
                source_url="https://github.com/EleutherAI/lm-evaluation-harness"))
    return found


def hub_datasets(results: Results) -> list[str]:
    """Hub ids of the data that produced the weights: the calibration set (Wanda, SparseGPT) when it came from the
    Hub. The Hub lists `datasets:` as training data, so evaluation sets belong in model-index only."""
    calibration = results.pruning.calibration
    if calibration and not calibration.get("file_sha256"):
        return [calibration["dataset"]]
    return []
