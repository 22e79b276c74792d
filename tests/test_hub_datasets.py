"""The three Hub dataset loaders, run through the real `datasets` library against the local Hub emulator.

The emulator serves small synthetic dataset repos laid out like the real ones:

* `allenai/c4`: gzipped JSON-lines shards `en/c4-train.0000N-of-01024.json.gz` (+ a validation shard and an
  `en.noblocklist` config that must not be read), selected by the README's YAML `configs:` as on the Hub;
* `Elfsong/BBQ`: one parquet file per category split, `data/<split>-00000-of-00001.parquet`, split names
  lower-case (`age`, `gender_identity`, ...), mapped by `configs:` in the README as `push_to_hub` writes them;
* `allenai/tulu-3-sft-mixture`: parquet shards `data/train-0000N-of-0000M.parquet` of `id`/`messages`/`source`
  rows, README `configs:` with `path: data/train-*`.

Each loader runs in a subprocess: `huggingface_hub` and `datasets` read `HF_ENDPOINT`, `HF_HOME`,
`HF_DATASETS_CACHE` and `HF_HUB_OFFLINE` once, at import, and the loaders call `HfApi()` / `load_dataset` without
an endpoint, so the faithful way to point them at the emulator is the environment of a fresh interpreter. Patching
the libraries' module constants in this process would test the patching (`datasets` keeps its own copies of the
endpoint and cache paths) and would leave a configured `datasets` behind for the other tests. The child gets none
of the inherited `HF_*` variables (no `HF_TOKEN` sent to the emulator, no `HF_HUB_OFFLINE=1` from an offline
sandbox, no shared cache): only the endpoint, Xet off, and a home and datasets cache under `tmp_path`.
Nothing is mocked: the real client uploads the repos, the real `datasets` resolves configs and downloads them.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures.measure_models import FIXTURES, SIMPLE_TEMPLATE

from publisher.emulator import HubEmulator

pytest.importorskip("datasets", reason="the Hub loaders need the optional `datasets` package")
pa = pytest.importorskip("pyarrow", reason="the synthetic BBQ and Tulu repos are parquet files")
pq = pytest.importorskip("pyarrow.parquet")

TESTS = Path(__file__).parent
REPO_ROOT = TESTS.parent
# Dataset owners on the emulator: the loaders use the real ids, so the repos live under the real namespaces.
TOKENS = {"hf_allenai_write": ("allenai", "write"), "hf_elfsong_write": ("Elfsong", "write")}
OWNER_TOKEN = {"allenai": "hf_allenai_write", "Elfsong": "hf_elfsong_write"}
CHILD_TIMEOUT_S = 300


# ---------------------------------------------------------------- serving

@pytest.fixture
def dataset_hub(tmp_path: Path):
    """An emulator with write tokens for `allenai` and `Elfsong` (the `hub` fixture only knows `test-user`)."""
    with HubEmulator(root=tmp_path / "hub", tokens=TOKENS, port=0) as emulator:
        yield emulator


def publish_dataset(hub: HubEmulator, repo_id: str, folder: Path, message: str = "Upload dataset") -> str:
    """Create the dataset repo if needed, upload `folder` with the real client; the commit sha."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=OWNER_TOKEN[repo_id.split("/")[0]])
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
    return api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=folder, commit_message=message).oid


def run_loader(hub: HubEmulator, tmp_path: Path, loader: str, *, child_env: dict[str, str] | None = None,
               **kwargs: Any) -> Any:
    """Run `_child_<loader>(**kwargs)` in a fresh interpreter pointed at the emulator (plus `child_env`); its
    JSON result."""
    home = tmp_path / "hf-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env |= {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",  # the emulator serves LFS, not Xet (docs/hub-protocol.md §0)
        "HF_HOME": str(home),  # no token file, no shared cache: anonymous reads of public repos
        "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(TESTS)]),
    } | (child_env or {})
    out = tmp_path / f"{loader}-result.json"
    script = ("import json, sys, test_hub_datasets as t; "
              f"json.dump(t._child_{loader}(**json.loads(sys.argv[1])), open(sys.argv[2], 'w'))")
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(kwargs), str(out)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == 0, f"{loader} failed:\n{proc.stderr[-6000:]}"
    return json.loads(out.read_text())


