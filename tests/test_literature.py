"""The pruning literature's figures: WikiText-2/C4 perplexity with the papers' protocol, lm-eval zero-shot tasks.

Each protocol is checked against an independent implementation written here (the papers' loop, the harness
called directly), the dense cache against mixing, and the whole path through the CLI, the card and model-index.
"""

import gzip
import json
import math
import random

import pytest
import torch
from click.testing import CliRunner
from fixtures.measure_models import STORIES, needs_stories, tiny_chat_model

from publisher.cli import main
from publisher.errors import SettingsError
from publisher.literature import LiteratureRun, LiteratureSettings
from publisher.measure.harness import HarnessSettings
from publisher.measure.ppl_presets import PRESETS, build_windows, preset_source, read_documents
from publisher.results import read_results

TASK = "publish_pruned_tiny_qa"
lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed (make install adds it)")


def wikitext_rows(n: int = 60, seed: int = 0) -> list[str]:
    """Rows in the shape of WikiText's: blank rows, ' = Heading = \\n' rows and paragraph rows ending in '\\n'."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = i % 4
        words = " ".join(f"w{rng.randrange(126)}" for _ in range(rng.randrange(5, 30)))
        rows.append("" if kind in (0, 2) else f" = w{i} = \n" if kind == 1 else f" {words} \n")
    return rows


def newline_tokenizer():
    """The tiny model's 128 ids over words, with " " and "\n" as tokens of their own: the joiner shows in the ids."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(124)} | {" ": 124, "\n": 125, "<unk>": 126, "<eos>": 127}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[ \n]"), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps({"text": r}) + "\n" for r in rows))
    return path


def reference_ppl(model, ids: torch.Tensor, seqlen: int) -> tuple[int, float, float]:
    """SparseGPT's / Wanda's eval loop (lib/eval.py eval_ppl_wikitext), written out again: (windows, mean NLL, PPL)."""
    nsamples = ids.numel() // seqlen
    nlls = []
    with torch.no_grad():
        for i in range(nsamples):
            inputs = ids[:, i * seqlen:(i + 1) * seqlen]
            logits = model(inputs).logits.float()
            loss = torch.nn.CrossEntropyLoss()(logits[:, :-1].reshape(-1, logits.size(-1)), inputs[:, 1:].reshape(-1))
            nlls.append(loss.double() * seqlen)
    total = torch.stack(nlls).sum() / (nsamples * seqlen)
    return nsamples, float(total), math.exp(float(total))


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * abs(b)


def _preset_ppl(model, tokenizer, name, path, seq_len):
    from publisher.measure.perplexity import evaluate_perplexity

    rows = build_windows(tokenizer, PRESETS[name], preset_source(PRESETS[name], path), seq_len)
    return rows, evaluate_perplexity(model, rows, batch_size=3)


