"""Perplexity rows and evaluation (protocol §4): tiny models, stories260K and SmolLM2 on the Tulu sample."""

import copy
import functools
import json
import math
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures.measure_models import (
    NO_SYSTEM_TEMPLATE,
    SIMPLE_TEMPLATE,
    TULU,
    needs_smollm2,
    needs_stories,
    needs_tulu,
    smollm2,
    stories,
)
from tiny_models import CONFIGS, build_model, tiny_tokenizer

from publisher.errors import PublishPrunedError
from publisher.measure.errors import ChatTemplateError, PerplexityDataError
from publisher.measure.perplexity import (
    PplSource,
    build_ppl_rows,
    evaluate_perplexity,
    permutation,
    ppl_source,
    token_hash,
    token_nll,
)


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _words(n, offset=0):
    return " ".join(f"w{(offset + i) % 120}" for i in range(n))


@pytest.fixture
def tiny_text(tmp_path):
    """40 plain-text rows of 30 words each (30 tokens for the word-level tiny tokenizer)."""
    return _write_jsonl(tmp_path / "text.jsonl", [{"text": _words(30, 7 * i)} for i in range(40)])


# ---------------------------------------------------------------- rows


def test_rows_are_a_seeded_permutation_cut_into_n_by_l(tiny_text):
    tokenizer = tiny_tokenizer()
    rows = build_ppl_rows(tokenizer, ppl_source(tiny_text), n_rows=4, seq_len=50)
    assert rows.ids.shape == (4, 50) and rows.ids.dtype == torch.long
    order = permutation(40, 123)
    expected = [t for i in order[:7] for t in tokenizer(_words(30, 7 * int(i)))["input_ids"]][:200]
    assert rows.ids.flatten().tolist() == expected
    assert rows.info.rows_read == 7 and rows.info.tokens_read == 210
    assert rows.info.rendering == {"text": 7}
    assert rows.info.seed == 123 and rows.info.source.startswith("jsonl:") and len(rows.info.source_sha256) == 64
    again = build_ppl_rows(tokenizer, ppl_source(tiny_text), n_rows=4, seq_len=50)
    other = build_ppl_rows(tokenizer, ppl_source(tiny_text), n_rows=4, seq_len=50, seed=7)
    assert again.info.token_hash == rows.info.token_hash != other.info.token_hash


@pytest.mark.parametrize("n", [50, 939_343])  # 939,343: the Tulu-3 SFT mixture's train split
def test_permutation_is_the_one_mlx_lm_draws_after_the_studys_seed(n):
    # The study: np.random.seed(123), then mlx_lm.perplexity.load_data, which calls np.random.permutation(n).
    state = np.random.get_state()
    try:
        np.random.seed(123)
        studys = np.random.permutation(n)
    finally:
        np.random.set_state(state)
    assert permutation(n, 123)[:1000].tolist() == studys[:1000].tolist()
    assert permutation(n, 123).tolist() == studys.tolist()


def test_rows_equal_mlx_lm_load_data_on_the_same_conversations(tmp_path, monkeypatch):
    """The very token rows mlx-lm builds for the study (its ChatDataset over the same rows, seed 123)."""
    mlx_perplexity = pytest.importorskip("mlx_lm.perplexity", reason="mlx-lm is not installed")
    from mlx_lm.tuner.datasets import ChatDataset

    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = SIMPLE_TEMPLATE
    rows = [{"messages": [{"role": "user", "content": _words(5 + i % 9, i)},
                          {"role": "assistant", "content": _words(3 + i % 4, 3 * i)}]} for i in range(60)]
    # mlx-lm reads the Hub here; hand its loader the same rows instead (its own dataset class renders them)
    monkeypatch.setattr(mlx_perplexity, "load_dataset", lambda args, tok: (ChatDataset(rows, tok), None, None))
    np.random.seed(123)
    theirs = np.array(mlx_perplexity.load_data(tokenizer, "allenai/tulu-3-sft-mixture", 6, 40))
    ours = build_ppl_rows(tokenizer, ppl_source(_write_jsonl(tmp_path / "chat.jsonl", rows)), n_rows=6, seq_len=40)
    assert ours.ids.tolist() == theirs.tolist()


def test_too_few_tokens_is_a_clear_error_with_the_count(tiny_text):
    with pytest.raises(PerplexityDataError, match=r"only 1,200 tokens in all 40 rows.*4 x 512 = 2,048") as err:
        build_ppl_rows(tiny_tokenizer(), ppl_source(tiny_text), n_rows=4, seq_len=512)
    assert isinstance(err.value, PublishPrunedError)