# ---------------------------------------------------------------- in the child interpreter

def _child_calibration(samples: int, seq_len: int, seed: int, runs: list[list[Any]]) -> list[dict[str, Any]]:
    """`load_calibration` on allenai/c4 `en` (streamed) for each (revision, files served at it); and, as the
    reference, the same sampling over those files read from local disk."""
    import datasets
    import numpy as np
    from tiny_models import tiny_tokenizer

    from publisher.prune.calibration import SHUFFLE_BUFFER, CalibrationSpec, load_calibration, sample_windows
    from publisher.prune.calibration import token_sha256 as calib_sha

    tokenizer = tiny_tokenizer()
    results = []
    for revision, reference_files in runs:
        spec = CalibrationSpec(None, samples=samples, seq_len=seq_len, seed=seed, revision=revision)
        calib = load_calibration(tokenizer, spec)
        local = datasets.load_dataset("json", data_files={"train": reference_files}, split="train", streaming=True)
        local = local.shuffle(seed=seed, buffer_size=SHUFFLE_BUFFER)
        ids, scanned = sample_windows((row["text"] for row in local), tokenizer, samples, seq_len,
                                      np.random.default_rng(seed))
        results.append({"ids": calib.input_ids.tolist(), "record": vars(calib.record),
                        "reference_sha256": calib_sha(ids), "reference_scanned": scanned})
    return results


def _child_wanda_run(model_dir: str, out_dirs: list[str], revisions: list[str | None]) -> list[dict[str, Any]]:
    """The whole CLI (`--method wanda`, C4 by default) at each `--calibration-revision`: the recorded calibration,
    and the stages the run reused (`skipped`)."""
    from click.testing import CliRunner

    from publisher.cli import main
    from publisher.results import read_results

    found = []
    for out, revision in zip(out_dirs, revisions, strict=True):
        args = ["--model", model_dir, "--sparsity", "0.5", "--method", "wanda", "--dry-run", "--json",
                "--skip-eval", "ppl,srs,latency", "--output-dir", out, "--base-model-id", "test-org/tiny",
                "--calibration-samples", "4", "--calibration-seq-len", "24"]
        result = CliRunner().invoke(main, args + (["--calibration-revision", revision] if revision else []))
        assert result.exit_code == 0, result.output
        calibration = read_results(Path(out) / "results.json").pruning.calibration
        found.append({**calibration, "skipped": json.loads(result.stdout)["skipped_stages"]})
    return found


def _child_release(manifest: str, output_root: str, token_file: str, runs: int) -> list[str]:
    """`publish-pruned release MANIFEST` against the emulator, `runs` times: the summary's last line each time."""
    import os

    from click.testing import CliRunner

    from publisher.cli import main

    lines = []
    for _ in range(runs):
        result = CliRunner().invoke(main, ["release", manifest, "--output-root", output_root, "--token-file",
                                           token_file, "--hub-endpoint", os.environ["HF_ENDPOINT"]])
        assert result.exit_code == 0, result.output
        lines.append(result.stdout.strip().splitlines()[-1])
    return lines


def _child_measured_run(model_dir: str, out: str, cache: str) -> dict[str, Any]:
    """The main command measuring perplexity (Tulu-3) and SRS (BBQ) from the Hub: the stages it reused and the
    commits its figures recorded."""
    from click.testing import CliRunner

    from publisher.cli import main
    from publisher.results import read_results

    result = CliRunner().invoke(main, [
        "--model", model_dir, "--sparsity", "0.5", "--dry-run", "--json", "--output-dir", out, "--cache-dir", cache,
        "--base-model-id", "test-org/tiny-chat", "--skip-eval", "latency", "--ppl-samples", "4", "--ppl-seq-len",
        "24", "--bbq-categories", "Age", "--bbq-limit", "2"])
    assert result.exit_code == 0, result.output
    metrics = read_results(Path(out) / "results.json").metrics
    return {"skipped": json.loads(result.stdout)["skipped_stages"], "bbq": metrics["srs"]["data"]["source"],
            "ppl": metrics["perplexity"]["pruned"]["data"]["revision"]}


