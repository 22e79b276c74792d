"""Perplexity on the study's rows (docs/measurement.md): build N x L token rows once, evaluate any model on them.

    >>> source = ppl_source("../shared/data/tulu/sft_sample.jsonl")   # or None: allenai/tulu-3-sft-mixture
    >>> rows = build_ppl_rows(tokenizer, source, n_rows=16, seq_len=256)
    >>> rows.info.token_hash                     # identical for the dense model and every pruned variant
    '3f1c…'
    >>> result = evaluate_perplexity(model, rows)
    >>> result.ppl, result.se
    (21.3, 0.4)

Rows: a seed-123 permutation of the data rows — numpy's legacy generator, `RandomState(seed).permutation(n)`,
which is what the study got from `np.random.seed(123)` before `mlx_lm.perplexity.load_data` (it calls
`np.random.permutation`); the same indices for a local file and for the Hub dataset (indexed with them, not
`Dataset.shuffle`, which draws another order); each conversation rendered with the model's own chat template
(tokenized, no generation prompt; system turns merged into the first user turn where the template rejects
them); plain `text` rows tokenized as-is (with the tokenizer's special tokens, e.g. BOS); tokens concatenated
until N x L are collected and cut into N rows of L. `messages` rows with a tokenizer that has no chat template
are an error unless `plain_fallback=True`, which renders "role: content" paragraphs and records
`rendering.plain_fallback` in the row info.

Evaluation: batches sized to the device (`--eval-batch-size`, batching.py), token-level mean NLL over all
N x (L-1) next-token predictions, PPL = exp(mean), SE = PPL * std(losses) / sqrt(count) (delta method). The head
is applied in slices of the sequence so the fp32 logits of a whole batch never exist at once.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..hashing import sha256_file
from ..hub_data import dataset_commit, datasets_module
from ..jsonl import json_lines
from ..peak_memory import PeakMemory
from ..placement import input_device
from .batching import AUTO, BatchRecord, auto_batch_size, parse_batch_size, ppl_row_bytes, run_chunks
from .chat import chat_token_ids, has_chat_template
from .errors import ChatTemplateError, PerplexityDataError

DEFAULT_DATASET = "allenai/tulu-3-sft-mixture"
DEFAULT_SPLIT = "train"
DEFAULT_ROWS = 256
DEFAULT_SEQ_LEN = 512
DEFAULT_SEED = 123
# Model types whose CausalLM head is `lm_head(hidden)` (+ optional final logit soft-capping): safe to split.
_PLAIN_HEAD_TYPES = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3_text",
                     "olmo", "olmo2", "smollm3", "starcoder2", "qwen2_moe", "qwen3_moe"}
_LOGIT_BYTES_PER_SLICE = 256 * 2**20


@dataclass(frozen=True)
class PplSource:
    """Where the perplexity data comes from: a Hub dataset (only online) or a local JSONL file."""

    kind: str  # "hub" | "jsonl"
    name: str  # dataset id, or the file path
    split: str = DEFAULT_SPLIT
    revision: str | None = None


def ppl_source(value: str | Path | None, *, revision: str | None = None) -> PplSource:
    """`--ppl-data`: None → the protocol's Hub dataset; an existing file (.jsonl) → that file; else a Hub id."""
    if value is None:
        return PplSource("hub", DEFAULT_DATASET, DEFAULT_SPLIT, revision)
    path = Path(value)
    if path.suffix == ".jsonl" or path.exists():
        if not path.is_file():
            raise PerplexityDataError(f"perplexity data {path} does not exist or is not a JSONL file")
        return PplSource("jsonl", str(path))
    return PplSource("hub", str(value), DEFAULT_SPLIT, revision)


@dataclass
class PplRowsInfo:
    """What the rows are and where they came from (serialisable; goes into results.json)."""

    source: str  # "hub:<id>@<sha>" or "jsonl:<path>"
    source_sha256: str | None  # sha256 of the JSONL file (kind jsonl)
    revision: str | None  # resolved dataset commit (kind hub)
    split: str | None
    seed: int
    n_rows: int
    seq_len: int
    token_hash: str  # sha256 of the int64 token ids, row-major: same hash ⇒ same rows
    rows_read: int  # data rows walked (in permutation order) to collect N x L tokens
    tokens_read: int  # tokens those rows rendered to (≥ N x L; the tail is dropped)
    rendering: dict[str, int] = field(default_factory=dict)  # how rows were rendered: chat_template, text, ...


@dataclass
class PplRows:
    ids: torch.Tensor  # [N, L] int64
    info: PplRowsInfo


