"""`eval`, `latency` and `bbq prepare` on their own."""

import json

import pytest
from click.testing import CliRunner
from fixtures.measure_models import BBQ_DIR, FIXTURES, needs_bbq, tiny_chat_model

from publisher.cli import main


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat") / "model"
    model, tokenizer = tiny_chat_model()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_eval_measures_one_model_alone(chat_model, tmp_path):
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["eval", "--model", str(chat_model), "--skip-eval", "ppl",
                                       "--bbq-path", str(FIXTURES / "bbq"), "--bbq-categories", "SES",
                                       "--bbq-limit", "3", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "SES" in result.stdout and "overall" in result.stdout
    data = json.loads(out.read_text())
    assert data["perplexity"] is None and data["srs"]["per_category"][0]["category"] == "SES"
    assert data["limits"] == {"bbq_limit_per_category": 3}


def test_latency_prints_a_table(chat_model):
    result = CliRunner().invoke(main, ["latency", "--model", str(chat_model), "--latency-items", "2",
                                       "--latency-warmup", "0"])
    assert result.exit_code == 0, result.output
    assert "Latency (MLX" in result.stdout


def test_latency_bad_input_is_one_line(chat_model):
    result = CliRunner().invoke(main, ["latency", "--model", str(chat_model), "--latency-items", "0"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


@needs_bbq
def test_bbq_prepare_writes_inspectable_items(tmp_path):
    result = CliRunner().invoke(main, ["bbq", "prepare", "--bbq-path", str(BBQ_DIR), "--bbq-categories",
                                       "Age,Religion", "--bbq-limit", "6", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    items = [json.loads(line) for line in (tmp_path / "bbq_items.jsonl").read_text().splitlines()]
    assert len(items) == 12 and {i["category"] for i in items} == {"Age", "Religion"}
    assert all(i["target"] != i["unknown"] and len(i["choices"]) == 3 for i in items)
    assert all(i["condition"] == "ambig" for i in items)


def test_bbq_prepare_missing_category_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(main, ["bbq", "prepare", "--bbq-path", str(FIXTURES / "bbq"), "--bbq-categories",
                                       "Age", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Age" in result.stderr


def test_eval_on_a_device_map_with_a_disk_block_measures_the_same(chat_model, tmp_path):
    """Perplexity and the seeded BBQ replies through accelerate's hooks (one block on disk) = on one device."""
    (tmp_path / "map.json").write_text(json.dumps({"model.embed_tokens": "disk", "model.rotary_emb": "cpu",
                                                   "model.layers.0": "cpu", "model.layers.1": "disk",
                                                   "model.norm": "cpu", "lm_head": "cpu"}))
    with open(tmp_path / "ppl.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps({"text": " ".join(f"w{(i * 5 + j * 11) % 126}" for j in range(40))}) + "\n")
    found = []
    for extra in ([], ["--device-map", str(tmp_path / "map.json")]):
        out = tmp_path / f"metrics{len(found)}.json"
        result = CliRunner().invoke(main, ["eval", "--model", str(chat_model), "--skip-eval", "latency",
                                           "--ppl-data", str(tmp_path / "ppl.jsonl"), "--ppl-samples", "4",
                                           "--ppl-seq-len", "16", "--bbq-path",
                                           str(FIXTURES / "bbq"), "--bbq-categories", "SES", "--bbq-limit", "3",
                                           "--output", str(out), *extra])
        assert result.exit_code == 0, result.output
        found.append(json.loads(out.read_text()))
    plain, mapped = found
    assert mapped["perplexity"]["ppl"] == pytest.approx(plain["perplexity"]["ppl"], rel=1e-5)
    assert mapped["srs"]["per_category"] == plain["srs"]["per_category"]


def test_latency_that_cannot_be_measured_is_an_error_not_a_table(tmp_path, chat_model):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(chat_model, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    result = CliRunner().invoke(main, ["latency", "--model", str(broken), "--latency-items", "1",
                                       "--latency-warmup", "0"])
    assert result.exit_code != 0 and "latency not measured" in result.stderr, result.output
