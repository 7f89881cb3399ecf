"""Shared-prefix Cross-DPO equals the two-sequence path: per-pair log-probs, loss, gradients, short training runs.

Tiny random Llama (the `tiny_model_dir` fixture: SmolLM2's architecture and real tokenizer, hidden 32), fp32 on
CPU. The two layouts run the same arithmetic except for the order of float sums inside attention and in the
LM-head matmul, so they agree to fp32 rounding. Tolerances (the errors seen are in the comments of each test):
  per-pair summed log-probs   rel 1e-5 + abs 1e-5  (sums of ~45 token log-probs, ~-480; seen 2.5e-7 rel)
  loss                        rel 1e-5  (seen ~1e-7)
  gradients, per parameter    max |g_shared - g_two| <= 1e-4 * max |g_two| + 1e-9  (seen ~1e-6 relative)
  3-step loss curves          rel 1e-4  (Adam rescales tiny gradient differences; seen ~1e-6)
"""

from __future__ import annotations

import contextlib
import json
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from test_dpo_distributed import (  # the 2-process launch helpers
    DISTRIBUTED_TYPE,
    DPO_CLI,
    ENGINE_PARAMS,
    WEIGHT_ATOL,
    accelerate_2proc,
    logged_steps,
    max_weight_diff,
    run_ok,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

from supercorrect.trainers.common import LoraConfig
from supercorrect.trainers.dpo import build_trainer, train_cross_dpo
from supercorrect.trainers.dpo_config import CrossDPOConfig
from supercorrect.trainers.shared_prefix import (
    CHOSEN,
    PREFIX,
    REJECTED,
    SharedPrefixCollator,
    SharedPrefixDPOTrainer,
    allowed_attention,
    pair_logps,
)

LOGP_RTOL, LOGP_ATOL = 1e-5, 1e-5
LOSS_RTOL = 1e-5
REWARD_ATOL = 1e-4
GRAD_RTOL = 1e-4
CURVE_RTOL = 1e-4


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def perturbed_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model plus noise: a policy that differs from its reference (`tiny_model_dir`)."""
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    out = tmp_path_factory.mktemp("tiny-perturbed")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


def chat_prompt(question: str, steps: str) -> str:
    """A user turn and the student's steps: an unfinished assistant turn (ChatML, no system prompt: short)."""
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{steps}"


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    """Prompts and completions of different lengths (the packed rows are uneven)."""
    rows = []
    for a, b, steps in [(2, 3, 1), (17, 25, 3), (6, 6, 0), (123, 456, 2), (9, 1, 4)]:
        done = "".join(f"<Step{i + 1}>\n{a} + {i} = {a + i}\n</Step{i + 1}>\n" for i in range(steps))
        k = steps + 1
        rows.append(
            {
                "prompt": chat_prompt(f"What is {a} + {b}?", done),
                "chosen": f"<Step{k}>\n<Cause>Wrong sum.</Cause>\n<Correction>{a + b}</Correction>",
                "rejected": f"<Step{k}>\n<Cause>Fine.</Cause>" + " ok" * (a % 4),
            }
        )
    return rows


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenised(tokenizer, pairs) -> list[dict]:
    return [{f"{k}_ids": ids(tokenizer, p[k]) for k in ("prompt", "chosen", "rejected")} for p in pairs]


def quick_cfg(**overrides) -> CrossDPOConfig:
    base = {"batch_size": 5, "max_steps": 1, "learning_rate": 1e-3, "warmup_ratio": 0.0, "logging_steps": 1,
            "bf16": False}  # exactness is checked in fp32 (pinned: `auto` would pick bf16 on some CPUs)
    return CrossDPOConfig(**{**base, **overrides})


def two_sequence_logps(model, example: dict, which: str) -> torch.Tensor:
    """log p(completion | prompt): one plain causal forward of [prompt | completion], nothing shared."""
    prompt, completion = example["prompt_ids"], example[f"{which}_ids"]
    input_ids = torch.tensor([prompt + completion])
    logits = model(input_ids=input_ids).logits[0]
    logps = F.log_softmax(logits[:-1], dim=-1).gather(1, input_ids[0, 1:, None]).squeeze(1)
    return logps[len(prompt) - 1 :].sum()


# ------------------------------------------------------------------------------------------------- layout


def test_collator_layout_positions_and_targets():
    ex = {"prompt_ids": [10, 11, 12], "chosen_ids": [20, 21], "rejected_ids": [30, 31, 32]}
    batch = SharedPrefixCollator()([ex])
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21, 30, 31, 32]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 3, 4, 5]]  # rejected continues the prefix
    assert batch["span"].tolist() == [[PREFIX] * 3 + [CHOSEN] * 2 + [REJECTED] * 3]
    # Logits needed: last prefix (predicts 20 and 30), chosen[0] (predicts 21), rejected[0..1] (31, 32).
    assert batch["logits_to_keep"].tolist() == [[False, False, True, True, False, True, True, False]]
    kept = [2, 3, 5, 6]
    rows = batch["target_rows"].tolist()
    assert [kept[r] for r in rows] == [2, 3, 2, 5, 6]  # r_0 is scored from the LAST PREFIX position
    assert batch["target_ids"].tolist() == [20, 21, 30, 31, 32]
    assert batch["target_segments"].tolist() == [0, 0, 1, 1, 1]

    allowed = allowed_attention(batch["segment_ids"], batch["span"])[0]
    p, c = 3, 2
    for q in range(8):
        sees = allowed[q].nonzero().flatten().tolist()
        if q < p + c:  # prefix and chosen: plain causal
            assert sees == list(range(q + 1))
        else:  # rejected: the prefix, then itself causally, never chosen
            assert sees == list(range(p)) + list(range(p + c, q + 1))


