"""The card's mixture-of-experts rows: what was done to the experts, from `results.json` alone.

    >>> moe = moe_card(results)            # None for a dense model
    >>> [row["setting"] for row in moe["rows"]]
    ['experts', 'sparsity by kind', 'spread across experts', 'spread across layers', 'expert calibration']
    >>> moe["drop"]                        # expert dropping: kept / before, parameters before → after

`templates/partials/moe.md.j2` renders them inside the pruning configuration table, with `moe["text"]`, the
sentence that says how the method treated experts.
"""

from __future__ import annotations

from typing import Any

from ..results import Results

SALIENCY_TEXT = {
    "reap": "REAP (mean over the tokens routed to an expert of routing weight × L2 norm of its output)",
    "frequency": "routing frequency (tokens the router sends the expert)",
}


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _spread(s: dict[str, Any], what: str) -> str:
    return f"min {_pct(s['min'])} / median {_pct(s['median'])} / max {_pct(s['max'])} over {s['count']} {what}"


def _experts_row(moe: dict[str, Any]) -> str:
    experts = "/".join(map(str, moe.get("experts_per_layer") or [])) or "?"
    text = (f"{experts} routed experts per layer in {moe.get('moe_layers', '?')} MoE layers, "
            f"{moe.get('experts_per_token') or '?'} per token; routers not pruned (bit-identical to the base)")
    if moe.get("shared_experts"):
        text += ("; shared experts pruned like any linear, their scalar gate (shared_expert_gate) decides how much "
                 "they count and is not pruned")
    return text


def _calibration_row(moe: dict[str, Any]) -> str | None:
    if moe.get("calibration") is None:
        return None
    tokens = sorted(t for layer in moe["layers"] for t in layer["routed_tokens"])
    seen = f"tokens routed per expert min {tokens[0]:,} / median {tokens[len(tokens) // 2]:,} / max {tokens[-1]:,}"
    if moe["calibration"] == "all":
        return f"all: every calibration token fed to every expert, unweighted ({seen})"
    return (f"routed: each expert's statistics from the calibration tokens its router sent it, each weighted by its "
            f"routing weight ({seen}); {moe['fell_back']} of {moe['experts']} experts got fewer than the floor "
            f"({100 * moe['floor_share']:.0f} % of a uniform share) and were given every token instead")


def _method_text(results: Results, moe: dict[str, Any]) -> str:
    pruning = results.pruning
    if moe.get("expert_drop"):
        return ("In this mixture-of-experts model whole routed experts were removed; the experts kept, the routers' "
                "rows for them and every other weight are the base's, unchanged.")
    unit = "N:M groups" if pruning.structure != "unstructured" else "threshold"
    text = (f"In this mixture-of-experts model every routed expert's gate, up and down matrices were pruned as "
            f"separate matrices, each with its own {unit}, as the files store them (transformers' fused "
            f"gate_up_proj split half-way, never across the fusion); attention and shared-expert projections like "
            f"any linear; the routers were left as they were.")
    if moe.get("calibration") == "routed":
        text += (" Each expert was scored on the calibration tokens its router sends it, weighted by routing weight "
                 "(experts under the floor on all tokens).")
    elif moe.get("calibration") == "all":
        text += " Each expert was scored on every calibration token (calibrate-all-experts)."
    return text


def _drop(drop: dict[str, Any]) -> dict[str, Any]:
    removed = 1 - drop["params_after"] / drop["params_before"]
    return {
        **drop,
        "saliency_text": SALIENCY_TEXT.get(drop["saliency"], drop["saliency"]),
        "params_text": f"{drop['params_before']:,} → {drop['params_after']:,}, {_pct(removed)} fewer",
        "kept_lines": [f"layer {x['block']}: {', '.join(map(str, x['kept']))}" for x in drop["layers"]],
    }


def moe_card(results: Results) -> dict[str, Any] | None:
    """Rows, method sentence and expert-drop facts for the card; None for a dense model."""
    moe = results.pruning.moe
    if not moe:
        return None
    rows = [{"setting": "experts", "value": _experts_row(moe)}]
    summary = results.sparsity.moe
    if summary and not moe.get("expert_drop"):
        kinds = ", ".join(f"{kind} {_pct(x['sparsity'])}" for kind, x in summary["by_kind"].items())
        rows += [{"setting": "sparsity by kind", "value": kinds},
                 {"setting": "spread across experts", "value": _spread(summary["experts"], "experts") +
                  " (each expert's gate + up + down, counted on the published files)"},
                 {"setting": "spread across layers", "value": _spread(summary["layers"], "layers")}]
    calibration = _calibration_row(moe)
    if calibration:
        rows.append({"setting": "expert calibration", "value": calibration})
    drop = _drop(moe["expert_drop"]) if moe.get("expert_drop") else None
    return {"rows": rows, "drop": drop, "text": _method_text(results, moe)}
