"""Sparsity structures: unstructured, or N:M (N zeros in every group of M consecutive inputs of a row).

    >>> parse_structure("2:4")
    Structure(n=2, m=4)
    >>> parse_structure("2:4").implied_sparsity
    0.5
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SettingsError

_NM = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True)
class Structure:
    n: int = 0  # zeros per group; 0 = unstructured
    m: int = 0  # group size along the input dimension

    @property
    def unstructured(self) -> bool:
        return self.m == 0

    @property
    def implied_sparsity(self) -> float | None:
        return None if self.unstructured else self.n / self.m

    def __str__(self) -> str:
        return "unstructured" if self.unstructured else f"{self.n}:{self.m}"

    def check_sparsity(self, sparsity: float) -> None:
        implied = self.implied_sparsity
        if implied is not None and abs(implied - sparsity) > 1e-6:  # 3:7 → 0.428571, as the error prints it
            raise SettingsError(
                f"structure {self} implies sparsity {implied:g}, but --sparsity is {sparsity:g}; "
                f"use --sparsity {implied:g} or another structure"
            )

    def fits(self, in_features: int) -> bool:
        return self.unstructured or in_features % self.m == 0


def parse_structure(text: str) -> Structure:
    if text == "unstructured":
        return Structure()
    match = _NM.match(text)
    if not match or not (0 < int(match[1]) < int(match[2])):
        raise SettingsError(f"unknown structure {text!r}: use 'unstructured' or N:M with 0 < N < M, e.g. 2:4")
    return Structure(int(match[1]), int(match[2]))
