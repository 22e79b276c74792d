"""Every figure the card shows, formatted once from results.json; `card lint` checks the card against these.

    >>> [row.metric for row in metric_rows(results)]
    ['actual sparsity', 'perplexity', 'SRS (ambiguous, mean of categories)', ...]
    >>> [d["what"] for d in protocol_differences(results)]   # where this run departs from the study's protocol
    ['BBQ items', 'BBQ categories', ...]

Definitions live in docs/measurement.md (published beside each card as `measurement.md`); the labels here say the
same thing in a few words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..measure.bbq import HUB_DATASET as STUDY_BBQ
from ..measure.bbq import STUDY_CATEGORIES
from ..measure.latency import MIN_ITEMS_FOR_INTERVAL, timed_work
from ..measure.perplexity import DEFAULT_DATASET as STUDY_PPL
from ..measure.srs import LAST_RESORT_FLAG
from ..results import Results

CHANCE_SRS = 1 / 3
RULE_LABELS = {
    "whole": "the whole reply is a letter",
    "leading": "a leading letter: A), (B), C.",
    "phrase": "an answer phrase: \"the answer is C\"",
    "first": "last resort: the first a, b or c anywhere",
    "failure": "no letter found (parse failure)",
}
INTERVALS_TEXT = ("Intervals are 95 %. Rates over BBQ replies (SRS, USR, parse shares) come from a seeded bootstrap "
                  "that resamples whole items (2,000 resamples; an item's 5 seeds move together, so replies are not "
                  "treated as independent), and changes from a paired bootstrap over the items both models answered; "
                  "new-bias emergence, a rate over items, has a Wilson interval; perplexity is ± its delta-method "
                  "standard error.")
# The study's headline, with the setting it came from (protocol §2-§3): never shown as this card's own finding.
STUDY_HEADLINE = ("in the study this tool automates (arXiv 2605.08137), Wanda at a 50 % target on "
                  "Mistral-7B-Instruct-v0.3 — whose implementation skipped o_proj and down_proj, so about 33 % of "
                  "the weights were in fact pruned — raised perplexity by 3.5 % while SRS rose by 83.7 %")


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
    """A proportion with its 95 % interval, e.g. '0.179 [0.160, 0.199]'."""
    if not p or p.get("rate") is None:
        return "—"
    return f"{p['rate']:.3f} [{max(p['low'], 0):.3f}, {min(p['high'], 1):.3f}]"


def _mean(m: dict[str, Any] | None) -> str:
    if not m or m.get("value") is None:
        return "—"
    if m.get("low") is None:
        return f"{m['value']:.3f}"
    return f"{m['value']:.3f} [{max(m['low'], 0):.3f}, {min(m['high'], 1):.3f}]"


def _change(value: float | None, low: float | None, high: float | None) -> str:
    """A relative change with its interval, e.g. '+83.7 % [+41.2 %, +130.5 %]'."""
    if value is None:
        return "—"
    if low is None or high is None:
        return _pct(value)
    return f"{_pct(value)} [{_pct(low)}, {_pct(high)}]"


def _share(count: int, total: int) -> str:
    return "—" if not total else f"{100 * count / total:.1f} %"


def _data_name(source: str) -> str:
    """'hub:allenai/tulu-3-sft-mixture@abc' → 'allenai/tulu-3-sft-mixture'; 'jsonl:/a/b.jsonl' → 'b.jsonl'."""
    kind, _, name = source.partition(":")
    return name.split("@")[0] if kind == "hub" else name.rsplit("/", 1)[-1]


def _latency_ratio(latency: dict[str, Any]) -> str:
    ratio, n = latency["ratio"], latency["settings"]["n_items"]
    if ratio.get("ci95_low") is None or n < MIN_ITEMS_FOR_INTERVAL:
        return f"×{ratio['value']:.2f} (no interval: {n} items)"
    return f"×{ratio['value']:.2f} [{ratio['ci95_low']:.2f}, {ratio['ci95_high']:.2f}]"


def latency_caveat(results: Results) -> str:
    """The storage/latency caveat's latency half, from the measurement when there is one."""
    latency = (results.metrics or {}).get("latency")
    if not latency or not latency.get("measured"):
        return "Unstructured zeros run at dense speed on dense kernels; latency was not measured in this run."
    backend = "MLX" if latency["machine"].get("backend", "mlx") == "mlx" else "torch"
    return (f"Measured with {backend} on {latency['machine']['device']}: pruned / dense latency "
            f"{_latency_ratio(latency)} over {latency['settings']['n_items']} items: unstructured zeros run at dense "
            "speed on dense kernels.")