def _child_bbq(categories: Any, conditions: list[str], revisions: list[str | None]) -> list[dict[str, Any]]:
    """`load_bbq` from Elfsong/BBQ at each revision (None: main), with the split names `datasets` sees."""
    from dataclasses import asdict

    import datasets

    from publisher.measure.bbq import bbq_source, load_bbq

    results = []
    for revision in revisions:
        bbq = load_bbq(bbq_source(None, revision=revision), categories=categories, conditions=conditions)
        results.append({"splits": datasets.get_dataset_split_names("Elfsong/BBQ", revision=revision),
                        "items": [asdict(item) for item in bbq.items], "excluded": [asdict(e) for e in bbq.excluded],
                        "source": bbq.source, "categories": bbq.categories, "rows_read": bbq.rows_read,
                        "missing": bbq.missing_default_categories})
    return results


def _child_perplexity(n_rows: int, seq_len: int, local_jsonl: str) -> dict[str, Any]:
    from dataclasses import asdict

    from tiny_models import tiny_tokenizer

    from publisher.measure.perplexity import build_ppl_rows, ppl_source

    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = SIMPLE_TEMPLATE
    hub = build_ppl_rows(tokenizer, ppl_source(None), n_rows=n_rows, seq_len=seq_len)
    local = build_ppl_rows(tokenizer, ppl_source(local_jsonl), n_rows=n_rows, seq_len=seq_len)
    return {"hub": asdict(hub.info), "local": asdict(local.info)}


# ---------------------------------------------------------------- synthetic repos

def _words(start: int, stop: int, n: int, salt: int) -> str:
    """`n` seeded random words of the tiny tokenizer's vocabulary (`w<i>` → id i), all with ids in [start, stop)."""
    rng = random.Random(f"{start}-{salt}")
    return " ".join(f"w{rng.randrange(start, stop)}" for _ in range(n))


C4_README = """---
pretty_name: C4
license: odc-by
configs:
- config_name: en
  data_files:
  - split: train
    path: en/c4-train.*.json.gz
  - split: validation
    path: en/c4-validation.*.json.gz
- config_name: en.noblocklist
  data_files:
  - split: train
    path: en.noblocklist/c4-train.*.json.gz
  - split: validation
    path: en.noblocklist/c4-validation.*.json.gz
---
# C4 (synthetic test copy)
"""
# Token-id ranges: only `en` train may reach the calibration windows.
EN_TRAIN, EN_VALIDATION, NOBLOCKLIST = (0, 60), (60, 90), (90, 120)


def _c4_shard(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)


def _c4_rows(id_range: tuple[int, int], count: int, first: int, length: int = 40) -> list[dict[str, str]]:
    # Lengths vary around seq_len so that some documents are too short and are skipped, as in real C4.
    return [{"text": _words(*id_range, length + (i % 5) * 6 - 12, first + i),
             "timestamp": "2019-04-25T12:57:54Z", "url": f"https://example.com/{first + i}"} for i in range(count)]


def _c4_folder(folder: Path, salt: int) -> Path:
    (folder / "en").mkdir(parents=True)
    (folder / "README.md").write_text(C4_README)
    _c4_shard(folder / "en" / "c4-train.00000-of-01024.json.gz", _c4_rows(EN_TRAIN, 30, salt))
    _c4_shard(folder / "en" / "c4-train.00001-of-01024.json.gz", _c4_rows(EN_TRAIN, 30, salt + 30))
    _c4_shard(folder / "en" / "c4-validation.00000-of-00008.json.gz", _c4_rows(EN_VALIDATION, 20, salt))
    _c4_shard(folder / "en.noblocklist" / "c4-train.00000-of-01024.json.gz", _c4_rows(NOBLOCKLIST, 40, salt))
    return folder