def large_vocabulary_model():
    """One small block under SmolLM2's 49,152-word head, scaled to logits of about ±30: where float32 sums over the
    vocabulary show how they are laid out."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    return model


@pytest.mark.parametrize(("seq_len", "vocabulary"), [(32, "tiny"), (45, "tiny"), (64, "large")])
def test_wikitext2_windows_and_nll_equal_the_papers_loop_dropping_the_last_partial_window(tmp_path, seq_len,
                                                                                           vocabulary):
    model = tiny_chat_model()[0] if vocabulary == "tiny" else large_vocabulary_model()
    tokenizer = newline_tokenizer()
    rows_text = wikitext_rows()
    rows, result = _preset_ppl(model, tokenizer, "wikitext2", write_jsonl(tmp_path / "test.jsonl", rows_text), seq_len)
    ids = tokenizer("\n\n".join(rows_text), return_tensors="pt").input_ids
    assert ids.numel() % seq_len, "the text must end in a partial window"
    assert (ids == 125).sum() > (ids == 124).sum() / 10, "newlines must be tokens for the joiner to matter"
    windows, mean_nll, ppl = reference_ppl(model, ids, seq_len)
    assert rows.info.windows == windows == ids.numel() // seq_len
    assert rows.info.tokens_dropped == ids.numel() % seq_len
    assert torch.equal(rows.ids.flatten(), ids[0, :windows * seq_len])
    assert close(result.mean_nll, mean_nll) and close(result.ppl, ppl), (result.ppl, ppl)


@needs_stories
def test_wikitext2_on_a_real_llama_tokenizer_keeps_its_one_bos_as_the_reference(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(STORIES)
    model = AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.float32).eval()
    rows_text = [" = Lily and the ball = \n", "", " Lily had a red ball . She liked to play with it . \n"] * 30
    path = tmp_path / "wiki.test.raw"  # WikiText's original file: one row per line
    path.write_text("".join(r if r else "\n" for r in rows_text))
    assert read_documents(path) == rows_text
    rows, result = _preset_ppl(model, tokenizer, "wikitext2", path, 64)
    ids = tokenizer("\n\n".join(rows_text), return_tensors="pt").input_ids
    windows, mean_nll, ppl = reference_ppl(model, ids, 64)
    assert rows.info.bos_prepended and ids[0, 0] == tokenizer.bos_token_id
    assert rows.info.windows == windows and close(result.ppl, ppl)


def test_c4_joins_the_first_1100_documents_and_keeps_256_windows(tmp_path):
    model, tokenizer = tiny_chat_model()
    rng = random.Random(1)
    docs = [" ".join(f"w{rng.randrange(126)}" for _ in range(3)) for _ in range(1200)]
    path = tmp_path / "c4-validation.00000-of-00008.json.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps({"text": d, "url": "x"}) + "\n" for d in docs)
    rows, result = _preset_ppl(model, tokenizer, "c4", path, 4)
    ids = tokenizer(" ".join(docs[:1100]), return_tensors="pt").input_ids[:, :256 * 4]
    windows, _, ppl = reference_ppl(model, ids, 4)
    assert rows.info.documents == 1100 and rows.info.windows == windows == 256
    assert torch.equal(rows.ids.flatten(), ids[0]) and close(result.ppl, ppl)


def test_the_hub_parquet_shape_reads_as_its_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows_text = wikitext_rows(20)
    pq.write_table(pa.table({"text": rows_text}), tmp_path / "test-00000-of-00001.parquet")
    assert read_documents(tmp_path / "test-00000-of-00001.parquet") == rows_text
    assert read_documents(write_jsonl(tmp_path / "test.jsonl", rows_text)) == rows_text


def sharp_model(seed):
    """A tiny random model whose head is scaled up: its answers depend on the words, not only on their count."""
    model, tokenizer = tiny_chat_model(seed=seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    return model, tokenizer


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """A custom lm-eval task: a YAML over a local JSON file (the harness's include_path), 16 documents."""
    folder = tmp_path_factory.mktemp("tasks")
    rng = random.Random(0)
    with open(folder / "tiny_qa.jsonl", "w") as f:
        for i in range(16):
            f.write(json.dumps({"question": " ".join(f"w{rng.randrange(100)}" for _ in range(6)),
                                "choices": [f"w{rng.randrange(100)} w{rng.randrange(100)} w{rng.randrange(100)}",
                                            f"w{rng.randrange(100)}", f"w{rng.randrange(100)} w{rng.randrange(100)}"],
                                "label": i % 3}) + "\n")
    (folder / "tiny_qa.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {folder / "tiny_qa.jsonl"}
output_type: multiple_choice
validation_split: validation
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: label
doc_to_choice: "{{{{choices}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 1.0
""")
    return folder


def test_lm_eval_figures_are_simple_evaluate_called_directly_on_the_same_model(task_dir, tmp_path):
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    pruned, tokenizer = sharp_model(seed=1)
    dense, _ = sharp_model(seed=2)
    harness = HarnessSettings(tasks=(TASK,), include_path=str(task_dir), batch_size=4)
    run = LiteratureRun(LiteratureSettings(harness=harness), tokenizer, pruned.config)
    run.measure("pruned", pruned, tokenizer)
    assert run.load_dense(tmp_path, "base")
    run.measure("dense", dense, tokenizer)
    record = run.sections()["lm_eval"]["tasks"][TASK]
    manager = TaskManager(include_path=str(task_dir))
    for role, model in (("pruned", pruned), ("dense", dense)):
        direct = lm_eval.simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4),
                                         tasks=[TASK], task_manager=manager)["results"][TASK]
        for metric in ("acc", "acc_norm"):
            assert record["metrics"][metric][role] == {"value": direct[f"{metric},none"],
                                                       "stderr": direct[f"{metric}_stderr,none"]}, (role, metric)
    # the figures tell the metrics and the models apart, so a swapped one would show
    scores = record["metrics"]
    assert scores["acc"]["pruned"]["stderr"] != scores["acc_norm"]["pruned"]["stderr"], scores
    assert any(scores[m]["pruned"] != scores[m]["dense"] for m in scores), scores
    assert record["version"] == 1.0 and record["n_shot"] == 0 and record["docs"] == {"evaluated": 16, "total": 16}
    assert record["dataset"] == {"path": "json", "name": None, "split": "validation", "revision": None, "hub": False,
                                 "files": {"tiny_qa.jsonl": record["dataset"]["files"]["tiny_qa.jsonl"]}}
    assert run.sections()["lm_eval"]["harness"]["version"] == lm_eval.__version__


def test_a_dense_cache_hit_never_mixes_presets_sequence_lengths_or_harness_versions(task_dir, tmp_path, monkeypatch):
    import publisher.literature as literature

    model, tokenizer = tiny_chat_model()
    text = write_jsonl(tmp_path / "text.jsonl", wikitext_rows(80))
    other = write_jsonl(tmp_path / "other.jsonl", wikitext_rows(80, seed=1))
    cache = tmp_path / "cache"

    def reused(presets=(), seq_len=32, harness=None, data=text):
        settings = LiteratureSettings(presets=presets, preset_data=tuple((p, str(data)) for p in presets),
                                      seq_len=seq_len, harness=harness)
        run = LiteratureRun(settings, tokenizer, model.config)
        run.measure("pruned", model, tokenizer)
        if run.load_dense(cache, "base|float32|cpu"):
            run.measure("dense", model, tokenizer)
            run.save_dense(cache, "base|float32|cpu")
        sections = run.sections()
        measured = {**sections.get("perplexity_presets", {}), **sections.get("lm_eval", {}).get("tasks", {})}
        return {name: s["dense_baseline"]["reused"] for name, s in measured.items()}

    assert reused(("wikitext2",)) == {"wikitext2": False}
    assert reused(("wikitext2",)) == {"wikitext2": True}
    assert reused(("wikitext2",), seq_len=48) == {"wikitext2": False}  # another sequence length
    assert reused(("c4", "wikitext2")) == {"c4": False, "wikitext2": True}  # the same file under another preset
    assert reused(("wikitext2",), data=other) == {"wikitext2": False}  # other text
    harness = HarnessSettings(tasks=(TASK,), include_path=str(task_dir), batch_size=4)
    assert reused(harness=harness) == {TASK: False}
    assert reused(harness=harness) == {TASK: True}
    monkeypatch.setattr(literature, "harness_version", lambda: "0.0.1")
    assert reused(harness=harness) == {TASK: False}  # another harness version
    assert reused(harness=HarnessSettings(**{**harness.__dict__, "limit": 4})) == {TASK: False}


@pytest.fixture(scope="module")
def base(tmp_path_factory, task_dir):
    root = tmp_path_factory.mktemp("literature")
    model, tokenizer = tiny_chat_model()
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    write_jsonl(root / "wiki.test.jsonl", wikitext_rows(120))
    rng = random.Random(0)
    with open(root / "tulu.jsonl", "w") as f:
        for _ in range(20):
            f.write(json.dumps({"text": " ".join(f"w{rng.randrange(126)}" for _ in range(60))}) + "\n")
    return root


def publish(base, task_dir, out, sparsity="0.5", *extra):
    args = ["--model", str(base / "base"), "--sparsity", sparsity, "--method", "wanda", "--dry-run", "--json", "-q",
            "--calibration-dataset", str(base / "tulu.jsonl"), "--calibration-samples", "2",
            "--calibration-seq-len", "32", "--output-dir", str(out), "--base-model-id", "test-org/tiny-chat",
            "--cache-dir", str(base / "cache"), "--skip-eval", "srs,latency",
            "--ppl-preset", "wikitext2,tulu3", "--ppl-preset-data", f"wikitext2={base / 'wiki.test.jsonl'}",
            "--ppl-preset-seq-len", "64", "--ppl-data", str(base / "tulu.jsonl"), "--ppl-samples", "4",
            "--ppl-seq-len", "64", "--lm-eval-tasks", TASK, "--lm-eval-include", str(task_dir),
            "--lm-eval-batch-size", "4", *extra]
    return CliRunner().invoke(main, args)


def test_publish_measures_wikitext2_tulu3_and_a_local_task_and_the_card_shows_both(base, task_dir):
    out = base / "run50"
    result = publish(base, task_dir, out)
    assert result.exit_code == 0, result.output
    metrics = read_results(out / "results.json").metrics
    wikitext = metrics["perplexity_presets"]["wikitext2"]
    assert wikitext["pruned"]["data"]["windows"] == wikitext["dense"]["data"]["windows"] > 1
    assert wikitext["pruned"]["ppl"] != wikitext["dense"]["ppl"] and metrics["perplexity"]["pruned"]["rows"] == 4
    task = metrics["lm_eval"]["tasks"][TASK]
    assert set(task["metrics"]) == {"acc", "acc_norm"} and "difference" in task["metrics"]["acc"]
    assert metrics["protocol"]["literature"]["ppl_presets"] == ["wikitext2", "tulu3"]
    saved = (out / "results.json").read_text()
    assert str(base) not in saved and str(task_dir) not in saved  # local inputs are recorded by name

    card = (out / "README.md").read_text()
    results_section = card.split("\n## Results", 1)[1].split("\n## ", 1)[0]
    assert "### Compared with the pruning literature" in results_section
    assert "| WikiText-2 perplexity |" in results_section and "| perplexity |" in results_section
    assert f"| {TASK} acc_norm (0-shot) |" in results_section
    assert "SparseGPT's and Wanda's WikiText-2 protocol" in card and "lm-evaluation-harness" in card
    assert CliRunner().invoke(main, ["card", "lint", str(out / "README.md")]).exit_code == 0
    # local data: the figures stay in the table, out of model-index
    assert "WikiText-2" not in card.split("---\n")[1] and TASK not in card.split("---\n")[1]

    tampered = card.replace(f"| {TASK} acc (0-shot) | {_score(task['metrics']['acc']['pruned'])}",
                            f"| {TASK} acc (0-shot) | 0.9999 ± 0.0001")
    assert tampered != card
    (out / "tampered.md").write_text(tampered)
    result = CliRunner().invoke(main, ["card", "lint", str(out / "tampered.md"), "--results",
                                       str(out / "results.json")])
    assert result.exit_code == 2 and f"{TASK} acc (0-shot): results.json says" in result.stderr


def _score(score):
    return f"{score['value']:.4f} ± {score['stderr']:.4f}"


def test_a_second_sparsity_reuses_every_dense_figure(base, task_dir):
    result = publish(base, task_dir, base / "run30", "0.3")
    assert result.exit_code == 0, result.output
    metrics = read_results(base / "run30" / "results.json").metrics
    assert metrics["dense_baseline"]["reused"] is True
    assert metrics["perplexity_presets"]["wikitext2"]["dense_baseline"]["reused"] is True
    assert metrics["lm_eval"]["tasks"][TASK]["dense_baseline"]["reused"] is True


def test_hub_figures_enter_model_index_and_limited_runs_never_do(base, task_dir, tmp_path):
    import yaml

    from publisher.results import write_results

    out = base / "run50"
    if not (out / "results.json").is_file():
        assert publish(base, task_dir, out).exit_code == 0
    results = read_results(out / "results.json")
    wikitext = results.metrics["perplexity_presets"]["wikitext2"]
    for role in ("pruned", "dense"):  # as if read from the Hub at a commit
        wikitext[role]["data"]["source"] = "hub:Salesforce/wikitext@" + "a" * 40
    task = results.metrics["lm_eval"]["tasks"].pop(TASK)
    task["dataset"] = {"path": "aps/super_glue", "name": "boolq", "split": "validation", "revision": None, "hub": True,
                       "files": {}}
    results.metrics["lm_eval"]["tasks"]["boolq"] = task
    write_results(tmp_path / "results.json", results)
    assert CliRunner().invoke(main, ["card", "render", str(tmp_path / "results.json")]).exit_code == 0
    entries = yaml.safe_load((tmp_path / "README.md").read_text().split("---\n")[1])["model-index"][0]["results"]
    ppl = next(e for e in entries if e["dataset"]["type"] == "Salesforce/wikitext")
    assert ppl["dataset"] == {"name": "WikiText-2", "type": "Salesforce/wikitext", "config": "wikitext-2-raw-v1",
                              "split": "test", "revision": "a" * 40}
    assert ppl["task"]["type"] == "text-generation" and ppl["metrics"][0]["type"] == "perplexity"
    boolq = next(e for e in entries if e["dataset"]["type"] == "aps/super_glue")
    assert boolq["dataset"]["config"] == "boolq" and boolq["dataset"]["split"] == "validation"
    assert boolq["dataset"]["args"] == {"num_few_shot": 0}
    assert {m["type"] for m in boolq["metrics"]} == {"acc", "acc_norm"}
    assert CliRunner().invoke(main, ["card", "lint", str(tmp_path / "README.md")]).exit_code == 0

    task["limit"] = 4  # a quick run: the table keeps it, model-index does not
    results.metrics["limits"]["lm_eval_limit"] = "4 documents per lm-eval task"
    wikitext["pruned"]["data"]["window_limit"] = 2
    write_results(tmp_path / "results.json", results)
    assert CliRunner().invoke(main, ["card", "render", str(tmp_path / "results.json")]).exit_code == 0
    card = (tmp_path / "README.md").read_text()
    entries = (yaml.safe_load(card.split("---\n")[1]).get("model-index") or [{}])[0].get("results") or []
    assert not [e for e in entries if e["dataset"]["type"] in ("aps/super_glue", "Salesforce/wikitext")]
    assert "| boolq acc (0-shot) |" in card and "limited to 4: a quick run" in card
    assert "lm eval limit" not in card.split("## Differences from the study's protocol")[-1].split("\n## ")[0]


@pytest.mark.parametrize(("extra", "message"), [
    (["--ppl-preset", "wikitext3"], "--ppl-preset takes tulu3, wikitext2, c4; unknown: wikitext3"),
    (["--ppl-preset", "tulu3", "--ppl-preset-data", "c4=x.json.gz"], "which --ppl-preset does not measure"),
    (["--ppl-preset-data", "wikitext2"], "--ppl-preset-data takes PRESET=FILE"),
    (["--lm-eval-tasks", "no_such_task_xyz"], "lm-eval knows no task no_such_task_xyz"),
    (["--lm-eval-limit", "0"], "--lm-eval-limit must be at least 1"),
])
def test_bad_literature_options_are_one_line_errors(base, task_dir, tmp_path, extra, message):
    result = publish(base, task_dir, tmp_path / "run", "0.5", *extra)
    assert result.exit_code == 2 and message in result.stderr, result.output


def test_a_missing_harness_is_one_line_naming_the_extra(monkeypatch):
    import importlib.util

    from publisher.evaluation import EvalSettings

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    with pytest.raises(SettingsError, match=r"pip install 'publish-pruned\[lm-eval\]'"):
        EvalSettings(lm_eval_tasks=("boolq",))


def test_eval_measures_presets_and_tasks_of_one_model(base, task_dir):
    result = CliRunner().invoke(main, ["eval", "--model", str(base / "base"), "--skip-eval", "srs",
                                       "--ppl-preset", "wikitext2", "--ppl-preset-data",
                                       f"wikitext2={base / 'wiki.test.jsonl'}", "--ppl-preset-seq-len", "64",
                                       "--lm-eval-tasks", TASK, "--lm-eval-include", str(task_dir)])
    assert result.exit_code == 0, result.output
    assert "perplexity  wikitext2" in result.stdout and f"lm-eval     {TASK}" in result.stdout
    tulu3 = [line for line in result.stdout.splitlines() if line.startswith("perplexity") and "±" in line]
    assert not tulu3  # not asked for