def test_collator_packs_pairs_block_diagonally():
    examples = [
        {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4]},
        {"prompt_ids": [5, 6, 7], "chosen_ids": [8, 9], "rejected_ids": [10]},
        {"prompt_ids": [11] * 9, "chosen_ids": [12], "rejected_ids": [13]},
    ]
    batch = SharedPrefixCollator(pack_length=10)(examples)
    assert batch["input_ids"].shape == (2, 11)  # pairs 0 and 1 share a row (4 + 6 tokens), pair 2 alone
    assert batch["segment_ids"][0].tolist() == [0] * 4 + [1] * 6 + [-1]
    assert batch["position_ids"][0, 4:10].tolist() == [0, 1, 2, 3, 4, 3]  # positions restart per pair
    allowed = allowed_attention(batch["segment_ids"], batch["span"])[0]
    assert not allowed[4:, :4].any() and not allowed[:4, 4:].any()  # no attention across pairs
    assert allowed[10].nonzero().flatten().tolist() == [10]  # padding sees only itself
    assert batch["target_segments"].tolist() == [0, 1, 2, 2, 3, 4, 5]


# --------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(("attention", "pack_length"), [("sdpa", 0), ("sdpa", 200), ("eager", 200)])
def test_pair_logps_equal_two_sequence_forwards(tokenizer, perturbed_dir, pairs, pack_length, attention):
    model = AutoModelForCausalLM.from_pretrained(
        perturbed_dir, dtype=torch.float32, attn_implementation=attention
    )
    examples = tokenised(tokenizer, pairs)
    batch = SharedPrefixCollator(pack_length=pack_length)(examples)
    if pack_length:
        assert batch["input_ids"].shape[0] < len(examples)  # really packed
    with torch.no_grad():
        out = pair_logps(model, batch, attention)
        expected_c = torch.stack([two_sequence_logps(model, ex, "chosen") for ex in examples])
        expected_r = torch.stack([two_sequence_logps(model, ex, "rejected") for ex in examples])
    assert (expected_c - expected_r).abs().min() > 1e-2  # the pairs are distinguishable
    # seen: 1.2e-4 absolute = 2.5e-7 relative, i.e. one fp32 rounding of the sum
    torch.testing.assert_close(out.chosen_logps, expected_c, rtol=LOGP_RTOL, atol=LOGP_ATOL)
    torch.testing.assert_close(out.rejected_logps, expected_r, rtol=LOGP_RTOL, atol=LOGP_ATOL)