def test_bad_data_files_are_clear_errors(tmp_path):
    with pytest.raises(PerplexityDataError, match="does not exist"):
        ppl_source(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "w1"}\n{"nothing": 1}\n')
    with pytest.raises(PerplexityDataError, match=r"bad.jsonl:2 has neither"):
        build_ppl_rows(tiny_tokenizer(), ppl_source(bad), n_rows=1, seq_len=2)
    assert ppl_source(None) == PplSource("hub", "allenai/tulu-3-sft-mixture", "train")


def test_messages_need_a_chat_template_unless_the_plain_fallback_is_allowed(tmp_path):
    data = _write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "user", "content": _words(20, i)}, {"role": "assistant", "content": _words(20)}]}
        for i in range(10)])
    tokenizer = tiny_tokenizer()
    with pytest.raises(ChatTemplateError, match="no chat template"):
        build_ppl_rows(tokenizer, ppl_source(data), n_rows=2, seq_len=40)
    fallback = build_ppl_rows(tokenizer, ppl_source(data), n_rows=2, seq_len=40, plain_fallback=True)
    assert fallback.info.rendering == {"plain_fallback": 2}
    tokenizer.chat_template = SIMPLE_TEMPLATE
    templated = build_ppl_rows(tokenizer, ppl_source(data), n_rows=2, seq_len=40)
    assert templated.info.rendering == {"chat_template": 2}


def test_system_turns_merge_into_the_first_user_turn_where_the_template_rejects_them(tmp_path):
    data = _write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "w1 w2"}, {"role": "user", "content": "w3"},
                      {"role": "assistant", "content": "w4"}]}])
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = NO_SYSTEM_TEMPLATE
    rows = build_ppl_rows(tokenizer, ppl_source(data), n_rows=1, seq_len=4)
    assert rows.info.rendering == {"chat_template_merged_system": 1}
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "w1 w2\n\nw3"},
                                              {"role": "assistant", "content": "w4"}], tokenize=False)
    assert rows.ids[0].tolist() == tokenizer(rendered)["input_ids"][:4]