@dataclass
class PerplexityResult:
    ppl: float
    se: float  # delta method: ppl * std(losses) / sqrt(predictions)
    mean_nll: float
    nll_std: float
    predictions: int  # N x (L - 1)
    tokens: int  # N x L tokens fed
    rows: int
    seq_len: int
    batch_size: int
    token_hash: str
    tokens_per_s: float
    wall_s: float
    dtype: str
    data: PplRowsInfo
    batching: dict[str, Any] = field(default_factory=dict)  # batching.BatchRecord: requested, start, final, backoffs
    peak_gpu_bytes: int | None = None  # CUDA only: the most memory the evaluation held


def token_hash(ids: torch.Tensor) -> str:
    """sha256 over the shape and the int64 little-endian token ids."""
    arr = np.ascontiguousarray(ids.detach().cpu().numpy().astype("<i8"))
    digest = hashlib.sha256(f"{tuple(arr.shape)}".encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a local perplexity file: each a `messages` or a `text` record."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, row in json_lines(f, where=str(path), error=PerplexityDataError):
            if not isinstance(row, dict) or ("messages" not in row and "text" not in row):
                raise PerplexityDataError(f"{path}:{number} has neither a 'messages' nor a 'text' field")
            rows.append(row)
    if not rows:
        raise PerplexityDataError(f"{path} holds no rows")
    return rows


def permutation(n: int, seed: int) -> np.ndarray:
    """The row order of the study: `np.random.seed(seed); np.random.permutation(n)` (legacy MT19937), as
    `mlx_lm.perplexity.load_data` draws it; `RandomState` gives the same indices without touching global state."""
    return np.random.RandomState(seed).permutation(n)


def _hub_rows(source: PplSource, seed: int) -> tuple[Iterable[dict[str, Any]], str | None]:
    """The Hub dataset in permutation order (loaded whole: a permutation needs every row). Online only."""
    datasets = datasets_module(PerplexityDataError, "loading perplexity data", "pass a local JSONL with --ppl-data")
    try:
        revision = dataset_commit(source.name, source.revision)
        dataset = datasets.load_dataset(source.name, split=source.split, revision=revision)
    except Exception as exc:  # network, auth, missing dataset: the user must act
        raise PerplexityDataError(f"cannot load the perplexity dataset {source.name!r} ({source.split}) from the "
                                  f"Hub: {exc}; pass a local JSONL with --ppl-data") from None
    return (dataset[int(i)] for i in permutation(len(dataset), seed)), revision


def _plain_render(messages: list[dict[str, Any]]) -> str:
    return "\n\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)


def _render(tokenizer: Any, row: dict[str, Any], plain_fallback: bool, counts: dict[str, int]) -> list[int]:
    messages = row.get("messages")
    if messages:
        if has_chat_template(tokenizer):
            ids, merged = chat_token_ids(tokenizer, messages, add_generation_prompt=False)
            key = "chat_template_merged_system" if merged else "chat_template"
        elif plain_fallback:
            ids = tokenizer(_plain_render(messages), verbose=False)["input_ids"]
            key = "plain_fallback"
        else:
            raise ChatTemplateError(
                "the tokenizer has no chat template and the perplexity data holds conversations ('messages'); "
                "use data with a 'text' field, set a chat template, or allow the plain-text fallback"
            )
    else:
        text = row.get("text") or ""
        ids = tokenizer(text, verbose=False)["input_ids"] if text else []
        key = "text"
    counts[key] = counts.get(key, 0) + 1
    return [int(i) for i in ids]


def build_ppl_rows(tokenizer: Any, source: PplSource, *, n_rows: int = DEFAULT_ROWS, seq_len: int = DEFAULT_SEQ_LEN,
                   seed: int = DEFAULT_SEED, plain_fallback: bool = False) -> PplRows:
    """Walk the seeded permutation, render, concatenate and cut into `n_rows` x `seq_len` token ids."""
    if n_rows < 1 or seq_len < 2:
        raise PerplexityDataError(f"need at least 1 row of at least 2 tokens, got {n_rows} x {seq_len}")
    need = n_rows * seq_len
    if source.kind == "jsonl":
        path = Path(source.name)
        data = _read_rows(path)
        ordered: Iterable[dict[str, Any]] = (data[i] for i in permutation(len(data), seed))
        revision, file_hash = None, sha256_file(path)
        label = f"jsonl:{path}"
    elif source.kind == "hub":
        ordered, revision = _hub_rows(source, seed)
        file_hash = None
        label = f"hub:{source.name}@{revision}"
    else:
        raise PerplexityDataError(f"unknown perplexity source kind {source.kind!r}")

    collected: list[int] = []
    counts: dict[str, int] = {}
    rows_read = 0
    for row in ordered:
        collected.extend(_render(tokenizer, row, plain_fallback, counts))
        rows_read += 1
        if len(collected) >= need:
            break
    if len(collected) < need:
        raise PerplexityDataError(
            f"only {len(collected):,} tokens in all {rows_read:,} rows of {label}; {n_rows} x {seq_len} = "
            f"{need:,} are needed (use more data, or fewer/shorter rows)"
        )
    ids = torch.tensor(collected[:need], dtype=torch.long).view(n_rows, seq_len)
    info = PplRowsInfo(source=label, source_sha256=file_hash, revision=revision,
                       split=source.split if source.kind == "hub" else None, seed=seed, n_rows=n_rows,
                       seq_len=seq_len, token_hash=token_hash(ids), rows_read=rows_read,
                       tokens_read=len(collected), rendering=counts)
    return PplRows(ids=ids, info=info)


def _split_head(model: torch.nn.Module) -> tuple[Callable | None, torch.nn.Module | None, float | None]:
    """(backbone, head, softcap) when the model's logits are head(backbone(x)) [soft-capped]; else Nones."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in _PLAIN_HEAD_TYPES or not hasattr(model, "get_decoder"):
        return None, None, None
    backbone, head = model.get_decoder(), model.get_output_embeddings()
    if backbone is None or head is None:
        return None, None, None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return backbone, head, getattr(text_config, "final_logit_softcapping", None)


def _nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-prediction cross-entropy of [B, L, V] logits, as [B*L, V] rows (the papers' `reshape(-1, V)`): with the
    vocabulary last and contiguous. The [B, V, L] layout sums a large vocabulary less exactly (SmolLM2's 49,152 words:
    a 2.6e-5 mean-NLL bias against float64, 1.3e-4 of perplexity; this layout: 3e-7)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           reduction="none").view(targets.shape)


def token_nll(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Per-prediction NLL [B, L-1] (float32) of next-token prediction over fully-real token rows."""
    targets = ids[:, 1:]
    backbone, head, softcap = _split_head(model)
    if backbone is None:
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1]
        return _nll(logits.float(), targets)
    hidden = backbone(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]
    batch, length = targets.shape
    vocab = head.weight.shape[0]
    step = max(1, _LOGIT_BYTES_PER_SLICE // (4 * vocab * batch))
    out = torch.empty(batch, length, dtype=torch.float32, device=ids.device)
    for start in range(0, length, step):
        logits = head(hidden[:, start:start + step]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        out[:, start:start + step] = _nll(logits, targets[:, start:start + step])
    return out


@torch.inference_mode()
def evaluate_perplexity(model: torch.nn.Module, rows: PplRows, *, batch_size: int | str = AUTO,
                        progress: Callable[[int, int], None] | None = None) -> PerplexityResult:
    """PPL, its delta-method SE and throughput of `model` on `rows`; `progress(done_rows, total_rows)`.

    `batch_size`: rows per forward, or "auto" to size it to the device (`batching`); a batch that runs out of
    memory is redone at half the size. Rows are full-length, so the batch size changes no loss beyond rounding.
    """
    ids = rows.ids
    n, length = ids.shape
    device = input_device(model)
    record = _ppl_batch(model, length, n, batch_size)
    losses = torch.empty(n, length - 1, dtype=torch.float32)
    done = 0

    def work(chunk: list[int]) -> None:
        nonlocal done
        part = slice(chunk[0], chunk[-1] + 1)
        losses[part] = token_nll(model, ids[part].to(device)).cpu()
        done += len(chunk)
        if progress is not None:
            progress(done, n)

    start = time.perf_counter()
    with PeakMemory(device) as peak:
        run_chunks(range(n), record.start, record, work, device)
    wall = time.perf_counter() - start
    flat = losses.double().flatten()
    if not torch.isfinite(flat).all():
        raise PerplexityDataError("the model produced non-finite losses; perplexity is undefined")
    mean = float(flat.mean())
    std = float(flat.std()) if flat.numel() > 1 else 0.0
    ppl = math.exp(mean)
    return PerplexityResult(
        ppl=ppl, se=ppl * std / math.sqrt(flat.numel()), mean_nll=mean, nll_std=std, predictions=flat.numel(),
        tokens=n * length, rows=n, seq_len=length, batch_size=record.final, token_hash=token_hash(ids),
        tokens_per_s=n * length / wall if wall > 0 else float("inf"), wall_s=wall,
        dtype=str(next(model.parameters()).dtype).removeprefix("torch."), data=rows.info,
        batching=asdict(record), peak_gpu_bytes=peak.bytes,
    )


def _ppl_batch(model: torch.nn.Module, seq_len: int, rows: int, batch_size: int | str) -> BatchRecord:
    size = parse_batch_size(batch_size)
    if size != AUTO:
        return BatchRecord(requested=str(size), start=int(size), how="given")
    per_row = ppl_row_bytes(model, seq_len=seq_len, dtype_bytes=next(model.parameters()).element_size())
    start, how = auto_batch_size(model, per_item_bytes=per_row, items=rows, kind="ppl")
    return BatchRecord(requested=AUTO, start=start, how=how)
