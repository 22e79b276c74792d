"""Sparsity of a mixture-of-experts checkpoint by kind, per expert and per layer, from the saved files' counts.

Each routed expert's matrices are separate tensors in the files (`experts.N.gate_proj`, Mixtral's
`experts.N.w1`), so the per-matrix counts of `measure_checkpoint` already hold every expert; this groups them
by the names the files use: an expert is `….experts.<N>.…` of one layer (`….<layer>.…`, the first number in the
name), a shared expert is named `shared_expert…`, attention `…attn…`/`…attention…`, anything else "mlp".

    >>> summary = moe_summary(record.layers)          # None for a dense model
    >>> summary["experts"]                            # spread of per-expert sparsity (gate + up + down)
    {'count': 8, 'min': 0.5, 'median': 0.5, 'max': 0.5}
"""

from __future__ import annotations

import re
import statistics
from typing import Any

from ..results import LayerSparsity

_EXPERT = re.compile(r"\.experts\.(\d+)\.")
_LAYER = re.compile(r"\.(\d+)\.")
KINDS = ("attention", "routed expert", "shared expert", "mlp")


def kind_of(name: str) -> str:
    if _EXPERT.search(name):
        return "routed expert"
    if "shared_expert" in name:
        return "shared expert"
    return "attention" if "attn" in name or "attention" in name else "mlp"


def _spread(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "min": min(values), "median": statistics.median(values), "max": max(values)}


def moe_summary(layers: list[LayerSparsity]) -> dict[str, Any] | None:
    """By kind (params, zeros, sparsity), the spread over experts and over layers, and per layer; None when no
    tensor is a routed expert's."""
    if not any(_EXPERT.search(x.name) for x in layers):
        return None
    kinds: dict[str, list[int]] = {}
    experts: dict[tuple[int, int], list[int]] = {}
    per_layer: dict[int, list[int]] = {}
    for x in layers:
        totals = kinds.setdefault(kind_of(x.name), [0, 0])
        totals[0] += x.params
        totals[1] += x.zeros
        layer = _LAYER.search(x.name)
        index = int(layer.group(1)) if layer else -1
        entry = per_layer.setdefault(index, [0, 0, 0])
        entry[0] += x.params
        entry[1] += x.zeros
        expert = _EXPERT.search(x.name)
        if expert:
            counts = experts.setdefault((index, int(expert.group(1))), [0, 0])
            counts[0] += x.params
            counts[1] += x.zeros
    for (index, _), _counts in experts.items():
        per_layer[index][2] += 1
    return {
        "by_kind": {k: {"params": p, "zeros": z, "sparsity": z / p if p else 0.0}
                    for k in KINDS if k in kinds for p, z in [kinds[k]]},
        "experts": _spread([z / p for p, z in experts.values()]),
        "layers": _spread([z / p for p, z, _ in per_layer.values()]),
        "per_layer": [{"layer": i, "sparsity": z / p, "experts": n} for i, (p, z, n) in sorted(per_layer.items())],
    }
