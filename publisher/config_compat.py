"""A saved config.json that transformers 4 and 5, mlx-lm and vLLM read the same way.

    >>> top_level_rope_fields({"rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}})
    {'rope_theta': 1000000.0}
    >>> write_compatible_config(Path("runs/x"))          # after save_pretrained / config.save_pretrained

transformers 5 writes RoPE settings only as `rope_parameters` (flat, or one dict per layer type). transformers 4,
mlx-lm and vLLM under transformers 4 read `rope_theta` and `rope_scaling` at the top level and silently fall
back to their defaults without them: a pruned Mistral-7B (θ = 1e6) would run at θ = 10,000 under mlx-lm. So
every save mirrors them at the top level, derived from `rope_parameters`, which stays as it was.

Mixture-of-experts configs: transformers 5 writes Qwen3-MoE's expert count as `num_local_experts` (its
config maps `num_experts` onto it); transformers 4 and mlx-lm read `num_experts`, as the base's config spells
it, and mlx-lm fails without it. `moe_fields` mirrors it (for every config class with that alias).

transformers 5 still reads the mirror as it wrote it: it takes `rope_scaling` (when present) as the base of
`rope_parameters` and fills `rope_theta` / `partial_rotary_factor` from the top level, which hold the same
values; Gemma-3 style per-layer configs merge `rope_scaling` into their full-attention entry and read the
sliding layers' base from `rope_local_base_freq` (tested for every supported architecture).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_FILE = "config.json"


def _rope_fields(params: dict[str, Any]) -> dict[str, Any]:
    """`rope_theta` and, for a scaled RoPE, `rope_scaling` spelled for every reader (`type` and `rope_type`;
    LongRoPE the way Phi-3 ships it)."""
    out: dict[str, Any] = {}
    if "rope_theta" in params:
        out["rope_theta"] = params["rope_theta"]
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type in ("longrope", "su"):
        # Phi-3 as transformers 4 reads it: the pretraining length at the top level and `rope_scaling` with
        # exactly `type`, `short_factor`, `long_factor` (its config refuses any other key, `rope_type` included)
        dropped = ("rope_theta", "partial_rotary_factor", "rope_type", "original_max_position_embeddings")
        out["rope_scaling"] = {k: v for k, v in params.items() if k not in dropped} | {"type": "longrope"}
        if "original_max_position_embeddings" in params:
            out["original_max_position_embeddings"] = params["original_max_position_embeddings"]
    elif rope_type != "default":
        scaling = {k: v for k, v in params.items() if k not in ("rope_theta", "partial_rotary_factor")}
        out["rope_scaling"] = scaling | {"type": rope_type, "rope_type": rope_type}
    return out


def top_level_rope_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The top-level RoPE keys older readers need, derived from a transformers >= 5 `rope_parameters`.

        >>> per_layer = {"full_attention": {"rope_theta": 1e6}, "sliding_attention": {"rope_theta": 1e4}}
        >>> top_level_rope_fields({"rope_parameters": per_layer})
        {'rope_theta': 1000000.0, 'rope_local_base_freq': 10000.0}

    A config that already has `rope_theta` at the top level (written by transformers 4, or by this function)
    gets nothing; keys already present are never replaced. Also handed to mlx-lm's loader by the latency stage.
    """
    params = config.get("rope_parameters")
    if not isinstance(params, dict) or "rope_theta" in config:
        return {}
    if "full_attention" in params or "sliding_attention" in params:  # one dict per layer type (Gemma-3 style)
        out = _rope_fields(params.get("full_attention") or {})
        if isinstance(params.get("sliding_attention"), dict) and "rope_theta" in params["sliding_attention"]:
            out["rope_local_base_freq"] = params["sliding_attention"]["rope_theta"]
    else:
        out = _rope_fields(params)
        if "partial_rotary_factor" in params:
            out["partial_rotary_factor"] = params["partial_rotary_factor"]
    return {key: value for key, value in out.items() if config.get(key) is None}


def moe_fields(config: dict[str, Any]) -> dict[str, Any]:
    """`num_experts` where transformers 5 wrote the expert count under the name its config class aliases it to
    (Qwen3-MoE: `num_local_experts`); nothing for other configs or when already present."""
    if "num_experts" in config or not isinstance(config.get("model_type"), str):
        return {}
    try:
        from transformers import CONFIG_MAPPING

        alias = getattr(CONFIG_MAPPING[config["model_type"]], "attribute_map", {}).get("num_experts")
    except (ImportError, KeyError):
        return {}
    return {"num_experts": config[alias]} if alias and isinstance(config.get(alias), int) else {}


def top_level_fields(config: dict[str, Any]) -> dict[str, Any]:
    """Every key older readers need that transformers 5 left out: RoPE (`top_level_rope_fields`) and the expert
    count (`moe_fields`). Handed to mlx-lm's loader by the latency stage, written by every save."""
    return top_level_rope_fields(config) | moe_fields(config)


def compatible_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with the top-level RoPE keys (and an MoE's `num_experts`) added, also inside a vision-language
    model's `text_config`."""
    out = config | top_level_fields(config)
    if isinstance(config.get("text_config"), dict):
        out["text_config"] = compatible_config(config["text_config"])
    return out


def write_compatible_config(folder: Path) -> None:
    """Rewrite `folder/config.json` with `compatible_config`, formatted as transformers writes it."""
    path = Path(folder) / CONFIG_FILE
    config = json.loads(path.read_text())
    updated = compatible_config(config)
    if updated != config:
        path.write_text(json.dumps(updated, indent=2, sort_keys=True) + "\n")
