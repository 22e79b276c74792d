"""Tiny random models built from configs, one per supported architecture, saved as transformers folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
from transformers.models.cohere import CohereConfig
from transformers.models.gemma2 import Gemma2Config
from transformers.models.gemma3 import Gemma3TextConfig
from transformers.models.llama import LlamaConfig
from transformers.models.mistral import MistralConfig
from transformers.models.olmo2 import Olmo2Config
from transformers.models.phi3 import Phi3Config
from transformers.models.qwen2 import Qwen2Config
from transformers.models.qwen3 import Qwen3Config

SHARED = Path(os.environ.get("PUBLISH_PRUNED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
STORIES = SHARED / "models" / "stories260K"

_COMMON = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)

CONFIGS = {
    "llama": lambda: LlamaConfig(**_COMMON),
    "mistral": lambda: MistralConfig(**_COMMON),
    "gemma2": lambda: Gemma2Config(**_COMMON, head_dim=8),
    "phi3": lambda: Phi3Config(**_COMMON, pad_token_id=0, bos_token_id=0, eos_token_id=127),
    "qwen2": lambda: Qwen2Config(**_COMMON),
    # Newer families: q/k norms (Qwen3, Gemma-3, OLMo-2), sliding + global layers (Gemma-3), and attention and
    # MLP side by side on one normalised input (Cohere).
    "qwen3": lambda: Qwen3Config(**_COMMON, head_dim=8),
    # Gemma-3 repeats 5 sliding layers and 1 global; MLX reads the pattern's last layer, so with 2 layers the
    # pattern is 2: one of each.
    "gemma3": lambda: Gemma3TextConfig(**_COMMON, head_dim=8, sliding_window_pattern=2),
    "olmo2": lambda: Olmo2Config(**_COMMON),
    "cohere": lambda: CohereConfig(**_COMMON),
}


def build_model(arch: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(CONFIGS[arch](), dtype=dtype).eval()


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over 128 ids, enough to save and reload with the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(126)} | {"<unk>": 126, "<eos>": 127}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")


def _save(config, folder: Path, seed: int = 0) -> Path:
    """A random model built from `config`, saved with the tiny tokenizer as a transformers folder."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def save_tiny_exaone3(folder: Path) -> Path:
    """EXAONE 3.x: transformers 5 loads it as Llama-like modules (`model.layers.N.self_attn…`) but saves it under
    its original names (`transformer.h.N.attn.attention…`)."""
    from transformers import AutoConfig

    return _save(AutoConfig.for_model("exaone", **_COMMON, bos_token_id=0, eos_token_id=127, pad_token_id=126),
                 folder)


# Mixture-of-experts families, 4 experts of which 2 per token: transformers 5 keeps the experts as 3-D tensors
# (gate_up_proj, down_proj) and saves them per expert. Qwen2-MoE adds a shared expert and its scalar gate.
MOE_EXPERTS = {
    "mixtral": dict(num_local_experts=4),
    "qwen2_moe": dict(num_experts=4, moe_intermediate_size=16, shared_expert_intermediate_size=24),
    "qwen3_moe": dict(num_experts=4, moe_intermediate_size=16, head_dim=8),
    "olmoe": dict(num_experts=4, intermediate_size=16, eos_token_id=127, pad_token_id=126),
}


def moe_config(arch: str, **overrides):
    """The config of a tiny MoE (`MOE_EXPERTS`); `initializer_range=0.2` makes routing depend on the token."""
    from transformers import AutoConfig

    return AutoConfig.for_model(arch, **{**_COMMON, **MOE_EXPERTS[arch], "num_experts_per_tok": 2, **overrides})


def save_tiny_moe(arch: str, folder: Path, *, seed: int = 0, **overrides) -> Path:
    """A tiny random mixture-of-experts model of family `arch` saved as the Hub ships them (per-expert tensors)."""
    return _save(moe_config(arch, **overrides), folder, seed)


def save_tiny_gpt_oss(folder: Path) -> Path:
    """GPT-OSS: experts stored transposed, gate and up interleaved, with biases — a layout the tool refuses."""
    from transformers import AutoConfig

    return _save(AutoConfig.for_model("gpt_oss", **_COMMON, num_local_experts=4, num_experts_per_tok=2, head_dim=8),
                 folder)


def save_tiny_gemma3_vlm(folder: Path, seed: int = 0) -> Path:
    """Gemma-3 as the Hub ships it from 4B up: `Gemma3ForConditionalGeneration`, a vision tower beside the text
    decoder, saved under the original checkpoint names (`language_model.model.layers…`). The tower's blocks
    have the text blocks' width, so some of its weights share a text weight's name tail and shape."""
    from transformers.models.gemma3 import Gemma3Config

    config = Gemma3Config(
        text_config=dict(_COMMON, head_dim=8, sliding_window_pattern=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=28, patch_size=14),
        mm_tokens_per_image=4, image_token_index=120, boi_token_index=121, eoi_token_index=122)
    return _save(config, folder, seed)


def save_tiny_model(arch: str, folder: Path, *, seed: int = 0, readme: str | None = None) -> Path:
    _save(CONFIGS[arch](), folder, seed)
    if readme is not None:
        (folder / "README.md").write_text(readme)
    return folder


def expected_prunable(arch: str) -> int:
    """Linear weights inside decoder blocks, counted from the config (independently of the code under test)."""
    c = CONFIGS[arch]()
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q = c.hidden_size * c.num_attention_heads * head_dim
    kv = 2 * c.hidden_size * c.num_key_value_heads * head_dim
    o = c.num_attention_heads * head_dim * c.hidden_size
    mlp = 3 * c.hidden_size * c.intermediate_size
    return c.num_hidden_layers * (q + kv + o + mlp)


def add_remote_code(folder: Path) -> Path:
    """Turn a saved tiny Llama into a `--trust-remote-code` model: its own configuration and modeling files, named
    in config.json's auto_map."""
    (folder / "configuration_my.py").write_text(
        "from transformers import LlamaConfig\n\n\nclass MyConfig(LlamaConfig):\n    model_type = 'my-llama'\n")
    (folder / "modeling_my.py").write_text(
        "from transformers import LlamaForCausalLM\n\nfrom .configuration_my import MyConfig\n\n\n"
        "class MyForCausalLM(LlamaForCausalLM):\n    config_class = MyConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my-llama", architectures=["MyForCausalLM"],
                  auto_map={"AutoConfig": "configuration_my.MyConfig",
                            "AutoModelForCausalLM": "modeling_my.MyForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder
