"""Perplexity through MLX on given token rows: the cross-check that MLX runs the same model as torch.

    >>> rows = build_ppl_rows(tokenizer, source, n_rows=8, seq_len=128).ids     # [N, L] torch or numpy ints
    >>> mlx_perplexity(Path("runs/x"), rows)      # ≈ evaluate_perplexity(torch_model, rows).ppl, within 1 %
    9.27

Same definition as the torch side: mean next-token cross-entropy over all N x (L-1) predictions, then exp.
The model is loaded like the latency stage loads it (`load_mlx_model`: mlx-lm from the transformers folder, with
the transformers-5 RoPE keys translated), so agreement here means the latency numbers time the right model.
Computed in float32 by default (`dtype=None` keeps the checkpoint's dtype). Raises `MLXUnavailableError` where
MLX cannot run the model, `LatencySettingsError` for ids that are not an [N, L >= 2] integer array.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .latency import LatencySettingsError, load_mlx_model


def _as_rows(ids: Any) -> np.ndarray:
    if hasattr(ids, "detach"):  # torch.Tensor
        ids = ids.detach().cpu().numpy()
    rows = np.asarray(ids)
    if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] < 2 or not np.issubdtype(rows.dtype, np.integer):
        raise LatencySettingsError(f"perplexity rows must be an integer array [N, L >= 2], got dtype {rows.dtype} "
                                   f"shape {tuple(rows.shape)}")
    return rows.astype(np.int32)


def mlx_perplexity(folder: Path, ids: Any, *, batch_size: int = 8, dtype: str | None = "float32") -> float:
    """exp(mean NLL) of `folder`'s model on the rows `ids` [N, L], evaluated with MLX."""
    rows = _as_rows(ids)
    model, config = load_mlx_model(Path(folder))
    import mlx.core as mx

    vocab = config.get("vocab_size")
    if vocab is not None and int(rows.max()) >= vocab:
        raise LatencySettingsError(f"token id {int(rows.max())} is outside the model's vocabulary ({vocab})")
    if dtype is not None:
        model.set_dtype(getattr(mx, dtype))
    total, count = 0.0, 0
    for start in range(0, rows.shape[0], batch_size):
        batch = mx.array(rows[start:start + batch_size])
        logits = model(batch[:, :-1]).astype(mx.float32)
        targets = batch[:, 1:]
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        picked = mx.take_along_axis(logprobs, targets[..., None], axis=-1)
        nll = np.array(-picked, dtype=np.float64)
        total += float(nll.sum())
        count += nll.size
    return math.exp(total / count)
