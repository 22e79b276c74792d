"""Calibration sampling from local files: windows, seeding, records, errors (nothing is downloaded)."""

import gzip
import hashlib
import json
import random

import pytest
import torch
from tiny_models import SHARED, STORIES, build_model, tiny_tokenizer

from publisher.errors import SettingsError
from publisher.prune import PruneRequest, prune_model
from publisher.prune.calibration import CalibrationError, CalibrationSpec, load_calibration

C4 = SHARED / "data" / "c4" / "c4-sample.00000-of-00001.json.gz"


def words(seed: int, count: int) -> str:
    rng = random.Random(seed)  # random words: a window identifies its document
    return " ".join(f"w{rng.randrange(120)}" for _ in range(count))


@pytest.fixture
def docs():
    """Documents of known lengths in the tiny word-level tokenizer (one token per word, no special tokens)."""
    lengths = [5, 40, 12, 60, 33, 8, 70, 21, 45, 50]
    return [words(i * 7, n) for i, n in enumerate(lengths)], lengths


def write(path, rows, kind):
    if kind == "array":
        path.write_text(json.dumps(rows))
    elif kind == "gz":
        with gzip.open(path, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(("kind", "name"), [("lines", "d.jsonl"), ("gz", "d.json.gz"), ("array", "d.json")])
def test_windows_come_from_long_enough_documents_and_are_recorded(tmp_path, docs, kind, name):
    texts, lengths = docs
    path = write(tmp_path / name, [{"text": t, "id": i} for i, t in enumerate(texts)], kind)
    tok = tiny_tokenizer()
    calib = load_calibration(tok, CalibrationSpec(path, samples=4, seq_len=30, seed=3))
    ids = calib.input_ids
    assert ids.shape == (4, 30) and ids.dtype == torch.int64
    doc_ids = [tok(t)["input_ids"] for t in texts]
    used = []
    for row in ids.tolist():  # each row is a contiguous window of one document longer than 30 tokens
        hits = [d for d, full in enumerate(doc_ids)
                if any(full[s : s + 30] == row for s in range(len(full) - 30))]
        assert hits and all(lengths[d] > 30 for d in hits)
        used.append(hits[0])
    assert len(set(used)) == 4  # one window per document, no repeats
    record = calib.record
    assert record.dataset == name and record.revision is None
    assert record.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record.token_sha256 == hashlib.sha256(ids.numpy().astype("<i8").tobytes()).hexdigest()
    assert (record.samples, record.seq_len, record.seed) == (4, 30, 3)
    assert 4 <= record.documents_scanned <= len(texts)


def test_same_seed_same_tokens_other_seed_other_tokens(tmp_path, docs):
    path = write(tmp_path / "d.jsonl", [{"text": t} for t in docs[0]], "lines")
    tok = tiny_tokenizer()
    a, b, c = (load_calibration(tok, CalibrationSpec(path, samples=3, seq_len=20, seed=s)) for s in (0, 0, 1))
    assert torch.equal(a.input_ids, b.input_ids) and a.record.token_sha256 == b.record.token_sha256
    assert a.record.token_sha256 != c.record.token_sha256


def test_too_little_data_says_how_much_was_found(tmp_path, docs):
    path = write(tmp_path / "d.jsonl", [{"text": t} for t in docs[0]], "lines")
    # 4 documents have more than 45 tokens (60, 70, 50; 45 is not more): 3 of 10
    with pytest.raises(CalibrationError, match=r"only 3 of the 5 requested .* 3 of 10 documents have more than 45 "
                                               r"tokens \(longest 70, 344 tokens in all\)"):
        load_calibration(tiny_tokenizer(), CalibrationSpec(path, samples=5, seq_len=45))


def test_bad_specs_and_files_are_settings_errors(tmp_path):
    assert issubclass(CalibrationError, SettingsError)
    with pytest.raises(CalibrationError, match="at least 1, got 0"):
        CalibrationSpec(tmp_path / "x.jsonl", samples=0)
    with pytest.raises(CalibrationError, match="does not exist"):
        load_calibration(tiny_tokenizer(), CalibrationSpec(tmp_path / "missing.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"text": "w1 w2"}\n{"content": "w3"}\n')
    with pytest.raises(CalibrationError, match="row 2: expected an object with a 'text' string"):
        load_calibration(tiny_tokenizer(), CalibrationSpec(tmp_path / "bad.jsonl", samples=1, seq_len=1))
    (tmp_path / "broken.jsonl").write_text('{"text": "w1"}\n{oops\n')
    with pytest.raises(CalibrationError, match="line 2 is not valid JSON"):
        load_calibration(tiny_tokenizer(), CalibrationSpec(tmp_path / "broken.jsonl", samples=1, seq_len=1))


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_calibrated_methods_refuse_to_run_without_calibration(method):
    with pytest.raises(CalibrationError, match=f"method '{method}' needs calibration data"):
        prune_model(build_model("llama"), PruneRequest(method, 0.5), progress=False)
    with pytest.raises(CalibrationError, match="needs calibration data"):
        prune_model(build_model("llama"), PruneRequest(method, 0.5, calibration=torch.zeros(0, 8, dtype=torch.long)),
                    progress=False)


def test_calibration_longer_than_the_model_or_outside_its_vocabulary_is_refused():
    with pytest.raises(CalibrationError, match="exceed the model's max_position_embeddings \\(64\\)"):
        prune_model(build_model("llama"), PruneRequest("wanda", 0.5, calibration=torch.zeros(2, 65, dtype=torch.long)),
                    progress=False)
    with pytest.raises(CalibrationError, match="token id 500 is outside the model's vocabulary \\(128\\)"):
        prune_model(build_model("llama"), PruneRequest("wanda", 0.5, calibration=torch.full((2, 8), 500)),
                    progress=False)


@pytest.mark.skipif(not (C4.is_file() and STORIES.is_dir()), reason="../shared C4 sample or stories260K absent")
def test_real_c4_sample_with_a_real_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(STORIES)
    calib = load_calibration(tok, CalibrationSpec(C4, samples=16, seq_len=512, seed=0))
    assert calib.input_ids.shape == (16, 512)
    assert calib.record.dataset == C4.name and len(calib.record.file_sha256) == 64
    assert int(calib.input_ids.max()) < tok.vocab_size
    with pytest.raises(CalibrationError, match=r"only \d+ of the 1000 requested"):
        load_calibration(tok, CalibrationSpec(C4, samples=1000, seq_len=2048))
