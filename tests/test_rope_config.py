"""Saved config.json reads the same under transformers 5 and mlx-lm (and spells RoPE the way transformers 4 does).

transformers 5 writes only `rope_parameters`; mlx-lm reads `rope_theta` / `rope_scaling` at the top level and
silently falls back to θ = 10,000. Each test prunes a tiny random model, saves it (streamed and loaded), loads
the saved folder with `mlx_lm.load` and with transformers, and compares the last position's logits on the same
token ids: relative L2 error ‖mlx − torch‖ / ‖torch‖ below 1 %. The weights are drawn with std 0.2 (not the
default 0.02) so that attention is peaked enough for the RoPE base to matter: with θ = 10,000 instead of 1e6 the
Mistral logits move by ~78 %.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import HUB_USER, HUB_WRITE_TOKEN
from huggingface_hub import snapshot_download
from tiny_models import _COMMON, CONFIGS, save_tiny_gemma3_vlm, save_tiny_model, tiny_tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.gemma2 import Gemma2Config
from transformers.models.gemma3 import Gemma3TextConfig
from transformers.models.llama import LlamaConfig
from transformers.models.mistral import MistralConfig
from transformers.models.phi3 import Phi3Config
from transformers.models.qwen2 import Qwen2Config

from publisher.cli import main
from publisher.config_compat import compatible_config, top_level_rope_fields, write_compatible_config
from publisher.model_io import save_checkpoint
from publisher.prune import PruneRequest, prune_model
from publisher.prune.streaming import stream_prune

HAS_MLX = importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None
needs_mlx = pytest.mark.skipif(not HAS_MLX, reason="mlx / mlx-lm not installed (Linux: pip install 'mlx[cpu]' mlx-lm)")

# max_position_embeddings 256 > Phi-3's original 64, and a 96-token prompt: transformers applies LongRoPE's long
# factors beyond the original length (mlx-lm always does), so the prompt exercises them.
_ROPE_COMMON = dict(_COMMON, max_position_embeddings=256, initializer_range=0.2)
ROPE_CONFIGS = {
    "llama": lambda: LlamaConfig(**_ROPE_COMMON),
    "mistral-theta-1e6": lambda: MistralConfig(**_ROPE_COMMON, rope_theta=1e6),
    "phi3-longrope": lambda: Phi3Config(
        **_ROPE_COMMON, original_max_position_embeddings=64, pad_token_id=0, bos_token_id=0, eos_token_id=127,
        rope_scaling={"type": "longrope", "short_factor": [1.0, 1.1, 1.2, 1.3], "long_factor": [1.0, 2.0, 4.0, 8.0]}),
    "gemma2": lambda: Gemma2Config(**_ROPE_COMMON, head_dim=8),
    # per-layer-type RoPE, the global layers' scaled (Gemma-3 4B+: linear, factor 8)
    "gemma3-linear": lambda: Gemma3TextConfig(**_ROPE_COMMON, head_dim=8, sliding_window_pattern=2, rope_theta=1e6,
                                              rope_local_base_freq=1e4, rope_scaling={"rope_type": "linear",
                                                                                      "factor": 8.0}),
    "llama3-scaled": lambda: LlamaConfig(**_ROPE_COMMON, rope_theta=5e5, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}),
    "qwen2-yarn": lambda: Qwen2Config(**_ROPE_COMMON, rope_scaling={"type": "yarn", "factor": 4.0,
                                                                    "original_max_position_embeddings": 64}),
}
PROMPT = np.random.default_rng(0).integers(0, 126, size=96).tolist()
REQUEST = PruneRequest("magnitude", 0.3)


def save_base(config, folder: Path, license_text: str | None = None) -> Path:
    """A random model built from `config` with the tiny tokenizer (and a LICENSE file), as a transformers folder."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    if license_text is not None:
        (folder / "LICENSE").write_text(license_text)
    return folder


def torch_logits(folder: Path) -> np.ndarray:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor([PROMPT])).logits[0, -1].numpy()


def mlx_logits(folder: Path) -> np.ndarray:
    """Through mlx-lm's own `load` from the folder path (never a Hub id): only what config.json says."""
    import mlx.core as mx
    import mlx_lm

    model, _ = mlx_lm.load(str(folder))
    return np.array(model(mx.array([PROMPT]))[0, -1].astype(mx.float32))


def without_type_alias(params: dict) -> dict:
    """`rope_parameters` without a `type` key that repeats `rope_type` (per layer type too)."""
    if all(isinstance(value, dict) for value in params.values()):
        return {key: without_type_alias(value) for key, value in params.items()}
    return {k: v for k, v in params.items() if not (k == "type" and v == params.get("rope_type"))}


def relative_error(mlx: np.ndarray, reference: np.ndarray) -> float:
    return float(np.linalg.norm(mlx - reference) / np.linalg.norm(reference))


