"""Perplexity presets: the study's Tulu-3 rows, and WikiText-2 and C4 with the pruning papers' protocol.

    >>> preset = PRESETS["wikitext2"]
    >>> seq_len, rule = default_seq_len(model.config)          # max_position_embeddings, capped at 4096
    >>> rows = build_windows(tokenizer, preset, preset_source(preset, "wiki.test.parquet"), seq_len)
    >>> rows.info.windows, rows.info.tokens_dropped
    (68, 1_234)
    >>> evaluate_perplexity(model, rows, batch_size=window_batch(seq_len)).ppl

The papers' protocol is SparseGPT's `datautils.py` and Wanda's `lib/data.py` + `lib/eval.py`: the rows' text
joined (WikiText-2 test: "\\n\\n"; C4 validation shard 0: the first 1,100 documents, " "), tokenized once with the
tokenizer's defaults, (C4: the first 256 x seqlen tokens), cut into `numel // seqlen` non-overlapping windows (the
last partial window dropped); PPL = exp(mean NLL over every next-token prediction of every window). `tulu3` is the
study's own protocol and is built by `perplexity.build_ppl_rows`; it is listed here so one registry names them all.

A preset's data is one file of the Hub dataset (downloaded at the commit `main` resolves to, recorded), or a local
file in the same shape (`--ppl-preset-data wikitext2=PATH`): `.parquet` (the Hub's own file), `.jsonl`, `.json`,
`.json.gz` or `.jsonl.gz` (one `{"text": ...}` per line, C4's format), or `.txt`/`.raw` (WikiText's original
`wiki.test.raw`, each line a row as the Hub dataset was built from it: blank lines become "").
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..hashing import sha256_file
from ..hub_data import dataset_commit
from ..jsonl import json_lines
from .errors import PerplexityDataError
from .perplexity import DEFAULT_DATASET as TULU3_DATASET
from .perplexity import PplRows, token_hash

STUDY_PRESET = "tulu3"
SEQ_LEN_CAP = 4096  # max_position_embeddings above this (Llama-3: 131,072) would not fit one window in memory
FALLBACK_SEQ_LEN = 2048  # SparseGPT's seqlen, for a config that names no max_position_embeddings
STUDY_BATCH_TOKENS = 8 * 512  # the Tulu-3 measurement's batch: preset windows are batched to the same token count


@dataclass(frozen=True)
class Preset:
    """One perplexity protocol: where its text comes from and how it is cut."""

    name: str
    title: str  # as a reader knows it: "WikiText-2"
    follows: str  # which protocol, in a sentence the card prints
    dataset: str  # Hub dataset id
    config: str | None
    split: str
    hub_file: str | None  # the one file of the dataset the reference code reads
    joiner: str = "\n\n"
    max_documents: int | None = None  # C4: the first 1,100 documents
    max_windows: int | None = None  # C4: the first 256 x seqlen tokens
    windowed: bool = True  # False: the study's rows (perplexity.build_ppl_rows)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(STUDY_PRESET, "Tulu-3 SFT mixture",
           "the study's protocol (§4): 256 × 512 tokens of conversations rendered with the model's chat template, "
           "in a seed-123 row order", TULU3_DATASET, None, "train", None, windowed=False),
    Preset("wikitext2", "WikiText-2",
           "SparseGPT's and Wanda's WikiText-2 protocol: the test split's rows joined with \"\\n\\n\", tokenized "
           "once, every full non-overlapping window of seqlen tokens (the last partial window dropped)",
           "Salesforce/wikitext", "wikitext-2-raw-v1", "test", "wikitext-2-raw-v1/test-00000-of-00001.parquet"),
    Preset("c4", "C4",
           "SparseGPT's and Wanda's C4 protocol: the first 1,100 documents of validation shard 0 joined with \" \", "
           "tokenized once, the first 256 × seqlen tokens cut into windows of seqlen",
           "allenai/c4", "en", "validation", "en/c4-validation.00000-of-00008.json.gz", joiner=" ",
           max_documents=1100, max_windows=256),
)}


def parse_presets(text: str | None) -> tuple[str, ...]:
    """'--ppl-preset wikitext2,tulu3' → ('wikitext2', 'tulu3'); unknown names are an error listing the known."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or STUDY_PRESET).split(",") if n.strip()))
    unknown = [n for n in names if n not in PRESETS]
    if unknown or not names:
        raise PerplexityDataError(f"--ppl-preset takes {', '.join(PRESETS)}; unknown: {', '.join(unknown) or '(none)'}")
    return names


@dataclass(frozen=True)
class PresetSource:
    """A preset's text: the Hub dataset's file (kind "hub") or a local file in the same shape (kind "file")."""

    preset: str
    kind: str  # "hub" | "file"
    path: str | None = None  # the local file


def preset_source(preset: Preset, path: str | Path | None) -> PresetSource:
    if path is None:
        return PresetSource(preset.name, "hub")
    if not Path(path).is_file():
        raise PerplexityDataError(f"{preset.name} data {path} does not exist or is not a file")
    return PresetSource(preset.name, "file", str(path))


@dataclass
class PresetRowsInfo:
    """What a preset's windows are and where they came from (serialisable; goes into results.json)."""

    preset: str
    source: str  # "hub:<id>@<sha>" or "file:<path>"
    dataset: str
    config: str | None
    split: str
    file: str  # the file read: the Hub path, or the local file's name
    revision: str | None  # dataset commit (hub)
    source_sha256: str
    documents: int  # rows joined
    characters: int
    tokens: int  # tokens of the joined text (before the protocol's cap and the windowing)
    windows: int
    seq_len: int
    seq_len_rule: str  # why this seqlen: the config's max_position_embeddings, a cap, or --ppl-preset-seq-len
    tokens_dropped: int  # tokens read but in no window (the last partial window; C4: beyond 256 x seqlen)
    window_limit: int | None  # --ppl-preset-windows (a quick run)
    bos_prepended: bool  # the tokenizer's defaults put a BOS token before the text (once, at its start)
    token_hash: str