def loss_and_grads(trainer, n: int) -> tuple[float, dict[str, torch.Tensor], dict[str, float]]:
    """One training-mode loss and backward of the trainer on its first n pairs."""
    trainer.model.train()  # TRL disabled dropout; "train" mode files the metrics under "train"
    trainer.model.zero_grad()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(n)])
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.item(), grads, metrics


def plain_loss_and_grads(trainer, n: int, rpo_alpha: float = 0.0) -> tuple[float, dict[str, torch.Tensor]]:
    """The same DPO loss from plain forwards: [prompt | chosen] and [prompt | rejected], per pair and model.
    With `rpo_alpha`, plus rpo_alpha * the mean NLL over all chosen tokens of the batch (RPO as TRL has it)."""
    policy = trainer.model
    policy.zero_grad()
    reference, reference_context = trainer.ref_model, contextlib.nullcontext()
    if reference is None:  # LoRA: the reference is the base with the adapter disabled
        reference, reference_context = policy, policy.disable_adapter()
    examples = [trainer.train_dataset[i] for i in range(n)]
    with torch.no_grad(), reference_context:
        ref = [
            (two_sequence_logps(reference, ex, "chosen"), two_sequence_logps(reference, ex, "rejected"))
            for ex in examples
        ]
    losses, chosen_logps = [], []
    for ex, (ref_c, ref_r) in zip(examples, ref, strict=True):
        pi_c, pi_r = two_sequence_logps(policy, ex, "chosen"), two_sequence_logps(policy, ex, "rejected")
        losses.append(-F.logsigmoid(trainer.beta * ((pi_c - ref_c) - (pi_r - ref_r))))
        chosen_logps.append(pi_c)
    loss = torch.stack(losses).mean()
    if rpo_alpha:
        n_chosen = sum(len(ex["chosen_ids"]) for ex in examples)
        loss = loss + rpo_alpha * -torch.stack(chosen_logps).sum() / n_chosen
    loss.backward()
    grads = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
    return loss.item(), grads


def assert_grads_close(shared: dict, two: dict) -> None:
    assert shared.keys() == two.keys() and shared
    for name, g in two.items():
        err = (shared[name] - g).abs().max().item()
        assert err <= GRAD_RTOL * g.abs().max().item() + 1e-9, f"{name}: {err} vs max {g.abs().max().item()}"


@pytest.mark.parametrize("variant", ["packed", "lora"])  # unpacked full fine-tuning: against TRL below
def test_loss_and_gradients_equal_plain_two_sequence_forwards(
    tiny_model_dir, perturbed_dir, pairs, tmp_path, variant
):
    if variant == "lora":  # the policy is the base + a random non-zero adapter, the reference the base
        cfg = quick_cfg(lora=LoraConfig(r=4, alpha=8))
        trainer, _ = build_trainer(str(tiny_model_dir), pairs, str(tmp_path), cfg)
        torch.manual_seed(2)
        with torch.no_grad():
            for name, param in trainer.model.named_parameters():
                if "lora_" in name:
                    param.copy_(0.1 * torch.randn_like(param))
    else:
        cfg = quick_cfg(pack_length=200 if variant == "packed" else 0)
        trainer, _ = build_trainer(perturbed_dir, pairs, str(tmp_path), cfg, str(tiny_model_dir))
    assert isinstance(trainer, SharedPrefixDPOTrainer)  # shared_prefix is the default
    if variant == "packed":
        rows = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])["input_ids"]
        assert 1 < len(rows) < len(pairs)  # packed, unevenly
    loss_s, grads_s, _ = loss_and_grads(trainer, len(pairs))
    loss_t, grads_t = plain_loss_and_grads(trainer, len(pairs))
    assert abs(loss_t - math.log(2)) > 1e-3  # the policy really differs from the reference
    assert loss_s == pytest.approx(loss_t, rel=LOSS_RTOL)
    if variant == "lora":
        assert grads_t and all("lora_" in name for name in grads_t)  # only the adapter trains
    assert_grads_close(grads_s, grads_t)  # every trained parameter, the tied embedding / LM head included