def save_pruned(base: Path, out: Path, path: str) -> None:
    if path == "streamed":
        stream_prune(base, out, REQUEST, dtype="auto", shard_size="5GB", progress=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
        prune_model(model, REQUEST, progress=False)
        save_checkpoint(model, AutoTokenizer.from_pretrained(base), out, shard_size="5GB")


@needs_mlx
@pytest.mark.parametrize("path", ["streamed", "loaded"])
@pytest.mark.parametrize("arch", sorted(ROPE_CONFIGS))
def test_saved_checkpoint_runs_the_same_under_mlx_lm_and_transformers(tmp_path, arch, path):
    base = save_base(ROPE_CONFIGS[arch](), tmp_path / "base")
    out = tmp_path / "pruned"
    save_pruned(base, out, path)
    saved = json.loads((out / "config.json").read_text())
    assert "rope_theta" in saved and top_level_rope_fields(saved) == {}  # nothing left for readers to guess
    # transformers 5 reads its own rope_parameters back from the mirrored config (plus, for a scaled RoPE, the
    # legacy alias `type` beside `rope_type`, which it ignores)
    assert without_type_alias(AutoConfig.from_pretrained(out).rope_parameters) == \
        without_type_alias(AutoConfig.from_pretrained(base).rope_parameters)
    reference = torch_logits(out)
    assert relative_error(mlx_logits(out), reference) < 0.01


@pytest.mark.parametrize("arch", [*sorted(CONFIGS), "gemma3-vlm"])
def test_transformers5_reads_the_mirrored_config_as_it_wrote_it(tmp_path, arch):
    folder = save_tiny_gemma3_vlm(tmp_path / arch) if arch == "gemma3-vlm" else save_tiny_model(arch, tmp_path / arch)

    def rope(config):
        return getattr(config, "rope_parameters", None), getattr(getattr(config, "text_config", None),
                                                                 "rope_parameters", None)

    written = rope(AutoConfig.from_pretrained(folder))
    write_compatible_config(folder)
    config = json.loads((folder / "config.json").read_text())
    assert "rope_theta" in config.get("text_config", config)
    assert tuple(p and without_type_alias(p) for p in rope(AutoConfig.from_pretrained(folder))) == written


def test_mirrored_keys_spell_rope_for_transformers4_readers():
    longrope = {"rope_parameters": {"rope_type": "longrope", "type": "longrope", "short_factor": [1.0],
                                    "long_factor": [2.0], "rope_theta": 1e4, "partial_rotary_factor": 0.75,
                                    "original_max_position_embeddings": 4096}}
    out = top_level_rope_fields(longrope)
    assert out["rope_theta"] == 1e4 and out["partial_rotary_factor"] == 0.75
    assert out["original_max_position_embeddings"] == 4096
    # exactly these three keys: transformers 4's Phi3Config refuses any other
    assert out["rope_scaling"] == {"type": "longrope", "short_factor": [1.0], "long_factor": [2.0]}
    llama3 = {"rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0,
                                  "original_max_position_embeddings": 8192}}
    assert "original_max_position_embeddings" not in top_level_rope_fields(llama3)  # transformers 4: in rope_scaling
    gemma3 = {"rope_parameters": {"full_attention": {"rope_theta": 1e6, "rope_type": "linear", "factor": 8.0},
                                  "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}}}
    assert top_level_rope_fields(gemma3) == {
        "rope_theta": 1e6, "rope_local_base_freq": 1e4,
        "rope_scaling": {"factor": 8.0, "type": "linear", "rope_type": "linear"}}
    vlm = compatible_config({"model_type": "gemma3", "text_config": gemma3})  # the text decoder's config too
    assert vlm["text_config"]["rope_theta"] == 1e6 and "rope_theta" not in vlm
    kept = {"rope_theta": 1e4, "rope_parameters": {"rope_theta": 1.0}}
    assert compatible_config(kept) == kept


@pytest.fixture
def no_login_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


@needs_mlx
def test_published_mistral_downloads_and_runs_the_same_under_mlx_lm_and_transformers(hub, tmp_path,
                                                                                       no_login_cache):
    terms = "Tiny Mistral License: pass these terms on with every copy.\n"
    base = save_base(ROPE_CONFIGS["mistral-theta-1e6"](), tmp_path / "base", license_text=terms)
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny mistral\n")
    result = CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(main, [
        "--model", str(base), "--sparsity", "0.3", "--hub-endpoint", hub.url, "--output-dir", str(tmp_path / "run"),
        "--base-model-id", "test-org/tiny-mistral", "--json", "-q"])
    assert result.exit_code == 0, result.output
    repo_id = f"{HUB_USER}/tiny-mistral-magnitude-s30"
    assert json.loads(result.stdout)["repo_id"] == repo_id
    downloaded = Path(snapshot_download(repo_id, endpoint=hub.url, token=HUB_WRITE_TOKEN,
                                        cache_dir=tmp_path / "cache"))
    reference = torch_logits(downloaded)
    assert relative_error(mlx_logits(downloaded), reference) < 0.01
    assert json.loads((downloaded / "config.json").read_text())["rope_theta"] == 1e6
    assert (downloaded / "LICENSE").read_text() == terms
    results = json.loads((downloaded / "results.json").read_text())
    assert results["source"]["license_files"] == ["LICENSE"] and "LICENSE" in results["files"]
    card = (downloaded / "README.md").read_text()  # the card names the repo and passes the terms on
    assert f'AutoModelForCausalLM.from_pretrained("{repo_id}")' in card and f'load("{repo_id}")' in card
    assert "The base's terms are published with it: [LICENSE](LICENSE)" in card
    assert (downloaded / "measurement.md").is_file()