def _contains(haystack: list[int], needle: list[int]) -> bool:
    n = len(needle)
    return any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


def test_calibration_streams_c4_en_train_from_the_hub_at_the_recorded_commit(dataset_hub, tmp_path):
    from tiny_models import tiny_tokenizer

    old_folder, new_folder = _c4_folder(tmp_path / "c4-v1", 0), _c4_folder(tmp_path / "c4-v2", 100)
    old = publish_dataset(dataset_hub, "allenai/c4", old_folder)
    new = publish_dataset(dataset_hub, "allenai/c4", new_folder, "Replace the shards")
    new_shards, old_shards = (sorted(str(p) for p in (f / "en").glob("c4-train.*.json.gz"))
                              for f in (new_folder, old_folder))
    latest, pinned = run_loader(dataset_hub, tmp_path, "calibration", samples=8, seq_len=32, seed=0,
                                runs=[[None, new_shards], [old, old_shards]])

    for result, sha in ((latest, new), (pinned, old)):
        record = result["record"]
        assert record["dataset"] == "allenai/c4" and record["config"] == "en" and record["split"] == "train"
        assert record["revision"] == sha  # the dataset commit, resolved through dataset_info
        assert record["samples"] == 8 and record["seq_len"] == 32 and record["file_sha256"] is None
        # Same tokens as the shards served at that commit, read from disk through the same shuffle and windows.
        assert record["token_sha256"] == result["reference_sha256"]
        assert record["documents_scanned"] == result["reference_scanned"]
    assert latest["record"]["token_sha256"] != pinned["record"]["token_sha256"]

    # Every window is a contiguous run of one served `en` train document, each from a different document.
    tokenizer = tiny_tokenizer()
    documents = []
    for shard in new_shards:
        with gzip.open(shard, "rt") as f:
            documents += [tokenizer(json.loads(line)["text"])["input_ids"] for line in f]
    sources = []
    for window in latest["ids"]:
        assert len(window) == 32 and all(EN_TRAIN[0] <= t < EN_TRAIN[1] for t in window)  # not validation/noblocklist
        matches = [i for i, doc in enumerate(documents) if _contains(doc, window)]
        assert matches, f"window {window[:6]}… is in no served document"
        sources.append(matches[0])
    assert len(set(sources)) == 8
    assert any(s < 30 for s in sources) and any(s >= 30 for s in sources)  # both shards were read

    # Through the emulator, at each recorded commit; `en` train shards only, streamed with Range requests.
    for sha in (new, old):
        fetched = {r.path.split(f"/resolve/{sha}/", 1)[1] for r in dataset_hub.requests
                   if r.method == "GET" and f"/datasets/allenai/c4/resolve/{sha}/" in r.path and r.status == 206}
        assert {"en/c4-train.00000-of-01024.json.gz", "en/c4-train.00001-of-01024.json.gz"} <= fetched
        assert not any("validation" in path or "noblocklist" in path for path in fetched)


def test_a_wanda_run_calibrates_at_the_pinned_dataset_revision(dataset_hub, tmp_path):
    from tiny_models import save_tiny_model

    old = publish_dataset(dataset_hub, "allenai/c4", _c4_folder(tmp_path / "c4-v1", 0))
    new = publish_dataset(dataset_hub, "allenai/c4", _c4_folder(tmp_path / "c4-v2", 100), "Replace the shards")
    model = save_tiny_model("llama", tmp_path / "base")
    outs = [str(tmp_path / name) for name in ("latest", "pinned", "by-branch")]
    latest, pinned, by_branch = run_loader(dataset_hub, tmp_path, "wanda_run", model_dir=str(model), out_dirs=outs,
                                           revisions=[None, old, "main"])
    assert latest["revision"] == new and pinned["revision"] == old and by_branch["revision"] == new
    assert latest["token_sha256"] != pinned["token_sha256"]
    assert by_branch["token_sha256"] == latest["token_sha256"]