def test_loss_metrics_and_gradients_equal_trl_two_sequence_path(
    tiny_model_dir, perturbed_dir, pairs, tmp_path
):
    """Against the previous path itself: CrossDPOTrainer = TRL's DPOTrainer (concatenated forward, fused head)."""
    results = {}
    for shared in (True, False):
        cfg = quick_cfg(shared_prefix=shared)
        trainer, _ = build_trainer(
            perturbed_dir, pairs, str(tmp_path / str(shared)), cfg, str(tiny_model_dir)
        )
        assert isinstance(trainer, SharedPrefixDPOTrainer) == shared
        results[shared] = loss_and_grads(trainer, len(pairs))
    (loss_s, grads_s, metrics_s), (loss_t, grads_t, metrics_t) = results[True], results[False]
    assert loss_s == pytest.approx(loss_t, rel=LOSS_RTOL)  # seen: 2.2e-6 relative
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        assert metrics_s[key] == pytest.approx(metrics_t[key], abs=REWARD_ATOL), key  # seen: <= 7e-6
    for key in ("logps/chosen", "logps/rejected"):
        assert metrics_s[key] == pytest.approx(metrics_t[key], rel=LOGP_RTOL, abs=LOGP_ATOL), key
    assert metrics_s["rewards/accuracies"] == metrics_t["rewards/accuracies"]
    for key in ("entropy", "logits/chosen", "logits/rejected", "mean_token_accuracy"):
        assert metrics_s[key] == pytest.approx(metrics_t[key], rel=1e-5, abs=1e-6), key
    assert_grads_close(grads_s, grads_t)  # seen: 2.6e-6 of the largest gradient entry


def test_rpo_loss_and_gradients_equal_trl_and_plain_forwards(tiny_model_dir, perturbed_dir, pairs, tmp_path):
    """RPO (arXiv 2404.19733): DPO + rpo_alpha * NLL of the chosen step. The shared-prefix loss and gradients equal
    TRL's two-sequence path (loss list ["sigmoid", "sft"], weights [1, alpha]) and plain forwards."""
    alpha = 0.7
    results, trainers = {}, {}
    for shared in (True, False):
        cfg = quick_cfg(shared_prefix=shared, rpo_alpha=alpha)
        trainer, _ = build_trainer(
            perturbed_dir, pairs, str(tmp_path / str(shared)), cfg, str(tiny_model_dir)
        )
        assert trainer.loss_types == ["sigmoid", "sft"] and trainer.loss_weights == [1.0, alpha]
        results[shared], trainers[shared] = loss_and_grads(trainer, len(pairs)), trainer
    (loss_s, grads_s, _), (loss_t, grads_t, _) = results[True], results[False]
    assert loss_s == pytest.approx(loss_t, rel=LOSS_RTOL)  # seen: 2.2e-7 relative (loss 8.83, DPO part 1.28)
    assert_grads_close(grads_s, grads_t)  # seen: 2.2e-6 of the largest gradient entry
    loss_p, grads_p = plain_loss_and_grads(trainers[True], len(pairs), rpo_alpha=alpha)
    dpo_only, _ = plain_loss_and_grads(trainers[True], len(pairs))
    assert loss_p - dpo_only > 1.0  # the NLL term is there (a random model: about ln(vocab) per token)
    assert loss_s == pytest.approx(loss_p, rel=LOSS_RTOL)  # seen: 5.4e-7 relative
    assert_grads_close(grads_s, grads_p)  # seen: 1.7e-6


def test_rpo_alpha_from_the_run_config_to_trl(tmp_path):
    from supercorrect.config import load_config

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("name: r\ndata: {}\n")
    plain = load_config(cfg_file).cross_dpo.to_trl(str(tmp_path))
    assert plain.loss_type == ["sigmoid"] and plain.loss_weights == [1.0]
    rpo = load_config(cfg_file, {"cross_dpo.rpo_alpha": 0.5}).cross_dpo.to_trl(str(tmp_path))
    assert rpo.loss_type == ["sigmoid", "sft"] and rpo.loss_weights == [1.0, 0.5]


