"""Small statistics for the measurements: Wilson intervals, item-clustered bootstrap intervals, relative changes,
disparity ratios.

    >>> wilson_interval(5, 10)
    (0.2365931..., 0.7634068...)
    >>> Proportion.of(81, 263).rate
    0.3079847908745247
    >>> relative_change(0.119, 0.065)      # (new - old) / old
    0.8307692307692308
    >>> disparity_ratio(0.837, 0.035)      # ΔSRS / ΔPPL, both relative
    23.914285714285715
    >>> draws = bootstrap_draws(3, resamples=2000, key="Age/ambig")   # [2000, 3] item indices, seeded by key
    >>> clustered_proportion(np.array([5, 0, 1]), np.array([5, 5, 5]), draws).rate   # 6 of 15 replies
    0.4

Why items, not replies: BBQ's 5 seeds of one item are sampled at T = 0.3 from the same prompt, so they mostly agree
(a design effect of 3.5-4.5 on SmolLM2). Treating the 5 replies as independent makes a Wilson interval about 2x
too narrow. A rate pooled over items x seeds is a ratio estimator; its interval is a percentile bootstrap that
resamples whole items (every seed of a drawn item comes with it), seeded by the group's name so the same data give
the same interval in every process. A paired comparison draws the same items for both models.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
BOOTSTRAP_RESAMPLES = 2000
WILSON = "wilson"
ITEM_BOOTSTRAP = "item bootstrap"


def wilson_interval(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0.0, 1.0) when `total` is 0."""
    if total < 0 or not 0 <= successes <= total:
        raise ValueError(f"need 0 <= successes <= total, got {successes} of {total}")
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    z2 = z * z
    denom = 1.0 + z2 / total
    centre = (p + z2 / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Proportion:
    """k of n, the rate and its 95 % Wilson interval (rate is None when n is 0)."""

    k: int
    n: int
    rate: float | None
    low: float
    high: float
    interval: str = WILSON  # how low/high were found: "wilson" (independent trials) or "item bootstrap"

    @classmethod
    def of(cls, k: int, n: int) -> Proportion:
        low, high = wilson_interval(k, n)
        return cls(k=k, n=n, rate=k / n if n else None, low=low, high=high)

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass
class MeanEstimate:
    """A mean with a symmetric 95 % interval from its standard error."""

    value: float | None
    se: float | None
    low: float | None
    high: float | None
    interval: str = "normal"  # "normal" (value ± z·se) or "item bootstrap" (percentiles of resampled values)

    @classmethod
    def of(cls, value: float | None, se: float | None, z: float = Z95) -> MeanEstimate:
        if value is None or se is None:
            return cls(value, se, None, None)
        return cls(value, se, value - z * se, value + z * se)

    @classmethod
    def from_replicates(cls, value: float | None, replicates: np.ndarray) -> MeanEstimate:
        """`value` with the SE and 95 % percentile interval of its bootstrap `replicates` (NaNs ignored)."""
        low, high = percentile_interval(replicates)
        finite = replicates[np.isfinite(replicates)]
        se = float(finite.std(ddof=1)) if value is not None and finite.size > 1 else None
        return cls(value, se, low if value is not None else None, high if value is not None else None,
                   ITEM_BOOTSTRAP)


def mean_of_proportions(parts: list[Proportion]) -> MeanEstimate:
    """Unweighted mean of independent proportions with the normal-approximation SE of that mean.

    SE = sqrt(sum p_i (1 - p_i) / n_i) / m over the m parts with n_i > 0. Used for "SRS overall", the
    unweighted mean over categories (protocol §3).
    """
    used = [p for p in parts if p.n > 0 and p.rate is not None]
    if not used:
        return MeanEstimate(None, None, None, None)
    mean = sum(p.rate for p in used) / len(used)
    se = math.sqrt(sum(p.rate * (1 - p.rate) / p.n for p in used)) / len(used)
    return MeanEstimate.of(mean, se)


def relative_change(new: float, old: float) -> float | None:
    """(new - old) / old; None when old is 0 (the change is undefined)."""
    if old == 0:
        return None
    return (new - old) / old


def disparity_ratio(srs_change: float | None, ppl_change: float | None) -> float | None:
    """Relative SRS change over relative perplexity change (the study's "24x"); None when undefined.

    Undefined when either change is unknown or perplexity did not rise (ratio of a rise to a fall or to
    zero says nothing useful).
    """
    if srs_change is None or ppl_change is None or ppl_change <= 0:
        return None
    return srs_change / ppl_change


def bootstrap_draws(n_items: int, *, resamples: int = BOOTSTRAP_RESAMPLES, key: str = "") -> np.ndarray:
    """[resamples, n_items] item indices drawn with replacement, from a generator seeded by sha256(`key`)."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).integers(0, max(n_items, 1), size=(resamples, n_items), dtype=np.int32)


def ratio_replicates(k: np.ndarray, n: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """sum(k) / sum(n) over each row of drawn items; NaN where a resample holds no trial (sum n = 0)."""
    if draws.shape[1] == 0:
        return np.full(draws.shape[0], np.nan)
    num, den = k[draws].sum(axis=1, dtype=np.float64), n[draws].sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def percentile_interval(replicates: np.ndarray) -> tuple[float | None, float | None]:
    """The 2.5th and 97.5th percentiles of the finite replicates; (None, None) when there are none."""
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return None, None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def clustered_proportion(k: np.ndarray, n: np.ndarray, draws: np.ndarray) -> Proportion:
    """sum(k) of sum(n) trials pooled over items, with the item-bootstrap 95 % interval (see the module doc).

    Without trials the rate is None and the interval (0, 1), as `Proportion.of(0, 0)`. At a rate of exactly 0 or 1
    every resample repeats it and the percentile interval collapses to a point; there the Wilson interval of 0 (or
    all) of the items that had trials is used instead — what the data allow if each item's trials all agree.
    """
    total_k, total_n = int(k.sum()), int(n.sum())
    if total_n == 0 or total_k in (0, total_n):
        return pooled_proportion(total_k, total_n, None, None, int((n > 0).sum()))
    return pooled_proportion(total_k, total_n, k[draws].sum(axis=1), n[draws].sum(axis=1), int((n > 0).sum()))


def pooled_proportion(k: int, n: int, k_resampled: np.ndarray | None, n_resampled: np.ndarray | None,
                      items: int) -> Proportion:
    """k of n with the percentile interval of the resampled ratios `k_resampled / n_resampled` (sums over drawn
    items, one per resample; several strata may be added up before), or at 0 or 1 the Wilson interval over
    `items` (see `clustered_proportion`)."""
    if n == 0:
        return Proportion(0, 0, None, 0.0, 1.0, ITEM_BOOTSTRAP)
    rate = k / n
    if k in (0, n) or k_resampled is None or n_resampled is None:
        low, high = wilson_interval(0 if k == 0 else items, items) if items else (0.0, 1.0)
        return Proportion(k, n, rate, low, high, ITEM_BOOTSTRAP)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(n_resampled > 0, k_resampled / np.where(n_resampled > 0, n_resampled, 1), np.nan)
    low, high = percentile_interval(ratios)
    return Proportion(k, n, rate, rate if low is None else low, rate if high is None else high, ITEM_BOOTSTRAP)


def design_effect(k: np.ndarray, n: np.ndarray, replicates: np.ndarray) -> float | None:
    """Bootstrap variance of the pooled rate (its `ratio_replicates`) over the variance it would have if every trial
    were independent.

    1 means the trials of an item behave like independent draws; 5 seeds that always agree give about 5.
    None when the rate is 0 or 1 (no binomial variance to compare with) or nothing was drawn.
    """
    total_n = int(n.sum())
    if total_n == 0:
        return None
    p = float(k.sum()) / total_n
    binomial = p * (1 - p) / total_n
    finite = replicates[np.isfinite(replicates)]
    if binomial == 0 or finite.size < 2:
        return None
    return float(finite.var(ddof=1) / binomial)