def default_seq_len(config: Any, requested: int | None = None) -> tuple[int, str]:
    """(seqlen, why): as the reference code, the model's max_position_embeddings, capped at SEQ_LEN_CAP."""
    if requested is not None:
        return requested, f"--ppl-preset-seq-len {requested}"
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    limit = getattr(text_config, "max_position_embeddings", None)
    if not limit:
        return FALLBACK_SEQ_LEN, f"{FALLBACK_SEQ_LEN} (the config names no max_position_embeddings)"
    if limit > SEQ_LEN_CAP:
        return SEQ_LEN_CAP, f"max_position_embeddings {limit:,} capped at {SEQ_LEN_CAP:,} for memory"
    return int(limit), f"max_position_embeddings ({limit:,}), as the reference code"


def window_batch(seq_len: int) -> int:
    """Windows per forward pass: as many as hold the Tulu-3 measurement's 8 x 512 tokens, at least one."""
    return max(1, STUDY_BATCH_TOKENS // seq_len)


def read_documents(path: Path) -> list[str]:
    """The `text` of every row of a local file in the Hub dataset's shape (see the module docstring)."""
    name = path.name.lower()
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise PerplexityDataError(f"reading {path.name} needs pyarrow (pip install 'publish-pruned[data]'); "
                                      "or pass the rows as .jsonl") from None
        table = pq.read_table(path)
        if "text" not in table.column_names:
            raise PerplexityDataError(f"{path} has no 'text' column")
        return [t or "" for t in table.column("text").to_pylist()]
    if name.endswith((".txt", ".raw")):
        # the WikiText builder's rule: a line keeps its "\n"; a blank line is an empty row
        with open(path, encoding="utf-8", newline="") as f:
            return [line if line.strip() else "" for line in f]
    if name.endswith((".jsonl", ".json", ".json.gz", ".jsonl.gz")):
        opener = gzip.open if name.endswith(".gz") else open
        docs = []
        with opener(path, "rt", encoding="utf-8") as f:
            for number, row in json_lines(f, where=str(path), error=PerplexityDataError):
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise PerplexityDataError(f"{path}:{number} has no 'text' string")
                docs.append(row["text"])
        return docs
    raise PerplexityDataError(f"{path.name}: a preset's local data is .parquet, .jsonl, .json(.gz) or .txt/.raw")


def _hub_file(preset: Preset) -> tuple[Path, str]:
    """The preset's file from the Hub at the commit `main` points at now, and that commit."""
    from huggingface_hub import hf_hub_download

    try:
        revision = dataset_commit(preset.dataset, None)
        path = hf_hub_download(preset.dataset, preset.hub_file, repo_type="dataset", revision=revision)
    except Exception as exc:  # network, auth, a moved file: the user must act
        raise PerplexityDataError(f"cannot download {preset.dataset}/{preset.hub_file} for --ppl-preset {preset.name} "
                                  f"({type(exc).__name__}); pass a local file with --ppl-preset-data "
                                  f"{preset.name}=PATH") from None
    return Path(path), revision


def build_windows(tokenizer: Any, preset: Preset, source: PresetSource, seq_len: int, *,
                  seq_len_rule: str = "", max_windows: int | None = None) -> PplRows:
    """The preset's text joined, tokenized once, cut into full windows of `seq_len` (see the module docstring)."""
    if not preset.windowed:
        raise PerplexityDataError(f"preset {preset.name} is not windowed text (perplexity.build_ppl_rows builds it)")
    if seq_len < 2:
        raise PerplexityDataError(f"--ppl-preset-seq-len must be at least 2, got {seq_len}")
    if source.kind == "hub":
        path, revision = _hub_file(preset)
        label, file = f"hub:{preset.dataset}@{revision}", preset.hub_file
    else:
        path, revision = Path(source.path), None
        label, file = f"file:{source.path}", path.name
    docs = read_documents(path)
    if preset.max_documents is not None:
        docs = docs[:preset.max_documents]
    text = preset.joiner.join(docs)
    # the reference's `tokenizer(text, return_tensors="pt")`: the tokenizer's defaults, special tokens included
    ids = [int(i) for i in tokenizer(text, verbose=False)["input_ids"]]
    usable = ids[:preset.max_windows * seq_len] if preset.max_windows is not None else ids
    windows = len(usable) // seq_len
    if max_windows is not None:
        windows = min(windows, max_windows)
    if windows < 1:
        raise PerplexityDataError(f"{preset.name}: {len(ids):,} tokens in {file} make no window of {seq_len:,} tokens "
                                  "(use more text or a shorter --ppl-preset-seq-len)")
    tensor = torch.tensor(usable[:windows * seq_len], dtype=torch.long).view(windows, seq_len)
    bos = getattr(tokenizer, "bos_token_id", None)
    info = PresetRowsInfo(
        preset=preset.name, source=label, dataset=preset.dataset, config=preset.config, split=preset.split, file=file,
        revision=revision, source_sha256=sha256_file(path), documents=len(docs), characters=len(text), tokens=len(ids),
        windows=windows, seq_len=seq_len, seq_len_rule=seq_len_rule or f"{seq_len}",
        tokens_dropped=len(ids) - windows * seq_len, window_limit=max_windows,
        bos_prepended=bool(ids) and bos is not None and ids[0] == bos, token_hash=token_hash(tensor))
    return PplRows(ids=tensor, info=info)