def _metrics(results: Results) -> dict[str, Any]:
    return results.metrics or {}


def metric_rows(results: Results) -> list[MetricRow]:
    """The results table of the card, only rows that were measured."""
    sparsity = results.sparsity
    rows = [MetricRow("actual sparsity", f"{100 * sparsity.actual_sparsity:.2f} %",
                      how=f"zeros / prunable weights, {sparsity.measured_from}")]
    metrics = _metrics(results)
    if ppl := metrics.get("perplexity"):
        pruned, dense = ppl["pruned"], ppl["dense"]
        data = pruned["data"]
        rows.append(MetricRow(
            "perplexity", f"{pruned['ppl']:.2f} ± {pruned['se']:.2f}", f"{dense['ppl']:.2f} ± {dense['se']:.2f}",
            _pct(ppl["change"]),
            f"{pruned['rows']} × {pruned['seq_len']} tokens of {_data_name(data['source'])} in the study's row order "
            f"(seed {data.get('seed', 123)}), ± delta-method SE"))
    if srs := metrics.get("srs"):
        rows += _srs_rows(srs)
    latency = metrics.get("latency")
    if latency and latency.get("measured"):
        machine, settings = latency["machine"], latency["settings"]
        backend = "MLX" if machine.get("backend", "mlx") == "mlx" else "torch"
        rows.append(MetricRow(
            f"latency per item ({backend}, {machine['device']})", f"{latency['pruned']['mean_s']:.3f} s",
            f"{latency['dense']['mean_s']:.3f} s", _latency_ratio(latency),
            f"{settings['n_items']} items, {timed_work(settings.get('mode', 'fixed'), settings['max_tokens'])}, "
            f"models interleaved, {machine['chip']}"))
    return rows


def _srs_rows(srs: dict[str, Any]) -> list[MetricRow]:
    rows = []
    for condition, comparison in srs["comparison"].items():
        label = "ambiguous" if condition == "ambig" else "disambiguated"
        overall_p, overall_d = srs["pruned"]["overall"][condition], srs["dense"]["overall"][condition]
        rows.append(MetricRow(f"SRS ({label}, mean of categories)", _mean(comparison["srs_pruned"]),
                              _mean(comparison["srs_dense"]),
                              _change(comparison["change"], comparison.get("change_low"),
                                      comparison.get("change_high")),
                              "share of parsed replies choosing the stereotype target; chance ≈ 0.333"))
        if overall_p.get("srs_strict") is not None:
            rows.append(MetricRow(f"SRS, strict parses only ({label})", _mean(overall_p["srs_strict"]),
                                  _mean(overall_d["srs_strict"]),
                                  how="the same over replies that are a letter or start with one (A), (B), C.)"))
        rows.append(MetricRow(f"USR ({label})", _mean(overall_p["usr"]), _mean(overall_d["usr"]),
                              how="share choosing 'unknown' (correct in ambiguous contexts)"))
        if overall_p.get("last_resort_share") is not None:
            rows.append(MetricRow(
                f"replies decided by the last-resort rule ({label})", _pct(overall_p["last_resort_share"], sign=False),
                _pct(overall_d.get("last_resort_share"), sign=False),
                how=f"first a/b/c anywhere in the reply; above {100 * LAST_RESORT_FLAG:.0f} % SRS drifts "
                    "towards 1/3"))
        rows.append(MetricRow(f"parse failures ({label})", _rate(overall_p["parse_failure"]),
                              _rate(overall_d["parse_failure"]), how="replies with no A/B/C found"))
        if condition == "ambig":
            emergence = comparison["emergence"]
            rows.append(MetricRow(
                "new-bias emergence (the study's definition)",
                f"{emergence['k']} of {emergence['n']} items, {_rate(emergence)}",
                how="items whose dense per-item SRS was 0 that are > 0 pruned, over those dense-zero items; "
                    "an item whose pruned replies all failed to parse counts as not biased, as in the study"))
            everyone = comparison.get("emergence_all_items")
            if everyone:
                rows.append(MetricRow(
                    "newly biased items, share of all items", f"{everyone['k']} of {everyone['n']} items, "
                    f"{_rate(everyone)}", how="the same count over every item with a parsed dense reply "
                    "(not the study's figure)"))
    return rows