def test_an_unpinned_calibration_dataset_that_moved_is_calibrated_again(dataset_hub, tmp_path):
    from huggingface_hub import HfApi
    from tiny_models import save_tiny_model

    old = publish_dataset(dataset_hub, "allenai/c4", _c4_folder(tmp_path / "c4-v1", 0))
    model, out = save_tiny_model("llama", tmp_path / "base"), str(tmp_path / "run")
    first, again = run_loader(dataset_hub, tmp_path, "wanda_run", model_dir=str(model), out_dirs=[out, out],
                              revisions=[None, None])
    assert first["revision"] == again["revision"] == old and "prune" in again["skipped"]  # nothing moved: resumed
    HfApi(endpoint=dataset_hub.url, token=OWNER_TOKEN["allenai"]).upload_file(
        path_or_fileobj=(C4_README + "Edited.\n").encode(), path_in_repo="README.md", repo_id="allenai/c4",
        repo_type="dataset")
    (readme_only,) = run_loader(dataset_hub, tmp_path, "wanda_run", model_dir=str(model), out_dirs=[out],
                                revisions=[None])
    assert "prune" in readme_only["skipped"] and readme_only["revision"] == old  # the same data: kept
    new = publish_dataset(dataset_hub, "allenai/c4", _c4_folder(tmp_path / "c4-v2", 100), "Replace the shards")
    (offline,) = run_loader(dataset_hub, tmp_path, "wanda_run", model_dir=str(model), out_dirs=[out],
                            revisions=[None], child_env={"HF_HUB_OFFLINE": "1"})
    assert "prune" in offline["skipped"]  # the Hub cannot tell: the finished prune is kept
    (moved,) = run_loader(dataset_hub, tmp_path, "wanda_run", model_dir=str(model), out_dirs=[out], revisions=[None])
    assert moved["revision"] == new and "prune" not in moved["skipped"]
    assert moved["token_sha256"] != first["token_sha256"]


def test_release_republishes_a_calibrated_artifact_whose_dataset_moved(dataset_hub, tmp_path):
    from tiny_models import save_tiny_model

    publish_dataset(dataset_hub, "allenai/c4", _c4_folder(tmp_path / "c4-v1", 0))
    model = save_tiny_model("llama", tmp_path / "base")
    manifest = tmp_path / "release.yaml"
    manifest.write_text(json.dumps({
        "models": [{"model": str(model), "base_model_id": "test-org/tiny"}], "methods": ["wanda"],
        "sparsities": [0.5], "defaults": {"calibration_samples": 4, "calibration_seq_len": 24}}))
    (tmp_path / "token").write_text(OWNER_TOKEN["allenai"])
    args = {"manifest": str(manifest), "output_root": str(tmp_path / "runs"), "token_file": str(tmp_path / "token")}
    assert run_loader(dataset_hub, tmp_path, "release", runs=2, **args) == ["release: 1 published",
                                                                            "release: 1 skipped"]
    publish_dataset(dataset_hub, "allenai/c4", _c4_folder(tmp_path / "c4-v2", 100), "Replace the shards")
    assert run_loader(dataset_hub, tmp_path, "release", runs=1, **args) == ["release: 1 published"]


# ---------------------------------------------------------------- BBQ

BBQ_SPLITS = ("age", "gender_identity", "religion", "ses", "nationality")  # no race_ethnicity: a default is missing


