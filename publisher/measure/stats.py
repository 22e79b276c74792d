"""Small statistics for the measurements: Wilson intervals, relative changes, disparity ratios.

    >>> wilson_interval(5, 10)
    (0.2365931..., 0.7634068...)
    >>> Proportion.of(81, 263).rate
    0.3079847908745247
    >>> relative_change(0.119, 0.065)      # (new - old) / old
    0.8307692307692308
    >>> disparity_ratio(0.837, 0.035)      # ΔSRS / ΔPPL, both relative
    23.914285714285715
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


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

    @classmethod
    def of(cls, value: float | None, se: float | None, z: float = Z95) -> MeanEstimate:
        if value is None or se is None:
            return cls(value, se, None, None)
        return cls(value, se, value - z * se, value + z * se)


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
