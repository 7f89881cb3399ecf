"""precision.py: `auto` picks bf16 only where the hardware runs it natively, fp32 elsewhere, and a machine
without bf16 (mocked: CI machines differ, some have AMX, some avx512_bf16, some neither) runs everything in
fp32; bf16 autocast training tracks fp32 on the tiny model."""

from __future__ import annotations

import pytest
import torch

from supercorrect import precision
from supercorrect.config import RunConfig
from supercorrect.trainers.dpo_config import CrossDPOConfig
from supercorrect.trainers.sft_config import SFTConfig


@pytest.fixture
def no_bf16(monkeypatch):
    """A CPU machine without native bf16: no such flag in /proc/cpuinfo, no GPU."""
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"fpu", "sse2", "avx2", "avx512f"}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def with_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_defaults_are_auto():
    cfg = RunConfig.model_validate({"name": "x", "data": {}})
    assert cfg.student.dtype == "auto" and cfg.hsft.bf16 == "auto" and cfg.cross_dpo.bf16 == "auto"
    assert SFTConfig(bf16=True).bf16 is True and CrossDPOConfig(bf16=False).bf16 is False
    with pytest.raises(ValueError):
        SFTConfig(bf16="sometimes")


def test_auto_is_fp32_without_native_bf16(no_bf16):
    ok, why = precision.native_bf16("cpu")
    assert not ok and "avx512_bf16" in why
    assert precision.generation_precision("auto").dtype == "float32"
    t = precision.training_precision("auto")
    assert t.dtype == "float32" and not t.bf16 and t.reason == why
    assert precision.training_weights_dtype("auto") == "float32"


def test_auto_is_bf16_with_native_bf16(with_bf16):
    assert precision.generation_precision("auto", "cpu").dtype == "bfloat16"
    assert precision.training_precision("auto", "cpu").bf16
    assert precision.training_weights_dtype("auto") == "float32"  # master weights stay fp32


def test_oneDNN_without_bf16_kernels_is_fp32(with_bf16, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert precision.generation_precision("auto", "cpu").dtype == "float32"


def test_arm_bf16_flag_is_not_x86_bf16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "bf16"}))
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    assert not precision.native_bf16("cpu")[0]


def test_explicit_settings_are_kept(no_bf16):
    assert precision.generation_precision("bfloat16").dtype == "bfloat16"
    assert precision.training_precision(True).bf16 and not precision.training_precision(False).bf16
    assert precision.training_weights_dtype("bfloat16") == "bfloat16"


def test_gpu_without_bf16_is_fp32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert precision.generation_precision("auto", "cuda").dtype == "float32"


def test_real_cpu_answer_is_consistent():
    """Whatever this machine is, the answer agrees with its flags (runs on every CI machine kind)."""
    ok, why = precision.native_bf16("cpu")
    flags = precision.cpu_flags()
    if ok:
        assert {"avx512_bf16", "amx_bf16", "bf16"} & flags
    assert why


def test_everything_fp32_on_a_machine_without_bf16(no_bf16, tiny_model_dir, tmp_path):
    """Generation loads fp32 weights and training does not autocast when `auto` finds no bf16."""
    from supercorrect.generation import SamplingSettings, TransformersBackend
    from supercorrect.trainers.sft import train_sft

    backend = TransformersBackend(str(tiny_model_dir), dtype="auto", batch_size=4, device="cpu")
    assert backend.model.dtype == torch.float32 and backend.describe()["precision"]["dtype"] == "float32"
    assert backend.generate(["What is 1+1?"], SamplingSettings(max_new_tokens=3))[0][0].n_tokens <= 3
    rows = [{"prompt": f"What is {i}+{i}?", "completion": f"<Step1>{i}+{i}={2 * i}</Step1><Answer>{2 * i}</Answer>"}
            for i in range(4)]  # fmt: skip
    cfg = SFTConfig(epochs=1, batch_size=4, max_length=64, logging_steps=1)  # bf16: auto
    m = train_sft(str(tiny_model_dir), rows, tmp_path / "sft", cfg, dtype="auto")
    assert m["precision"]["dtype"] == "float32" and m["dtype"] == "torch.float32"


def test_bf16_training_loss_tracks_fp32(tiny_model_dir, tmp_path):
    """bf16 autocast over fp32 weights (what `auto` picks on bf16 hardware) against fp32, same rows and seed:
    each logged loss of a 6-step run within 2% relative (bf16 has 8 mantissa bits: ~0.4% per rounding)."""
    from supercorrect.trainers.sft import train_sft

    rows = [{"prompt": f"What is {i} times {i + 3}?",
             "completion": f"<Step1>{i}*{i + 3}={i * (i + 3)}</Step1>\n<Answer>{i * (i + 3)}</Answer>"}
            for i in range(12)]  # fmt: skip
    curves = {}
    for bf16 in (False, True):
        cfg = SFTConfig(epochs=3, batch_size=6, max_length=96, logging_steps=1, learning_rate=1e-3, bf16=bf16)
        m = train_sft(str(tiny_model_dir), rows, tmp_path / f"sft-{bf16}", cfg, dtype="auto")
        assert m["precision"]["dtype"] == ("bfloat16" if bf16 else "float32")
        curves[bf16] = [loss for _, loss in m["loss_curve"]]
    assert len(curves[False]) == len(curves[True]) == 6
    assert curves[False][-1] < curves[False][0]  # it learns
    for a, b in zip(curves[False], curves[True], strict=True):
        assert abs(a - b) <= 0.02 * abs(a), (curves[False], curves[True])
    assert curves[False] != curves[True]  # autocast really ran in bf16