def _bbq_rows(split: str, version: str) -> list[dict[str, Any]]:
    """Rows shaped like Elfsong/BBQ's (tests/fixtures/elfsong_bbq_rows.jsonl), both conditions, one excluded."""
    template = json.loads((FIXTURES / "elfsong_bbq_rows.jsonl").read_text().splitlines()[0])
    category = next(c for c in ("Age", "Gender_identity", "Religion", "SES", "Nationality") if c.lower() == split)
    rows = []
    for i in range(6):
        row = json.loads(json.dumps(template))
        condition = "ambig" if i < 4 else "disambig"
        row |= {"example_id": i, "question_index": str(i // 2 + 1), "category": category,
                "question_polarity": "neg" if i % 2 == 0 else "nonneg", "context_condition": condition,
                "context": f"{category} context {i} ({version}).", "question": f"{category} question {i}?",
                "target_label": i % 2, "answer_label": 2 if condition == "ambig" else 1 - i % 2}
        rows.append(row)
    rows[3]["target_label"] = 2  # the unknown answer: excluded with a reason
    return rows


def _bbq_readme() -> str:
    entries = "".join(f"  - split: {s}\n    path: data/{s}-*\n" for s in BBQ_SPLITS)
    return f"---\nlanguage:\n- en\nconfigs:\n- config_name: default\n  data_files:\n{entries}---\n# BBQ (synthetic)\n"


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _bbq_folder(folder: Path, version: str) -> Path:
    for split in BBQ_SPLITS:
        _write_parquet(folder / "data" / f"{split}-00000-of-00001.parquet", _bbq_rows(split, version))
    (folder / "README.md").write_text(_bbq_readme())
    return folder


def test_bbq_loads_one_split_per_category_at_the_pinned_revision(dataset_hub, tmp_path):
    from huggingface_hub import HfApi

    old = publish_dataset(dataset_hub, "Elfsong/BBQ", _bbq_folder(tmp_path / "bbq-v1", "v1"))
    HfApi(endpoint=dataset_hub.url, token=OWNER_TOKEN["Elfsong"]).create_tag(
        "Elfsong/BBQ", tag="v1", revision=old, repo_type="dataset")
    new = publish_dataset(dataset_hub, "Elfsong/BBQ", _bbq_folder(tmp_path / "bbq-v2", "v2"), "Reword contexts")
    result = run_loader(dataset_hub, tmp_path, "bbq", categories=None, conditions=["ambig", "disambig"],
                        revisions=[None, "v1"])

    for loaded, sha, version in zip(result, (new, old), ("v2", "v1"), strict=True):
        assert sorted(loaded["splits"]) == sorted(BBQ_SPLITS)
        assert loaded["source"] == f"hub:Elfsong/BBQ@{sha}"  # a tag is recorded as its commit
        assert loaded["categories"] == ["Age", "Gender_identity", "Religion", "SES"]
        assert loaded["missing"] == ["Race_ethnicity"]
        assert loaded["rows_read"] == 4 * 6
        assert [(e["category"], e["example_id"], e["reason"]) for e in loaded["excluded"]] == [
            (c, 3, "target_label is the unknown answer") for c in loaded["categories"]]
        served = {(row["category"], row["example_id"]): row for split in ("age", "gender_identity", "religion", "ses")
                  for row in _bbq_rows(split, version)}
        assert len(loaded["items"]) == 4 * 5
        for item in loaded["items"]:
            row = served[(item["category"], item["example_id"])]
            assert item["context"] == row["context"] and item["question"] == row["question"]
            assert item["choices"] == [row["ans0"], row["ans1"], row["ans2"]]
            assert (item["target"], item["unknown"], item["label"]) == (row["target_label"], 2, row["answer_label"])
            assert item["condition"] == row["context_condition"] and item["target_rule"] == "hub target_label"


# ---------------------------------------------------------------- Tulu

TULU_README = """---
dataset_info:
  features:
  - name: id
    dtype: string
  - name: messages
    list:
    - name: content
      dtype: string
    - name: role
      dtype: string
  - name: source
    dtype: string
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# Tulu 3 SFT mixture (synthetic)
"""


def _tulu_rows(count: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        messages = [{"content": _words(0, 120, 6 + i % 4, i), "role": "user"},
                    {"content": _words(0, 120, 10 + i % 7, 1000 + i), "role": "assistant"}]
        if i % 3 == 0:
            messages.insert(0, {"content": _words(0, 120, 3, 2000 + i), "role": "system"})
        rows.append({"id": f"synthetic_{i}", "messages": messages, "source": "synthetic"})
    return rows


def test_perplexity_rows_from_tulu_equal_the_same_rows_read_locally(dataset_hub, tmp_path):
    rows = _tulu_rows(30)
    folder = tmp_path / "tulu"
    _write_parquet(folder / "data" / "train-00000-of-00002.parquet", rows[:17])
    _write_parquet(folder / "data" / "train-00001-of-00002.parquet", rows[17:])
    (folder / "README.md").write_text(TULU_README)
    sha = publish_dataset(dataset_hub, "allenai/tulu-3-sft-mixture", folder)
    local = tmp_path / "tulu.jsonl"  # the same rows in the shards' order, as one local file
    local.write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = run_loader(dataset_hub, tmp_path, "perplexity", n_rows=4, seq_len=50, local_jsonl=str(local))

    hub_info, local_info = result["hub"], result["local"]
    assert hub_info["source"] == f"hub:allenai/tulu-3-sft-mixture@{sha}"
    assert hub_info["revision"] == sha and hub_info["split"] == "train"
    # Dataset.shuffle(seed) over the 30 served rows (both shards, in order) is the permutation the local path
    # applies to the same 30 rows: same tokens. One shard missing or reordered would change the permutation.
    assert hub_info["token_hash"] == local_info["token_hash"]
    assert (hub_info["rows_read"], hub_info["tokens_read"]) == (local_info["rows_read"], local_info["tokens_read"])
    assert hub_info["rendering"] == local_info["rendering"] and set(hub_info["rendering"]) == {"chat_template"}
    fetched = {r.path for r in dataset_hub.requests if r.method == "GET" and "/resolve/" in r.path and r.status == 200}
    assert {f"/datasets/allenai/tulu-3-sft-mixture/resolve/{sha}/data/train-0000{i}-of-00002.parquet"
            for i in range(2)} <= fetched


# ---------------------------------------------------------------- measurement data that moves

def test_measurements_on_hub_data_that_moved_are_measured_again(dataset_hub, tmp_path):
    from fixtures.measure_models import tiny_chat_model
    from huggingface_hub import HfApi

    tulu = tmp_path / "tulu"
    _write_parquet(tulu / "data" / "train-00000-of-00001.parquet", _tulu_rows(30))
    (tulu / "README.md").write_text(TULU_README)
    old_tulu = publish_dataset(dataset_hub, "allenai/tulu-3-sft-mixture", tulu)
    old_bbq = publish_dataset(dataset_hub, "Elfsong/BBQ", _bbq_folder(tmp_path / "bbq-v1", "v1"))
    model, tokenizer = tiny_chat_model()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    args = {"model_dir": str(tmp_path / "base"), "out": str(tmp_path / "run"), "cache": str(tmp_path / "cache")}

    def run() -> dict[str, Any]:
        return run_loader(dataset_hub, tmp_path, "measured_run", **args)

    first, again = run(), run()
    assert (first["ppl"], first["bbq"]) == (old_tulu, f"hub:Elfsong/BBQ@{old_bbq}")
    assert "measure" not in first["skipped"] and "measure" in again["skipped"]
    readme_edit = HfApi(endpoint=dataset_hub.url, token=OWNER_TOKEN["allenai"]).upload_file(
        path_or_fileobj=(TULU_README + "Edited.\n").encode(), path_in_repo="README.md",
        repo_id="allenai/tulu-3-sft-mixture", repo_type="dataset").oid
    kept = run()
    assert "measure" in kept["skipped"] and kept["ppl"] == old_tulu  # a README commit: the same data
    new_bbq = publish_dataset(dataset_hub, "Elfsong/BBQ", _bbq_folder(tmp_path / "bbq-v2", "v2"), "Reword contexts")
    moved = run()
    assert "measure" not in moved["skipped"] and "prune" in moved["skipped"]
    assert (moved["ppl"], moved["bbq"]) == (readme_edit, f"hub:Elfsong/BBQ@{new_bbq}")  # both read again, at main