# ---------------------------------------------------------------- evaluation


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_sliced_head_loss_equals_the_full_logits_loss(arch, monkeypatch):
    # gemma2 soft-caps its final logits: the sliced path must apply the same cap.
    model = build_model(arch)
    ids = torch.randint(0, 120, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits = model(input_ids=ids).logits
        reference = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
        monkeypatch.setattr("publisher.measure.perplexity._LOGIT_BYTES_PER_SLICE", 3 * 128 * 4 * 7)  # 7-token slices
        sliced = token_nll(model, ids)
    assert sliced.shape == (3, 39)
    assert torch.allclose(sliced, reference, atol=1e-5)


def test_perplexity_and_its_delta_method_standard_error(tiny_text):
    model = build_model("llama")
    rows = build_ppl_rows(tiny_tokenizer(), ppl_source(tiny_text), n_rows=5, seq_len=32)
    result = evaluate_perplexity(model, rows, batch_size=2)
    with torch.inference_mode():
        losses = torch.cat([token_nll(model, rows.ids[i:i + 1]) for i in range(5)]).double().flatten()
    assert result.predictions == 5 * 31 and result.tokens == 5 * 32
    assert result.mean_nll == pytest.approx(float(losses.mean()), rel=1e-6)
    assert result.ppl == pytest.approx(math.exp(float(losses.mean())), rel=1e-6)
    assert result.se == pytest.approx(result.ppl * float(losses.std()) / math.sqrt(155), rel=1e-5)
    assert result.token_hash == rows.info.token_hash == token_hash(rows.ids)
    assert result.tokens_per_s > 0 and result.data is rows.info
    assert json.loads(json.dumps(asdict(result)))["data"]["token_hash"] == rows.info.token_hash
    # a random model over 128 ids: perplexity near the vocabulary size
    assert 64 < result.ppl < 256


@needs_stories
@needs_tulu
def test_stories260k_on_tulu_text_and_on_templated_messages(tmp_path):
    model, tokenizer = stories()
    tulu = [json.loads(line) for line in TULU.read_text().splitlines()]
    text = _write_jsonl(tmp_path / "tulu_text.jsonl",
                        [{"text": "\n\n".join(m["content"] for m in row["messages"])} for row in tulu])
    plain = build_ppl_rows(tokenizer, ppl_source(text), n_rows=16, seq_len=256)
    dense = evaluate_perplexity(model, plain)
    tokenizer.chat_template = SIMPLE_TEMPLATE
    chat = build_ppl_rows(tokenizer, ppl_source(TULU), n_rows=16, seq_len=256)
    templated = evaluate_perplexity(model, chat)
    story = _write_jsonl(tmp_path / "story.jsonl", [{"text": line} for line in STORY_LINES * 6])
    in_domain = evaluate_perplexity(model, build_ppl_rows(tokenizer, ppl_source(story), n_rows=4, seq_len=128))
    print(f"\nstories260K 16x256 on Tulu text: PPL {dense.ppl:.0f} ± {dense.se:.0f}; templated Tulu messages: "
          f"{templated.ppl:.0f} ± {templated.se:.0f}; on short stories 4x128: {in_domain.ppl:.2f}")
    assert chat.info.rendering["chat_template"] == chat.info.rows_read
    # A TinyStories model is lost on code and chat (measured on the rows in the study's order: ~200 on plain text,
    # ~1,700 templated; on other rows up to ~1,700 both ways) and at home on story text.
    assert in_domain.ppl < 20
    for result in (dense, templated):
        assert 10 * in_domain.ppl < result.ppl < 10_000 and 0 < result.se < result.ppl * 0.5
    # the same rows for a pruned copy: identical hash, and pruning hurts (measured: 205 → 268 at 50 % random on the
    # rows in the study's order; ~1,700 → ~38,000 on others)
    from publisher.prune import PruneRequest, prune_model

    pruned = copy.deepcopy(model)
    prune_model(pruned, PruneRequest(method="random", sparsity=0.5), progress=False)
    after = evaluate_perplexity(pruned, plain)
    assert after.token_hash == dense.token_hash and after.data.token_hash == plain.info.token_hash
    assert after.ppl > 1.2 * dense.ppl


STORY_LINES = [
    "Once upon a time, there was a little dog named Max. Max liked to run in the park with his friend Sam.",
    "One day, Sam found a big red ball under a tree. He was very happy and showed it to his mom.",
    "The sun was warm and the birds sang. Lily and her brother played with their toys in the garden.",
    "Tom wanted to help his dad bake a cake. They mixed the flour and the eggs in a big bowl.",
    "The little cat was sad because it was raining. Then the rain stopped and the cat went outside to play.",
]


@pytest.mark.slow
@needs_smollm2
@needs_tulu
def test_smollm2_dense_perplexity_on_the_tulu_sample():
    model, tokenizer = smollm2()
    rows = build_ppl_rows(tokenizer, ppl_source(TULU), n_rows=16, seq_len=256)
    result = evaluate_perplexity(model, rows)
    print(f"\nSmolLM2-135M-Instruct (Q4_1 → fp32), Tulu sample 16x256: PPL {result.ppl:.2f} ± {result.se:.2f}, "
          f"{result.tokens_per_s:.0f} tokens/s, rows {result.token_hash[:12]}")
    assert rows.info.rendering.get("chat_template") == rows.info.rows_read  # ChatML accepts system turns
    assert 5 < result.ppl < 60  # protocol.md: "about 21" on Tulu chat text
    assert result.se < result.ppl * 0.1


def test_hub_source_uses_the_same_permutation_and_records_the_revision(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets", reason="the Hub loaders need the optional `datasets` package")
    import huggingface_hub

    class Info:
        sha = "feedface" * 5

    class Api:
        def dataset_info(self, name, revision=None):
            return Info()

    rows = [{"text": _words(30, 7 * i)} for i in range(40)]
    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split, revision: datasets.Dataset.from_list(rows))
    hub = build_ppl_rows(tiny_tokenizer(), ppl_source(None), n_rows=4, seq_len=50)
    local = build_ppl_rows(tiny_tokenizer(), ppl_source(_write_jsonl(tmp_path / "t.jsonl", rows)), n_rows=4,
                           seq_len=50)
    assert hub.info.token_hash == local.info.token_hash
    assert hub.info.source == f"hub:allenai/tulu-3-sft-mixture@{Info.sha}" and hub.info.split == "train"


def test_hub_source_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub

    class Offline:
        def dataset_info(self, name, revision=None):
            raise OSError("network is unreachable")

    monkeypatch.setattr(huggingface_hub, "HfApi", Offline)
    with pytest.raises(PerplexityDataError, match="cannot load the perplexity dataset.*--ppl-data"):
        build_ppl_rows(tiny_tokenizer(), ppl_source(None), n_rows=1, seq_len=2)


def test_out_of_memory_halves_the_perplexity_batch_and_keeps_every_loss(tiny_text):
    model = build_model("llama")
    rows = build_ppl_rows(tiny_tokenizer(), ppl_source(tiny_text), n_rows=9, seq_len=20)
    reference = evaluate_perplexity(model, rows, batch_size=1)
    backbone = model.model.forward  # the sliced head runs the backbone, then the head slice by slice

    @functools.wraps(backbone)
    def limited(*args, **kwargs):  # a memory limit of 3 rows
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[0] > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return backbone(*args, **kwargs)

    model.model.forward = limited
    result = evaluate_perplexity(model, rows, batch_size=8)
    assert result.batching["backoffs"] == [8, 4] and result.batch_size == 2
    assert result.predictions == reference.predictions == 9 * 19
    assert result.mean_nll == pytest.approx(reference.mean_nll, rel=1e-6)