def test_rpo_alpha_at_its_default_keeps_the_fingerprint():
    """Run folders made before rpo_alpha existed stay up to date; setting it redoes the DPO stages."""
    from supercorrect.config import RunConfig
    from supercorrect.io import sha256_json
    from supercorrect.trainers.dpo_config import CrossDPOConfig

    data = {"test": {"kind": "synthetic", "split": "test", "n": 2}}
    cfg = RunConfig(name="x", data=data)
    unhashed = {"rpo_alpha", *CrossDPOConfig.OPERATIONAL}  # report_to / tracking_dir never count
    before = {k: v for k, v in cfg.model_dump(mode="json")["cross_dpo"].items() if k not in unhashed}
    assert cfg.section_hash("cross_dpo") == sha256_json({"cross_dpo": before})[:16]
    rpo = RunConfig(name="x", data=data, cross_dpo={"rpo_alpha": 1.0})
    assert rpo.section_hash("cross_dpo") != cfg.section_hash("cross_dpo")


def test_unsupported_loss_is_refused(tiny_model_dir, pairs, tmp_path):
    with pytest.raises(ValueError, match="shared_prefix: false"):
        build_trainer(str(tiny_model_dir), pairs, str(tmp_path), quick_cfg(loss_type="nca_pair"))


# ------------------------------------------------------------------------------------------ training runs


def step_losses(metrics: dict) -> list[float]:
    return [entry["loss"] for entry in metrics["log_history"] if "loss" in entry]


