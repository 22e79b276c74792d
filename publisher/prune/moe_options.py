"""The mixture-of-experts options' checks, shared by the run settings (before any work) and the pruning library
(on every request): one wording, one list of accepted values.

    >>> check_moe_choices("routed", "reap")
    >>> check_keep(experts_keep=0.5, experts_keep_n=None, unstructured=True)
"""

from __future__ import annotations

from ..errors import SettingsError

MOE_CALIBRATION = ("routed", "all")  # Wanda/SparseGPT on experts: the tokens routed to each, or every token
SALIENCIES = ("reap", "frequency")  # expert-drop's ranking of experts


def check_moe_choices(moe_calibration: str, expert_saliency: str) -> None:
    if moe_calibration not in MOE_CALIBRATION:
        raise SettingsError(f"--moe-calibration must be one of {', '.join(MOE_CALIBRATION)}, got {moe_calibration!r}")
    if expert_saliency not in SALIENCIES:
        raise SettingsError(f"--expert-saliency must be one of {', '.join(SALIENCIES)}, got {expert_saliency!r}")


def check_keep(*, experts_keep: float | None, experts_keep_n: int | None, unstructured: bool) -> None:
    """expert-drop's own settings: exactly one of a kept fraction or count, in range; no N:M structure."""
    if (experts_keep is None) == (experts_keep_n is None):
        raise SettingsError("expert-drop needs exactly one of --experts-keep F (a fraction of each layer's "
                            "experts, e.g. 0.5) or --experts-keep-n K (experts kept per layer)")
    if experts_keep is not None and not 0.0 < experts_keep < 1.0:
        raise SettingsError(f"--experts-keep must be strictly between 0 and 1, got {experts_keep:g}")
    if experts_keep_n is not None and experts_keep_n < 1:
        raise SettingsError(f"--experts-keep-n must be at least 1, got {experts_keep_n}")
    if not unstructured:
        raise SettingsError("expert-drop removes whole experts: --structure does not apply (leave it unstructured)")
