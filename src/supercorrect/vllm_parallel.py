"""vLLM at scale: tensor parallelism inside one engine, data parallelism as independent engine replicas.

`generation.tensor_parallel_size: T` splits every layer of the student over T GPUs of one engine; it goes to
`vllm.LLM(tensor_parallel_size=T)` as it is (`engine_kwargs`).

`generation.data_parallel_size: D` runs D engines, each on its own T GPUs, and gives each a contiguous share of
the prompts. It is NOT passed to `vllm.LLM`: since vLLM PR #27282 (October 2025) `LLM(data_parallel_size=D)` in
one process raises ValueError ("not supported for single-process usage and may hang"); vLLM's offline data
parallelism is one process per rank with the VLLM_DP_* variables set (examples/.../data_parallel_offline.py), whose
ranks step in lock-step, which dense models do not need (it exists for MoE expert parallelism) and which is known
to fail when ranks finish at different times (vllm#23534). So `DataParallelVLLM` starts D plain replicas
(processes started with `spawn`, CUDA_VISIBLE_DEVICES = the replica's T GPUs) and joins their answers in prompt
order. Every request carries its own seed, derived from its index in the whole call (`request_seed`), so the
seeds do not depend on D: a run with D = 4 draws what D = 1 draws, up to batch-dependent GPU kernel results.

Across machines, run one `supercorrect` process per machine on its own data, or point the teacher/student at a
`vllm serve` deployment (docs/distributed.md).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from typing import Any

from .generation import Backend, Completion, SamplingSettings


def engine_kwargs(
    model_path: str,
    dtype: str,
    gpu_memory_utilization: float,
    seed: int,
    tensor_parallel_size: int = 1,
    on_cpu: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """The keyword arguments of one `vllm.LLM` engine."""
    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": dtype,
        "gpu_memory_utilization": gpu_memory_utilization,
        "seed": seed,
        "tensor_parallel_size": tensor_parallel_size,
        **extra,
    }
    if "data_parallel_size" in kwargs:
        raise ValueError("data_parallel_size is not an engine argument here: use DataParallelVLLM (replicas)")
    if on_cpu:
        # vLLM rewinds a seeded request's generator after each partial (chunked) prefill step, which only CUDA
        # generators allow: on CPU the engine dies ("CPU Generator does not use offset"). Prefill whole prompts.
        kwargs.setdefault("enable_chunked_prefill", False)
        # torch.compile adds minutes to every start on CPU for no measurable speed-up (docs/vllm.md).
        kwargs.setdefault("enforce_eager", True)
    return kwargs


def request_seed(s: SamplingSettings, index: int) -> int:
    """The seed of prompt `index` of a call (vLLM gives its n samples seed, seed + 1, ...)."""
    return s.seed * 100_003 + index * s.n


def shard_bounds(n_items: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) shares of n_items, sizes differing by at most one (the first ones larger)."""
    base, extra = divmod(n_items, parts)
    bounds, start = [], 0
    for rank in range(parts):
        end = start + base + (rank < extra)
        bounds.append((start, end))
        start = end
    return bounds


def replica_devices(rank: int, tensor_parallel_size: int) -> str:
    """CUDA_VISIBLE_DEVICES of replica `rank`: GPUs rank*T .. rank*T + T - 1 of the visible ones."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    first = rank * tensor_parallel_size
    if visible:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        if first + tensor_parallel_size > len(ids):
            raise ValueError(f"replica {rank} needs GPUs {first}..{first + tensor_parallel_size - 1}: "
                             f"only {len(ids)} visible ({visible})")  # fmt: skip
        return ",".join(ids[first : first + tensor_parallel_size])
    return ",".join(str(first + i) for i in range(tensor_parallel_size))


def _replica_main(conn, rank: int, tensor_parallel_size: int, factory: Callable[..., Backend], kwargs: dict) -> None:
    """One replica process: build the engine on its GPUs, then answer (prompts, settings, first_index) requests."""
    os.environ["CUDA_VISIBLE_DEVICES"] = kwargs.pop("_devices")
    try:
        backend = factory(tensor_parallel_size=tensor_parallel_size, **kwargs)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"replica {rank}: {type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    try:
        while (request := conn.recv()) is not None:
            prompts, settings, first_index = request
            try:
                conn.send(("ok", backend.generate(prompts, settings, first_index=first_index)))
            except Exception as e:  # noqa: BLE001
                conn.send(("error", f"replica {rank}: {type(e).__name__}: {e}"))
    finally:
        backend.close()


class DataParallelVLLM(Backend):
    """`data_parallel_size` independent engine replicas behind the Backend contract (see the module docstring).

    `factory` builds one replica's backend inside its process (default: `generation.VLLMBackend`); it must be
    importable by name (the processes are started with `spawn`) and accept `first_index` in `generate`.
    """

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        data_parallel_size: int,
        tensor_parallel_size: int = 1,
        factory: Callable[..., Backend] | None = None,
        **backend_kwargs: Any,
    ):
        from .models import load_tokenizer

        if data_parallel_size < 2:
            raise ValueError(f"data_parallel_size must be >= 2 for replicas, got {data_parallel_size}")
        if factory is None:
            from .generation import VLLMBackend as factory  # noqa: N813
        self.tokenizer = load_tokenizer(model_path)
        ctx = mp.get_context("spawn")  # CUDA cannot be re-initialised in a forked child
        self._conns, self._procs = [], []
        for rank in range(data_parallel_size):
            parent, child = ctx.Pipe()
            kwargs = {"model_path": model_path, "_devices": replica_devices(rank, tensor_parallel_size),
                      **backend_kwargs}  # fmt: skip
            proc = ctx.Process(target=_replica_main, args=(child, rank, tensor_parallel_size, factory, kwargs))
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)
        for conn in self._conns:
            self._receive(conn)  # "ready", or the replica's start-up error

    def _receive(self, conn) -> Any:
        try:
            status, payload = conn.recv()
        except EOFError:
            self.close()
            raise RuntimeError("a vLLM replica process died (see its output above)") from None
        if status == "error":
            self.close()
            raise RuntimeError(payload)
        return payload

    def generate(self, prompts: Sequence[str], s: SamplingSettings, desc: str | None = None) -> list[list[Completion]]:
        bounds = shard_bounds(len(prompts), len(self._conns))
        busy = [(conn, a, b) for conn, (a, b) in zip(self._conns, bounds, strict=True) if b > a]
        for conn, a, b in busy:
            conn.send((list(prompts[a:b]), s, a))
        results: list[list[Completion]] = []
        for conn, _, _ in busy:
            results.extend(self._receive(conn))
        return results

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
        self._conns, self._procs = [], []