def test_short_run_matches_two_sequence_loss_curve_and_saves(
    tokenizer, tiny_model_dir, perturbed_dir, pairs, tmp_path
):
    """3 optimizer steps (AdamW, lr 1e-3) on 2 pairs: the shared-prefix and the TRL two-sequence runs agree."""
    cfg = {"max_steps": 3, "batch_size": 2, "learning_rate": 1e-3}
    few = [pairs[0], pairs[2]]  # the two shortest: TRL's CPU log-prob kernel is slow
    shared = train_cross_dpo(
        perturbed_dir, few, str(tmp_path / "shared"), quick_cfg(**cfg), str(tiny_model_dir)
    )
    two = train_cross_dpo(
        perturbed_dir, few, str(tmp_path / "two"), quick_cfg(**cfg, shared_prefix=False), str(tiny_model_dir)
    )
    curve_s, curve_t = step_losses(shared), step_losses(two)
    assert len(curve_s) == 3 and curve_t[2] < curve_t[0]  # it learns
    assert curve_s == pytest.approx(curve_t, rel=CURVE_RTOL)  # seen: ~1e-6 relative
    assert shared["config"]["shared_prefix"] and not two["config"]["shared_prefix"]

    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "shared")
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "two")
    for (name, p), q in zip(trained.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    assert AutoTokenizer.from_pretrained(tmp_path / "shared")("x")["input_ids"] == ids(tokenizer, "x")


def test_precomputed_reference_is_cached_on_disk(tiny_model_dir, perturbed_dir, pairs, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cfg = quick_cfg(precompute_ref_log_probs=True, ref_cache_dir=str(cache))
    first, _ = build_trainer(perturbed_dir, pairs, str(tmp_path / "a"), cfg, str(tiny_model_dir))
    assert first.ref_logps_cache == "miss" and len(list(cache.glob("ref_logps_*.pt"))) == 1
    loss_pre, _, _ = loss_and_grads(first, len(pairs))

    def no_reference_forward(*args, **kwargs):
        raise AssertionError("the reference model ran although its log-probs are cached")

    monkeypatch.setattr(SharedPrefixDPOTrainer, "compute_ref_log_probs", no_reference_forward)
    second, _ = build_trainer(perturbed_dir, pairs, str(tmp_path / "b"), cfg, str(tiny_model_dir))
    assert second.ref_logps_cache == "hit"
    assert second.train_dataset["ref_chosen_logps"] == first.train_dataset["ref_chosen_logps"]
    assert loss_and_grads(second, len(pairs))[0] == loss_pre
    monkeypatch.undo()

    # Same loss as the reference computed on the fly; other data -> another cache entry.
    live, _ = build_trainer(perturbed_dir, pairs, str(tmp_path / "c"), quick_cfg(), str(tiny_model_dir))
    assert loss_and_grads(live, len(pairs))[0] == pytest.approx(loss_pre, rel=LOSS_RTOL)
    build_trainer(perturbed_dir, pairs[:3], str(tmp_path / "d"), cfg, str(tiny_model_dir))
    assert len(list(cache.glob("ref_logps_*.pt"))) == 2


# ---------------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_flex_attention_equals_two_sequence_forwards(tokenizer, perturbed_dir, pairs):
    """flex attention (compiled; ~30 s on CPU) with a BlockMask, packed rows."""
    model = AutoModelForCausalLM.from_pretrained(
        perturbed_dir, dtype=torch.float32, attn_implementation="sdpa"
    )
    flex = AutoModelForCausalLM.from_pretrained(
        perturbed_dir, dtype=torch.float32, attn_implementation="flex_attention"
    )
    examples = tokenised(tokenizer, pairs)
    batch = SharedPrefixCollator(pack_length=400)(examples)
    with torch.no_grad():
        out = pair_logps(flex, batch, "flex_attention")
        expected_c = torch.stack([two_sequence_logps(model, ex, "chosen") for ex in examples])
        expected_r = torch.stack([two_sequence_logps(model, ex, "rejected") for ex in examples])
    torch.testing.assert_close(out.chosen_logps, expected_c, rtol=LOGP_RTOL, atol=LOGP_ATOL)
    torch.testing.assert_close(out.rejected_logps, expected_r, rtol=LOGP_RTOL, atol=LOGP_ATOL)


@pytest.fixture(scope="module")
def one_process_runs(tiny_model_dir, perturbed_dir, pairs, tmp_path_factory):
    """CLI arguments and the logged steps of the 1-process runs: two-sequence path and shared-prefix path."""
    tmp = tmp_path_factory.mktemp("shared-prefix-dist")
    pairs_file = tmp / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(row) + "\n" for row in pairs[:4]))
    args = [*DPO_CLI, "--pairs", str(pairs_file), "--model", perturbed_dir]
    args += ["--ref-model", str(tiny_model_dir), "--max-steps", "2", "--learning-rate", "1e-3"]
    args += ["--bf16", "false"]  # exactness is checked in fp32 (bf16 autocast is the default where the CPU has it)
    args += ["--warmup-ratio", "0", "--no-resume"]
    runs = {
        "two_seq": [sys.executable, *args, "--batch-size", "4", "--no-shared-prefix"],
        "one": [sys.executable, *args, "--batch-size", "4"],
    }
    steps = {}
    for name, cmd in runs.items():
        run_ok([*cmd, "--out", str(tmp / name)])
        metrics, steps[name] = logged_steps(tmp / name)
        assert metrics["world_size"] == 1
    base = steps["two_seq"]
    assert len(base) == 2 and abs(base[0]["loss"] - math.log(2)) > 1e-2
    return args, tmp, steps


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINE_PARAMS)
def test_two_cpu_processes_match_one_process(engine, one_process_runs, tmp_path):
    """accelerate launch, 2 gloo processes x 2 pairs == 1 process x 4 pairs == the two-sequence path (1e-4 rel),
    under DDP, FSDP2 and DeepSpeed ZeRO-3 (see tests/test_dpo_distributed.py)."""
    args, one_dir, one_steps = one_process_runs
    steps = dict(one_steps)  # the fixture's dict is shared by both engines
    runs = {"two": [*accelerate_2proc(engine), *args, "--batch-size", "2"]}
    if engine == "ddp":
        runs["two_pre"] = [
            *accelerate_2proc(engine), *args, "--batch-size", "2",
            "--precompute-ref-log-probs", "--ref-cache-dir", str(tmp_path / "cache"),
        ]  # fmt: skip
    for name, cmd in runs.items():
        run_ok([*cmd, "--out", str(tmp_path / name)])
        metrics, steps[name] = logged_steps(tmp_path / name)
        assert metrics["world_size"] == 2, name
        assert metrics["distributed_type"] == DISTRIBUTED_TYPE[engine], name
    if engine == "ddp":
        assert list((tmp_path / "cache").glob("ref_logps_*.pt"))
    else:  # the final save gathered the shards into the same weights
        assert max_weight_diff(one_dir / "one", tmp_path / "two") < WEIGHT_ATOL
    base = steps["two_seq"]
    for name in ("one", *runs):
        for a, b in zip(base, steps[name], strict=True):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), name
            assert b["rewards/margins"] == pytest.approx(a["rewards/margins"], rel=1e-4, abs=1e-5), name
