"""Calibration token ids for Wanda and SparseGPT: C4 windows as in the reference implementations.

    >>> spec = CalibrationSpec("../shared/data/c4/c4-sample.00000-of-00001.json.gz", samples=32, seq_len=512)
    >>> calib = load_calibration(tokenizer, spec)
    >>> calib.input_ids.shape                  # int64, samples × seq_len
    torch.Size([32, 512])
    >>> calib.record.token_sha256              # identifies the exact tokens (goes into results.json)
    'c1f0…'
    >>> load_calibration(tokenizer, CalibrationSpec())   # allenai/c4 `en`, streamed (needs `datasets`, online)

Sources: `None` → `allenai/c4`, config `en`, split `train`, streamed with `datasets` (only online); a local
`.json` / `.jsonl` / `.json.gz` / `.jsonl.gz` file of `{"text": ...}` rows (JSON lines, or one JSON array);
any other string → that Hub dataset (config `en` only for allenai/c4).

Sampling (Wanda's `get_c4` and SparseGPT's `datautils`, without their repeats): documents are visited in a
seeded random order (a local file: `numpy.random.default_rng(seed).permutation`; a streamed dataset:
`IterableDataset.shuffle(seed, buffer_size=10_000)`); each is tokenized with the tokenizer's defaults (BOS
included where the tokenizer adds it, as the references do); a document is used only if it has more than
`seq_len` tokens, and from it one window of `seq_len` consecutive tokens starting at a uniformly random offset
in [0, len - seq_len - 1] (the references' `randint(0, len - seqlen - 1)`), drawn from the same generator.
Each document gives at most one sample (the references draw with replacement and can repeat a document); no
concatenation across documents, so every sample is real contiguous text, as in the papers.

Record: dataset name, config, revision (Hub commit, when known) or the file's sha256, samples, seq_len, seed,
the sampling rule, documents scanned, and the sha256 of the token ids (int64 little-endian, row-major).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SettingsError
from ..hashing import sha256_file
from ..hub_data import dataset_commit, datasets_module, moved_dataset
from ..jsonl import json_lines

DEFAULT_DATASET = "allenai/c4"
DEFAULT_CONFIG = "en"
DEFAULT_SPLIT = "train"
DEFAULT_SAMPLES = 128
DEFAULT_SEQ_LEN = 2048
DEFAULT_SEED = 0  # the Wanda and SparseGPT references' calibration seed
SHUFFLE_BUFFER = 10_000
SAMPLING = (
    "documents in a seeded random order; each with more than seq_len tokens gives one window of seq_len "
    "consecutive tokens at a seeded uniform offset (Wanda/SparseGPT get_c4, without repeats)"
)
LOCAL_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


class CalibrationError(SettingsError):
    """Calibration data missing, unreadable or too short for the requested samples × seq_len."""


@dataclass(frozen=True)
class CalibrationSpec:
    source: str | Path | None = None  # None → allenai/c4 `en`; a local JSON(L)(.gz) file; or a Hub dataset id
    samples: int = DEFAULT_SAMPLES
    seq_len: int = DEFAULT_SEQ_LEN
    seed: int = DEFAULT_SEED
    revision: str | None = None  # Hub datasets only

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise CalibrationError(f"--calibration-samples must be at least 1, got {self.samples}")
        if self.seq_len < 1:
            raise CalibrationError(f"--calibration-seq-len must be at least 1, got {self.seq_len}")


@dataclass
class CalibrationRecord:
    """Where the calibration tokens came from (serialisable; goes into results.json)."""

    dataset: str  # Hub id, or the local file's name
    config: str | None
    split: str | None
    revision: str | None  # Hub commit sha when known
    file_sha256: str | None  # local file only
    samples: int
    seq_len: int
    seed: int
    sampling: str
    documents_scanned: int
    token_sha256: str


@dataclass
class CalibrationSet:
    input_ids: torch.Tensor  # int64, samples × seq_len, on CPU
    record: CalibrationRecord


def load_calibration(tokenizer, spec: CalibrationSpec) -> CalibrationSet:
    """Token ids for calibration, sampled as the module doc says; raises `CalibrationError` when too short."""
    if spec.source is not None and _is_local(spec.source):
        path = Path(spec.source)
        if not path.is_file():
            raise CalibrationError(f"calibration file {path} does not exist")
        texts = read_texts(path)
        order = np.random.default_rng(spec.seed)
        documents = (texts[i] for i in order.permutation(len(texts)))
        ids, scanned = sample_windows(documents, tokenizer, spec.samples, spec.seq_len, order, name=str(path))
        meta = dict(dataset=path.name, config=None, split=None, revision=None, file_sha256=sha256_file(path))
    else:
        name = str(spec.source or DEFAULT_DATASET)
        config = DEFAULT_CONFIG if name == DEFAULT_DATASET else None
        stream, revision = _stream_hub(name, config, spec.revision, spec.seed)
        rng = np.random.default_rng(spec.seed)
        ids, scanned = sample_windows(stream, tokenizer, spec.samples, spec.seq_len, rng, name=name)
        meta = dict(dataset=name, config=config, split=DEFAULT_SPLIT, revision=revision, file_sha256=None)
    record = CalibrationRecord(**meta, samples=spec.samples, seq_len=spec.seq_len, seed=spec.seed,
                               sampling=SAMPLING, documents_scanned=scanned, token_sha256=token_sha256(ids))
    return CalibrationSet(ids, record)


def sample_windows(documents: Iterable[str], tokenizer, samples: int, seq_len: int, rng: np.random.Generator,
                   *, name: str = "calibration data") -> tuple[torch.Tensor, int]:
    """`samples` windows of `seq_len` tokens, one per document with more than `seq_len` tokens, in order.

    Returns (int64 tensor samples × seq_len, documents scanned). Raises `CalibrationError` saying how many
    windows and tokens were found when the documents run out first.
    """
    rows: list[list[int]] = []
    scanned = total = longest = 0
    for text in documents:
        scanned += 1
        ids = tokenizer(text)["input_ids"]
        total += len(ids)
        longest = max(longest, len(ids))
        if len(ids) <= seq_len:
            continue
        start = int(rng.integers(0, len(ids) - seq_len))  # [0, len - seq_len - 1], as randint in the references
        rows.append(list(ids[start : start + seq_len]))
        if len(rows) == samples:
            return torch.tensor(rows, dtype=torch.int64), scanned
    raise CalibrationError(
        f"{name}: only {len(rows)} of the {samples} requested calibration samples found: {len(rows)} of "
        f"{scanned} documents have more than {seq_len} tokens (longest {longest}, {total} tokens in all); "
        "lower --calibration-samples or --calibration-seq-len, or give more data"
    )


def read_texts(path: Path) -> list[str]:
    """The `text` of every row of a JSON-lines file or a JSON array, gzip-compressed or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            content = handle.read()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:  # EOFError, zlib: a cut-off .gz
        raise CalibrationError(f"cannot read calibration file {path}: {error or type(error).__name__}") from None
    rows: Iterator[tuple[int, object]]
    if content.lstrip().startswith("["):
        try:
            rows = enumerate(json.loads(content), 1)
        except json.JSONDecodeError as error:
            raise CalibrationError(f"calibration file {path} is not valid JSON: {error}") from None
    else:
        rows = json_lines(io.StringIO(content), where=f"calibration file {path}", error=CalibrationError)
    texts = []
    for number, row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise CalibrationError(f"calibration file {path}, row {number}: expected an object with a 'text' string")
        texts.append(row["text"])
    if not texts:
        raise CalibrationError(f"calibration file {path} holds no rows")
    return texts