def parse_warnings(results: Results) -> list[str]:
    """One sentence per model whose replies the last-resort rule decided more than LAST_RESORT_FLAG of."""
    srs = _metrics(results).get("srs")
    found = []
    for model in ("pruned", "dense"):
        for condition, overall in ((srs or {}).get(model, {}).get("overall") or {}).items():
            share = overall.get("last_resort_share")
            if share is not None and share > LAST_RESORT_FLAG:
                label = "ambiguous" if condition == "ambig" else "disambiguated"
                found.append(f"The last-resort rule (the first a, b or c anywhere in the reply) decided "
                             f"{100 * share:.1f} % of the {model} model's {label} replies, above "
                             f"{100 * LAST_RESORT_FLAG:.0f} %: such an SRS drifts towards 1/3 whatever the "
                             "model's bias. "
                             "Read the strict SRS beside it.")
    return found


def parse_rule_rows(results: Results, condition: str = "ambig") -> list[dict[str, str]]:
    """Share of replies each parse rule decided, pruned and dense."""
    srs = _metrics(results).get("srs")
    if not srs or condition not in srs["pruned"]["overall"]:
        return []
    pruned, dense = srs["pruned"]["overall"][condition], srs["dense"]["overall"][condition]
    if not pruned.get("rules"):
        return []
    return [{"rule": label, "pruned": _share(pruned["rules"].get(rule, 0), pruned["replies"]),
             "dense": _share(dense.get("rules", {}).get(rule, 0), dense["replies"])}
            for rule, label in RULE_LABELS.items()]


def srs_category_rows(results: Results, condition: str = "ambig") -> list[dict[str, str]]:
    """Per-category SRS, strict SRS and USR, pruned vs dense, with intervals, and the rows excluded."""
    srs = _metrics(results).get("srs")
    if not srs or condition not in srs["comparison"]:
        return []
    groups = {g["category"]: g for g in srs["pruned"]["per_category"] if g["condition"] == condition}
    excluded = srs["data"].get("excluded_per_category", {})
    rows = []
    for change in srs["comparison"][condition]["categories"]:
        group = groups.get(change["category"], {})
        delta = change.get("delta")
        low, high = change.get("delta_low"), change.get("delta_high")
        shown = "—" if delta is None else f"{delta:+.3f}" + ("" if low is None else f" [{low:+.3f}, {high:+.3f}]")
        rows.append({"category": change["category"], "pruned": _rate(change["srs_pruned"]),
                     "dense": _rate(change["srs_dense"]), "delta": shown,
                     "strict": _rate(group.get("srs_strict")), "usr": _rate(group.get("usr")),
                     "n_items": str(group.get("items", "—")), "excluded": str(excluded.get(change["category"], 0))})
    return rows


def exclusion_lines(results: Results) -> list[str]:
    """Per category: BBQ rows that yielded no single stereotype target, with the reasons (none: empty list)."""
    srs = _metrics(results).get("srs")
    if not srs:
        return []
    data = srs["data"]
    reasons = data.get("excluded_reasons_per_category") or {}
    lines = []
    for category, count in (data.get("excluded_per_category") or {}).items():
        if count:
            why = "; ".join(f"{n} × {reason}" for reason, n in (reasons.get(category) or {}).items())
            lines.append(f"{category}: {count} of its rows excluded" + (f" ({why})" if why else ""))
    return lines


def category_coverage(results: Results) -> str | None:
    """A sentence when the overall SRS does not cover exactly the study's five categories; else None."""
    srs = _metrics(results).get("srs")
    if not srs:
        return None
    covered = list(srs["data"].get("categories") or [])
    missing = [c for c in STUDY_CATEGORIES if c not in covered]
    extra = [c for c in covered if c not in STUDY_CATEGORIES]
    if not missing and not extra:
        return None
    parts = [f"The overall SRS here is the mean over {len(covered)} categories ({', '.join(covered)})"]
    if missing:
        parts.append(f"the study's five are missing {', '.join(missing)}")
    if extra:
        parts.append(f"and it includes {', '.join(extra)}, which the study did not use")
    return "; ".join(parts) + ": it is not comparable with the study's overall SRS."


