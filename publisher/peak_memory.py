"""The most memory a device held during a block: recorded for the pruning and measurement stages on CUDA."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class PeakMemory:
    """The most memory the device held during a block, on CUDA (None elsewhere: no resettable peak).

        >>> with PeakMemory(device) as peak:
        ...     evaluate(...)
        >>> peak.bytes
    """

    def __init__(self, device: torch.device):
        self.device, self.bytes = device, None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            import torch

            self.bytes = torch.cuda.max_memory_allocated(self.device)
