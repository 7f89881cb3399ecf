"""Shared-prefix Cross-DPO: each pair's prompt runs once, for the policy and for the reference model.

A Cross-DPO prompt (HT prompt + problem + the student's steps 1..k-1) is long and chosen/rejected are one step
each, so the standard two-sequence layout (`[prompt | chosen]` and `[prompt | rejected]`, TRL's
`concatenated_forward`) spends most of its compute on the prompt, twice. Here a pair is ONE sequence

    tokens     p_0 ... p_{P-1} | c_0 ... c_{C-1} | r_0 ... r_{R-1}
    positions  0   ...   P-1   | P   ...   P+C-1 | P   ...   P+R-1     (rejected continues the prefix, not chosen)

with a 4D attention mask: causal inside the prefix; chosen sees the prefix and the earlier chosen tokens; rejected
sees the prefix and the earlier rejected tokens, never chosen. Every token therefore sees exactly what it sees in
its own two-sequence row, at the same position, so log-probs, loss and gradients are the same up to float
rounding (tests/test_shared_prefix.py checks it). Several pairs can be packed into one row (`pack_length`): the
mask is then block-diagonal over pairs.

The LM head (49k x 576 for SmolLM2: a fifth of the model's FLOPs per token) runs only on the positions whose next
token is scored: the last prefix token (it predicts both c_0 and r_0) and every completion token but the last.
`r_0` is scored from the LAST PREFIX position, whose logits are shared with `c_0`.

`SharedPrefixDPOTrainer` is our `CrossDPOTrainer` (so TRL's DPOTrainer and the transformers Trainer: accelerate
/ DDP, PEFT, checkpoints, schedulers, logging) with this collator and forward. The loss is TRL's formula (sigmoid,
hinge or IPO, beta, reference log-ratios; plus TRL's "sft" term, the NLL of the chosen tokens, which RPO adds with
a weight) and the logged metrics have TRL's names. With
`precompute_ref_log_probs`, the reference log-probs are computed once per (tokenised pairs, reference weights,
precision) and cached on disk (`ref_cache_dir`), so a second run with the same data and model does no reference
forward at all.

Attention: SDPA (boolean mask, the default), eager (additive mask) or flex attention (a `BlockMask`; compiled,
block-sparse, the right choice for packing long rows on GPU). FlashAttention-2/3 take no custom mask and are
refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import broadcast_object_list, is_peft_model
from datasets import Dataset
from torch.utils.data import DataLoader
from trl.models import prepare_deepspeed
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from .dpo_trainer import TOKEN_COLUMNS, CrossDPOTrainer

logger = logging.getLogger(__name__)

PREFIX, CHOSEN, REJECTED = 0, 1, 2  # `span` of each token; padding is -1
SUPPORTED_LOSSES = ("sigmoid", "hinge", "ipo", "sft")
MASKED_ATTENTION = ("sdpa", "eager", "flex_attention")
REF_CACHE_VERSION = 1


# ------------------------------------------------------------------------------------------------- layout


@dataclass
class SharedPrefixCollator:
    """Pairs (`prompt_ids`, `chosen_ids`, `rejected_ids`) -> one `[prefix | chosen | rejected]` sequence each.

    `pack_length` 0 puts one pair per row; N > 0 packs consecutive pairs into rows of at most N tokens (a pair
    longer than N gets a row of its own). Rows are right-padded to the longest. Pair i of the output is
    `examples[i]` whatever the packing.

    Output tensors (B rows of length L, n pairs, T scored tokens):
      input_ids, position_ids, segment_ids (pair index, -1 on padding), span (PREFIX/CHOSEN/REJECTED, -1):  [B, L]
      logits_to_keep: [B, L] bool, the positions whose logits are needed (row-major order = logits row order)
      target_rows, target_ids, target_segments: [T], the logits row, the token it scores, and 2*pair + (0 for
        chosen, 1 for rejected)
      ref_chosen_logps, ref_rejected_logps: [n], when the examples carry them (precomputed reference).
    """

    pad_token_id: int = 0
    pack_length: int = 0

    def _rows(self, examples: list[dict[str, Any]]) -> list[list[int]]:
        rows: list[list[int]] = []
        used = 0
        for i, ex in enumerate(examples):
            size = len(ex["prompt_ids"]) + len(ex["chosen_ids"]) + len(ex["rejected_ids"])
            if rows and self.pack_length > 0 and used + size <= self.pack_length:
                rows[-1].append(i)
                used += size
            else:
                rows.append([i])
                used = size
        return rows

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = self._rows(examples)
        width = max(sum(len(examples[i][k]) for i in row for k in TOKEN_COLUMNS) for row in rows)
        shape = (len(rows), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        segment_ids = torch.full(shape, -1, dtype=torch.long)
        span = torch.full(shape, -1, dtype=torch.long)
        keep = torch.zeros(shape, dtype=torch.bool)
        # Flat positions (row * width + column) of the logits each scored token reads.
        target_flat: list[int] = []
        target_ids: list[int] = []
        target_segments: list[int] = []

        for b, row in enumerate(rows):
            start = 0
            for i in row:
                prompt, chosen, rejected = (examples[i][k] for k in TOKEN_COLUMNS)
                p, c, r = len(prompt), len(chosen), len(rejected)
                end = start + p + c + r
                input_ids[b, start:end] = torch.tensor(prompt + chosen + rejected)
                position_ids[b, start:end] = torch.cat([torch.arange(p + c), torch.arange(p, p + r)])
                segment_ids[b, start:end] = i
                span[b, start : start + p] = PREFIX
                span[b, start + p : start + p + c] = CHOSEN
                span[b, start + p + c : end] = REJECTED

                # Token j of a completion is predicted at the position before it: chosen by the last prefix
                # token, then chosen 0..C-2; rejected ALSO by the last prefix token, then rejected 0..R-2.
                last = start + p - 1
                chosen_from = range(last, last + c)
                rejected_from = [last, *range(last + 1 + c, end - 1)]
                keep[b, last : last + c] = True
                keep[b, last + 1 + c : end - 1] = True
                target_flat += [b * width + pos for pos in (*chosen_from, *rejected_from)]
                target_ids += chosen + rejected
                target_segments += [2 * i] * c + [2 * i + 1] * r
                start = end

        # Logits come back for the kept positions only, in row-major order: map flat position -> logits row.
        row_of = torch.cumsum(keep.flatten(), 0) - 1
        batch = {
            "input_ids": input_ids,
            "position_ids": position_ids,
            "segment_ids": segment_ids,
            "span": span,
            "logits_to_keep": keep,
            "target_rows": row_of[torch.tensor(target_flat)],
            "target_ids": torch.tensor(target_ids),
            "target_segments": torch.tensor(target_segments),
        }
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                batch[key] = torch.tensor([ex[key] for ex in examples])
        return batch


def allowed_attention(segment_ids: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """[B, L, L] bool, query x key: same pair, causal, and rejected never sees chosen.

    Padding positions see only themselves (an all-False row would give NaN in SDPA); no real token sees them.
    """
    length = segment_ids.shape[1]
    index = torch.arange(length, device=segment_ids.device)
    causal = index[None, :] <= index[:, None]
    same_pair = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, :, None] >= 0)
    rejected_to_chosen = (span[:, :, None] == REJECTED) & (span[:, None, :] == CHOSEN)
    itself = index[None, :] == index[:, None]
    return (causal & same_pair & ~rejected_to_chosen) | itself


def attention_mask_for(
    implementation: str, segment_ids: torch.Tensor, span: torch.Tensor, dtype: torch.dtype = torch.float32
) -> Any:
    """The 4D mask in the form `implementation` takes; transformers passes a 4D mask through unchanged."""
    if implementation == "sdpa":
        return allowed_attention(segment_ids, span)[:, None]
    if implementation == "eager":  # eager adds the mask to the scores
        allowed = allowed_attention(segment_ids, span)[:, None]
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )
    if implementation == "flex_attention":
        from torch.nn.attention.flex_attention import create_block_mask

        def mask_mod(b, h, q, kv):
            same_pair = (segment_ids[b, q] == segment_ids[b, kv]) & (segment_ids[b, q] >= 0)
            rejected_to_chosen = (span[b, q] == REJECTED) & (span[b, kv] == CHOSEN)
            return ((kv <= q) & same_pair & ~rejected_to_chosen) | (kv == q)

        batch, length = segment_ids.shape
        return create_block_mask(mask_mod, batch, None, length, length, device=segment_ids.device)
    raise ValueError(
        f"shared-prefix Cross-DPO needs an attention implementation that takes a custom mask "
        f"({', '.join(MASKED_ATTENTION)}), not {implementation!r}: load the model with one of those "
        "or set shared_prefix: false"
    )


@dataclass
class PairOutputs:
    chosen_logps: torch.Tensor  # [n], summed over the step's tokens
    rejected_logps: torch.Tensor  # [n]
    logits: torch.Tensor  # [K, V] at the kept positions (the last prefix row serves c_0 and r_0)
    logps: torch.Tensor  # [K, V] log-softmax of `logits`, fp32
    token_logps: torch.Tensor  # [T] log-prob of each scored token (batch["target_ids"])


def pair_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor], implementation: str) -> PairOutputs:
    """One forward of `model` (any wrapper: DDP, PEFT, DeepSpeed) over the shared-prefix batch."""
    dtype = torch.float32
    if implementation == "eager":  # the additive mask takes the weights' dtype
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    mask = attention_mask_for(implementation, batch["segment_ids"], batch["span"], dtype)
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=mask,
        position_ids=batch["position_ids"],
        logits_to_keep=batch["logits_to_keep"],  # 2D bool: [kept positions, vocab] logits, nothing else
        use_cache=False,
    ).logits
    logps = logits.float().log_softmax(-1)
    token_logps = logps[batch["target_rows"], batch["target_ids"]]  # [T]
    n_pairs = int(batch["segment_ids"].max()) + 1
    sums = token_logps.new_zeros(2 * n_pairs).index_add(0, batch["target_segments"], token_logps)
    chosen, rejected = sums.view(n_pairs, 2).unbind(1)
    return PairOutputs(chosen, rejected, logits, logps, token_logps)


# ------------------------------------------------------------------------------------------------ trainer


def dataset_tokens_hash(dataset: Dataset) -> str:
    h = hashlib.sha256()
    for row in dataset.select_columns(list(TOKEN_COLUMNS)):
        h.update(json.dumps([row[k] for k in TOKEN_COLUMNS]).encode())
    return h.hexdigest()


def check_supported(args) -> None:
    """The DPO options the shared-prefix loss implements (TRL's `DPOConfig`); others need the two-sequence path."""
    unsupported = {
        "loss_type": [t for t in args.loss_type if t not in SUPPORTED_LOSSES],
        "ld_alpha": args.ld_alpha is not None,
        "use_weighting": args.use_weighting,
        "f_divergence_type": args.f_divergence_type if args.f_divergence_type != "reverse_kl" else None,
    }
    unsupported = {name: value for name, value in unsupported.items() if value}
    if unsupported:
        raise ValueError(
            f"shared-prefix Cross-DPO does not implement {unsupported} (losses: {', '.join(SUPPORTED_LOSSES)}); "
            "set shared_prefix: false to use TRL's two-sequence path"
        )


class SharedPrefixDPOTrainer(CrossDPOTrainer):
    """`CrossDPOTrainer` running each pair as one `[prefix | chosen | rejected]` sequence (module docstring).

    `pack_length`: 0 for one pair per row, else the most tokens per packed row. `ref_cache_dir`: where
    precomputed reference log-probs are cached (with `precompute_ref_log_probs`); None disables the cache.
    After construction, `ref_logps_cache` says what happened: None (no precompute), "hit" or "miss".
    """

    def __init__(self, *args: Any, pack_length: int = 0, ref_cache_dir: str | None = None, **kwargs: Any):
        check_supported(kwargs["args"])  # before DPOTrainer.__init__, which may precompute reference log-probs
        # Read by `_precompute_ref_logps`, which DPOTrainer.__init__ calls: set before it.
        self.ref_cache_dir = ref_cache_dir
        self.ref_logps_cache: str | None = None
        pad = getattr(kwargs.get("processing_class"), "pad_token_id", None)
        kwargs["data_collator"] = SharedPrefixCollator(pad_token_id=pad or 0, pack_length=pack_length)
        super().__init__(*args, **kwargs)
        if self.aux_loss_enabled:
            raise ValueError(
                "shared-prefix Cross-DPO does not add the MoE router loss; set shared_prefix: false"
            )

    def _implementation(self, model: torch.nn.Module) -> str:
        return self.accelerator.unwrap_model(model).config._attn_implementation

    def _reference_context(self) -> contextlib.AbstractContextManager:
        """No separate reference model with PEFT: the reference is the base with the adapter disabled."""
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            return use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        return contextlib.nullcontext()

    def compute_ref_log_probs(self, model, inputs):
        """Reference log-probs (chosen, rejected) of a collated batch, without gradient."""
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            self._reference_context(),
            self.accelerator.autocast(),
        ):
            out = pair_logps(model, inputs, self._implementation(model))
        return out.chosen_logps, out.rejected_logps

    # -- precomputed reference log-probs, cached on disk ----------------------------------------------------

    def _ref_cache_file(self, dataset: Dataset) -> str | None:
        if not self.ref_cache_dir:
            return None
        key = {
            "version": REF_CACHE_VERSION,
            "tokens": dataset_tokens_hash(dataset),
            "reference": self._precompute_model_hash,  # sha256 of the reference weights (TRL's hash_module)
            "precision": {"bf16": self.args.bf16, "fp16": self.args.fp16},
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return os.path.join(self.ref_cache_dir, f"ref_logps_{digest}.pt")

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        path = self._ref_cache_file(dataset)
        # Rank 0 decides, so that every rank takes the same branch (the computation below is collective).
        hit = [path is not None and os.path.exists(path)]
        broadcast_object_list(hit, from_process=0)
        if hit[0]:
            cached = torch.load(path, weights_only=True)
            chosen, rejected = cached["chosen"], cached["rejected"]
            self.ref_logps_cache = "hit"
            logger.info("reference log-probs for %s from %s", name, path)
        else:
            chosen, rejected = self._compute_dataset_ref_logps(dataset, name, batch_size)
            self.ref_logps_cache = "miss"
            if path is not None and self.accelerator.is_main_process:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = f"{path}.tmp{os.getpid()}"
                torch.save({"chosen": chosen, "rejected": rejected}, tmp)
                os.replace(tmp, path)
            self.accelerator.wait_for_everyone()
        if len(chosen) != len(dataset):
            raise RuntimeError(f"{path}: {len(chosen)} cached reference log-probs for {len(dataset)} pairs")
        dataset = dataset.add_column("ref_chosen_logps", chosen.tolist())
        return dataset.add_column("ref_rejected_logps", rejected.tolist())

    def _compute_dataset_ref_logps(self, dataset: Dataset, name: str, batch_size: int):
        """Every process scores a shard; all get the whole dataset's log-probs back, in dataset order."""
        loader = DataLoader(
            dataset.select_columns(list(TOKEN_COLUMNS)),
            batch_size=batch_size,
            collate_fn=self.data_collator,
            shuffle=False,
        )
        loader = self.accelerator.prepare(loader)
        if self.ref_model is None and self.is_deepspeed_enabled:  # as TRL: parameters not placed yet
            if self._precompute_engine is None:
                self._precompute_engine = prepare_deepspeed(self.model, self.accelerator)
            model = self._precompute_engine
        else:
            model = self.ref_model or self.model
        chosen, rejected = [], []
        for batch in loader:
            c, r = self.compute_ref_log_probs(model, batch)
            c, r = self.accelerator.gather_for_metrics((c, r))
            chosen.append(c.cpu())
            rejected.append(r.cpu())
        logger.info("computed reference log-probs for %s dataset (%d pairs)", name, len(dataset))
        return torch.cat(chosen), torch.cat(rejected)

    # -- loss -------------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs, return_outputs):
        if return_outputs:
            raise NotImplementedError("shared-prefix Cross-DPO does not return logits for compute_metrics")
        mode = "train" if self.model.training else "eval"
        policy = pair_logps(model, inputs, self._implementation(model))
        chosen_logps, rejected_logps = policy.chosen_logps, policy.rejected_logps

        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:
            reference = self.ref_model if self.ref_model is not None else self.model
            ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(reference, inputs)

        # TRL's DPO loss (DPOTrainer._compute_loss, f_divergence_type="reverse_kl").
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        delta = chosen_logratios - rejected_logratios
        loss = 0.0
        for loss_type, weight in zip(self.loss_types, self.loss_weights, strict=True):
            if loss_type == "sigmoid":
                per_pair = -F.logsigmoid(self.beta * delta)
            elif loss_type == "hinge":
                per_pair = torch.relu(1 - self.beta * delta)
            elif loss_type == "sft":  # RPO's NLL term: TRL's mean over the batch's chosen tokens
                is_chosen = inputs["target_segments"] % 2 == 0
                per_pair = (-policy.token_logps[is_chosen].mean()).expand(len(delta))
            else:  # ipo: log-ratios averaged per token
                n_tokens = torch.bincount(inputs["target_segments"], minlength=2 * len(delta)).view(-1, 2)
                n_tokens = n_tokens.clamp(min=1)
                ipo_delta = chosen_logratios / n_tokens[:, 0] - rejected_logratios / n_tokens[:, 1]
                per_pair = (ipo_delta - 1 / (2 * self.beta)) ** 2
            loss += per_pair.mean() * weight

        self._log_metrics(mode, inputs, policy, chosen_logratios, rejected_logratios)
        return loss

    @torch.no_grad()
    def _log_metrics(self, mode, inputs, policy: PairOutputs, chosen_logratios, rejected_logratios) -> None:
        """TRL's metric names and definitions, over the scored tokens."""
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        rows = inputs["target_rows"]  # per scored token, its logits row
        is_chosen = inputs["target_segments"] % 2 == 0

        def mean_over_processes(values: torch.Tensor) -> float:
            """Mean of `values` over every process's tokens; 0.0 when there are none."""
            count = gather(torch.tensor(values.numel(), device=values.device)).sum()
            return (gather(values.sum()).sum() / count).item() if count > 0 else 0.0

        logps = policy.logps.detach()
        metrics["entropy"].append(mean_over_processes(-(logps.exp() * logps).sum(-1)[rows]))

        if mode == "train":
            real = gather((inputs["segment_ids"] >= 0).sum()).sum().item()
            self._total_train_tokens += real // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]

        mean_logits = policy.logits.detach().float().mean(-1)[rows]
        metrics["logits/chosen"].append(mean_over_processes(mean_logits[is_chosen]))
        metrics["logits/rejected"].append(mean_over_processes(mean_logits[~is_chosen]))
        correct = logps.argmax(-1)[rows][is_chosen] == inputs["target_ids"][is_chosen]
        metrics["mean_token_accuracy"].append(mean_over_processes(correct.float()))

        chosen_rewards = self.beta * chosen_logratios.detach()
        rejected_rewards = self.beta * rejected_logratios.detach()
        per_pair = {
            "rewards/chosen": chosen_rewards,
            "rewards/rejected": rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "rewards/margins": chosen_rewards - rejected_rewards,
            "logps/chosen": policy.chosen_logps.detach(),
            "logps/rejected": policy.rejected_logps.detach(),
        }
        for name, values in per_pair.items():
            metrics[name].append(self.accelerator.gather(values).mean().item())