def decoding_text(results: Results) -> str | None:
    """How SRS replies were decoded, and whether a reply can depend on its batch."""
    srs = _metrics(results).get("srs")
    if not srs:
        return None
    run = srs["pruned"]
    decoding, rule = run.get("decoding") or {}, run.get("batch_rule") or ""
    if not decoding:
        return None
    dense = (srs["dense"].get("decoding") or {}).get("dtype")
    mismatch = (f" The dense model's replies were decoded in {dense}, not {decoding.get('dtype')}: the comparison "
                "mixes precisions." if dense and dense != decoding.get("dtype") else "")
    if decoding.get("batch_invariant"):
        source = f" (the {decoding['upcast_from']} weights upcast, exactly)" if decoding.get("upcast_from") else ""
        on_gpu = not str(results.settings.get("device", "cpu")).startswith("cpu")
        invariance = ("replies matched at every batch size on a CPU; on a GPU the kernels chosen for a batch's shape "
                      f"can still move the last bits (batches: {rule})") if on_gpu else \
            "a reply does not depend on which prompts share its batch"
        return f"Replies were decoded in float32{source}: {invariance}.{mismatch}"
    why = f" ({decoding['reason']})" if decoding.get("reason") else ""
    return (f"Replies were decoded in {decoding.get('dtype')}{why}: in low precision a reply can depend on which "
            f"prompts share its batch; batches: {rule}.{mismatch}")


def bias_caveat(results: Results) -> str:
    """The perplexity-vs-bias caveat, from this card's own figures; the study's figure only where they agree."""
    metrics = _metrics(results)
    ppl, srs = metrics.get("perplexity"), metrics.get("srs")
    if metrics.get("bias_blind"):
        return ("**Bias is not visible in perplexity here** (see the caution under Results). The same happened "
                f"{STUDY_HEADLINE}. Evaluate bias directly before drawing conclusions from this checkpoint.")
    if ppl and srs and "ambig" in srs["comparison"] and srs["comparison"]["ambig"]["change"] is not None:
        comparison = srs["comparison"]["ambig"]
        change = _change(comparison["change"], comparison.get("change_low"), comparison.get("change_high"))
        return (f"**Perplexity and bias measure different things.** Here perplexity changed {_pct(ppl['change'])} "
                f"and SRS {change}. A small perplexity change would not have ruled out a bias change, nor does a "
                "large one measure it: evaluate bias directly, as this card does.")
    if srs:
        return ("**No SRS change could be computed here** (see the parse figures above), and perplexity alone does "
                f"not reveal bias: {STUDY_HEADLINE}. Evaluate bias directly before drawing conclusions from this "
                "checkpoint.")
    return ("**Bias was not measured here, and perplexity alone does not reveal it:** "
            f"{STUDY_HEADLINE}. Evaluate bias directly before drawing conclusions from this checkpoint.")


def _difference(what: str, study: str, here: str, comparable: bool) -> dict[str, Any]:
    return {"what": what, "study": study, "here": here, "comparable": comparable}


def protocol_differences(results: Results) -> list[dict[str, Any]]:
    """Where this run departs from the study's protocol (docs/measurement.md). `comparable` is False where the
    difference makes the figures not comparable with the study's (other data, fewer items or categories, a metric
    not measured); True for a documented difference of method that the card states."""
    metrics, found = _metrics(results), []
    pruning = results.pruning
    if results.source.kind == "gguf":
        quantization = results.source.gguf_quantization or "quantized"
        found.append(_difference("base weights", "the base model's own bfloat16 weights",
                                 f"a {quantization} GGUF file, dequantized", False))
    if pruning.method == "wanda":
        found.append(_difference(
            "Wanda", "activation norms collected in one pass on the dense model with a simplified block forward; "
            "o_proj and down_proj skipped (≈ 2/3 of the target pruned)",
            "every projection pruned, block by block, each block fed the pruned outputs of the blocks before it",
            True))
    if pruning.method == "magnitude" and pruning.tie_policy == "exact":
        found.append(_difference("magnitude ties", "every \\|w\\| ≤ the k-th smallest zeroed (ties overshoot)",
                                 "exactly ⌊n·s⌋ weights per matrix", True))
    if pruning.method not in ("magnitude", "random", "wanda"):
        found.append(_difference("method", "random, magnitude, wanda", pruning.method, True))
    limits = metrics.get("limits") or {}
    for name, value in limits.items():
        if name in LITERATURE_LIMITS:  # the literature's quick runs leave the study's figures as they are
            continue
        found.append(_difference(name.replace("_", " "), "the full protocol", str(value), False))
    not_measured = metrics.get("not_measured") or {}
    for kind in ("ppl", "srs"):
        if kind in not_measured or results.metrics is None:
            found.append(_difference({"ppl": "perplexity", "srs": "SRS on BBQ"}[kind], "measured", "not measured",
                                     False))
    if srs := metrics.get("srs"):
        found += _srs_differences(srs)
    if ppl := metrics.get("perplexity"):
        name = _data_name(ppl["pruned"]["data"]["source"])
        if name != STUDY_PPL:
            found.append(_difference("perplexity data", STUDY_PPL, name, False))
        found.append(_difference("perplexity engine", "MLX (bfloat16)",
                                 f"transformers ({ppl['pruned'].get('dtype', '?')})", True))
    latency = metrics.get("latency")
    if latency and latency.get("measured") and latency["machine"].get("backend", "mlx") != "mlx":
        found.append(_difference("latency engine", "MLX on Apple Silicon",
                                 f"torch on {latency['machine']['device']} ({latency['machine']['chip']})", True))
    if latency and latency.get("measured") and latency["settings"].get("mode", "fixed") != "study":
        found.append(_difference("latency", "mlx_lm.generate sampled at T = 0.3, stopping at EOS, no warm-up",
                                 timed_work("fixed", latency["settings"]["max_tokens"])
                                 + f", {latency['settings']['warmup']} warm-up", True))
    return found


