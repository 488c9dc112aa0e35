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

.PHONY: setup demo test test-fast lint bench serve clean

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
	@$(BIN)/facereason analyze "$$($(BIN)/python -c 'from tools.assets import media; print(media("$(SAMPLE)"))')"

test: setup
	$(BIN)/python -m pytest -q -ra

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/perception.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