def token_sha256(ids: torch.Tensor) -> str:
    """sha256 of the token ids as int64 little-endian, row-major (shape is in the record beside it)."""
    return hashlib.sha256(ids.to(torch.int64).contiguous().numpy().astype("<i8").tobytes()).hexdigest()


def moved_calibration(source: str | Path | None, revision: str | None, used: str) -> str | None:
    """`hub_data.moved_dataset` for a calibration source: None for a local file (its sha256 is compared instead).

        >>> moved_calibration(None, None, record.revision)   # allenai/c4 main, against what a run recorded
    """
    if source is not None and _is_local(source):
        return None
    return moved_dataset(str(source or DEFAULT_DATASET), revision, used)


def _is_local(source: str | Path) -> bool:
    return isinstance(source, Path) or Path(source).exists() or str(source).endswith(LOCAL_SUFFIXES)


def _stream_hub(name: str, config: str | None, revision: str | None, seed: int) -> tuple[Iterator[str], str | None]:
    """Texts of a Hub dataset's train split, streamed and shuffled (seeded); and its commit sha when known."""
    datasets = datasets_module(CalibrationError, f"streaming calibration text ({name})",
                               "pass a local .json/.jsonl/.json.gz file of {'text': ...} rows")
    try:
        sha = dataset_commit(name, revision)
    except Exception:  # offline, gated: the revision stays what was asked for
        sha = revision
    try:
        stream = datasets.load_dataset(name, config, split=DEFAULT_SPLIT, streaming=True, revision=sha)
        stream = stream.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER)
    except Exception as error:
        raise CalibrationError(f"cannot stream calibration dataset {name}: {error}") from None
    return (row["text"] for row in stream), sha