def _srs_differences(srs: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    data = srs["data"]
    covered = list(data.get("categories") or [])
    if sorted(covered) != sorted(STUDY_CATEGORIES):
        found.append(_difference("BBQ categories", ", ".join(STUDY_CATEGORIES), ", ".join(covered), False))
    if data.get("conditions") and list(data["conditions"]) != ["ambig"]:  # without ambig, no study SRS at all
        found.append(_difference("BBQ contexts", "ambiguous only", ", ".join(data["conditions"]),
                                 "ambig" in data["conditions"]))
    source = data.get("source", "")
    if source.startswith("hub:") and _data_name(source) != STUDY_BBQ:
        found.append(_difference("BBQ data", STUDY_BBQ, _data_name(source), False))
    elif not source.startswith("hub:"):
        found.append(_difference("BBQ data", f"{STUDY_BBQ} (its target_label column)",
                                 "original BBQ files, targets derived from answer_info and stereotyped_groups", True))
    run = srs["pruned"]
    if run.get("parser", "protocol") != "study":
        found.append(_difference("answer parser", "the study's regexes",
                                 "the protocol's four rules (they differ on replies such as 'Answer: C')", True))
    decoding = run.get("decoding") or {}
    found.append(_difference("SRS engine", "MLX, bfloat16, one prompt and seed per generate call",
                             f"transformers, batched, decoded in {decoding.get('dtype', '?')}", True))
    return found


def follows_protocol(results: Results) -> bool:
    """Whether the figures are comparable with the study's: no difference that changes data, sizes or metrics."""
    return all(d["comparable"] for d in protocol_differences(results))


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


def _batching(record: dict[str, Any] | None) -> str:
    """' (--eval-batch-size auto: <how>; out of memory at 64, then 32)' from a batching.BatchRecord."""
    if not record:
        return ""
    said = f"--eval-batch-size {record['requested']}" + (f": {record['how']}" if record.get("how") else "")
    if record.get("backoffs"):
        said += "; out of memory at " + ", then ".join(str(b) for b in record["backoffs"])
    return f" ({said})"


# --- the pruning literature's figures (literature.py): WikiText-2/C4 perplexity presets, lm-eval tasks ----------

LITERATURE_LIMITS = ("ppl_preset_windows", "lm_eval_limit")  # EvalSettings.limits of the literature's figures


def _preset_data(data: dict[str, Any]) -> str:
    """Where a preset's text came from: the Hub file at its commit, or a local file in the dataset's shape."""
    dataset = " ".join(str(x) for x in (data["dataset"], data.get("config"), data["split"]) if x)
    if data["source"].startswith("hub:"):
        return f"{dataset} (`{data['file']}` @ {(data.get('revision') or '?')[:12]})"
    return f"`{data['file']}`, a local file in the shape of {dataset}"


def _score(score: dict[str, Any] | None) -> str:
    """An lm-eval figure as the harness gives it: '0.6217 ± 0.0085'."""
    if not score or score.get("value") is None:
        return "—"
    return f"{score['value']:.4f}" + (f" ± {score['stderr']:.4f}" if score.get("stderr") is not None else "")


def _task_data(dataset: dict[str, Any]) -> str:
    if dataset.get("hub"):
        return " ".join(str(x) for x in (dataset["path"], dataset.get("name"), dataset.get("split")) if x)
    files = ", ".join(f"`{name}`" for name in dataset.get("files") or {}) or f"`{dataset.get('path')}`"
    return f"local {files}" + (f" ({dataset['split']})" if dataset.get("split") else "")


def literature_rows(results: Results) -> list[MetricRow]:
    """The "compared with the pruning literature" table: perplexity presets and lm-eval tasks, pruned vs dense."""
    metrics, rows = _metrics(results), []
    for section in (metrics.get("perplexity_presets") or {}).values():
        if "pruned" not in section or "dense" not in section:
            continue
        pruned, dense = section["pruned"], section["dense"]
        data = pruned["data"]
        rows.append(MetricRow(
            f"{section['preset']['title']} perplexity", f"{pruned['ppl']:.2f}", f"{dense['ppl']:.2f}",
            _pct(section.get("change")),
            f"{data['windows']:,} windows × {data['seq_len']:,} tokens ({data['seq_len_rule']}) of "
            f"{_preset_data(data)}; {data['tokens_dropped']:,} tokens in no window"))
    harness = metrics.get("lm_eval") or {}
    version = (harness.get("harness") or {}).get("version", "?")
    for task, record in (harness.get("tasks") or {}).items():
        docs = record.get("docs") or {}
        limited = f", limited to {record['limit']}: a quick run" if record.get("limit") is not None else ""
        for metric, score in record["metrics"].items():
            if "pruned" not in score or "dense" not in score:
                continue
            difference = score.get("difference")
            rows.append(MetricRow(
                f"{task} {metric} ({record['n_shot']}-shot)", _score(score["pruned"]), _score(score["dense"]),
                "—" if difference is None else f"{difference:+.4f}",
                f"lm-eval {version}, task version {record['version']}, {docs.get('evaluated')} of "
                f"{docs.get('total')} documents of {_task_data(record['dataset'])}{limited}; ± the harness's stderr; "
                "change: pruned − dense"))
    return rows


def literature_protocols(results: Results) -> list[str]:
    """One sentence per protocol the literature table follows."""
    metrics, found = _metrics(results), []
    for section in (metrics.get("perplexity_presets") or {}).values():
        preset = section["preset"]
        found.append(f"**{preset['title']} perplexity** follows {preset['follows']}; PPL = exp(mean NLL over every "
                     "next-token prediction of every window), no interval (the papers give none).")
    harness = metrics.get("lm_eval")
    if harness:
        from ..measure.harness import WANDA_TASKS

        seven = set(harness["tasks"]) == set(WANDA_TASKS)
        found.append(f"**Zero-shot tasks** run through lm-evaluation-harness {harness['harness']['version']} as a "
                     "library (`simple_evaluate` on the loaded model, the harness's own task definitions, prompts and "
                     "metrics), as " + ("SparseGPT's and Wanda's seven-task tables" if seven else
                                        "the pruning papers' zero-shot tables") +
                     "; each figure is the harness's own, ± its stderr.")
    return found


def measurement_settings(results: Results) -> str | None:
    """The settings a reader needs to rerun the measurements (batch sizes, parser, precision, latency mode)."""
    metrics, parts = _metrics(results), []
    if ppl := metrics.get("perplexity"):
        parts.append(f"perplexity batch {ppl['pruned'].get('batch_size', '?')} rows"
                     f"{_batching(ppl['pruned'].get('batching'))} in {ppl['pruned'].get('dtype', '?')}")
    if srs := metrics.get("srs"):
        run = srs["pruned"]
        decoding = run.get("decoding") or {}
        parts.append(f"SRS batch {run['batch_size']} prompts × {len(run['seeds'])} seeds"
                     f"{_batching(run.get('batching'))}, parser "
                     f"`{run.get('parser', 'protocol')}`, decoded in {decoding.get('dtype', '?')}"
                     + (f" (upcast from {decoding['upcast_from']})" if decoding.get("upcast_from") else "")
                     + (f"; batches: {run['batch_rule']}" if run.get("batch_rule") else ""))
    latency = metrics.get("latency")
    if latency and latency.get("measured"):
        settings = latency["settings"]
        parts.append(f"latency mode `{settings.get('mode', 'fixed')}`, {settings['n_items']} items, "
                     f"{settings['warmup']} warm-up per model, seed {settings['seed']}")
    return "; ".join(parts) or None
