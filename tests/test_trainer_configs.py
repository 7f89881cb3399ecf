"""The trainers' settings are one class each (trainers/sft_config.py, trainers/dpo_config.py), used as the run
config's `hsft:` and `cross_dpo:` sections: every field is documented, and every field, the LoRA block's too,
is settable from `--set` (parsed as the CLI parses it, through `load_config`)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Union, get_args, get_origin

import pytest
import yaml

from supercorrect.cli import _overrides
from supercorrect.config import RunConfig, load_config
from supercorrect.trainers.common import LoraConfig
from supercorrect.trainers.dpo_config import CrossDPOConfig
from supercorrect.trainers.sft_config import SFTConfig

GOOD = "name: t\ndata:\n  train: {kind: synthetic, split: train, n: 8}\n"
SECTIONS = {"hsft": SFTConfig, "cross_dpo": CrossDPOConfig}


def other_value(annotation, default):
    """A valid value of the field's type that differs from its default."""
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, types.UnionType):
        if list in [get_origin(a) for a in args]:  # list[str] | str
            return ["q_proj", "v_proj"]
        annotation = args[0]
    if annotation is bool:
        return not default
    if annotation is int:
        return 3 if default in (None, -1) else default + 1
    if annotation is float:
        return 0.01 if default in (None, 0.0) else default / 2
    if annotation is str:
        return "linear" if default != "linear" else "cosine"
    raise AssertionError(f"no test value for {annotation}")


def leaf_fields():
    for section, cls in SECTIONS.items():
        for name, f in cls.model_fields.items():
            if name == "lora":
                for lname, lf in LoraConfig.model_fields.items():
                    yield f"{section}.lora.{lname}", lf.annotation, lf.default
            else:
                yield f"{section}.{name}", f.annotation, f.default


@pytest.mark.parametrize(("key", "annotation", "default"), list(leaf_fields()), ids=lambda v: str(v)[:40])
def test_every_trainer_field_is_settable_with_set(tmp_path: Path, key, annotation, default):
    value = other_value(annotation, default)
    if key == "cross_dpo.loss_type":
        value = "hinge"
    text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(GOOD)
    cfg = load_config(cfg_file, _overrides([f"{key}={text}"]))
    got = cfg
    for part in key.split("."):
        got = getattr(got, part)
    assert got == value and got != default


def test_run_config_sections_are_the_trainer_classes():
    fields = RunConfig.model_fields
    assert fields["hsft"].annotation is SFTConfig and fields["cross_dpo"].annotation is CrossDPOConfig


@pytest.mark.parametrize("cls", [SFTConfig, CrossDPOConfig, LoraConfig])
def test_every_field_is_documented_once(cls):
    """Each field carries its docstring (pydantic reads it into the field's description, which the trainer's
    command-line help shows): one home for what a knob means."""
    undocumented = [name for name, f in cls.model_fields.items() if not (f.description or "").strip()]
    assert undocumented == []


def test_paper_values_are_the_defaults():
    sft, dpo = SFTConfig(), CrossDPOConfig()
    assert (sft.epochs, sft.learning_rate, sft.lr_scheduler, sft.warmup_ratio) == (4, 2e-5, "cosine", 0.02)
    assert (dpo.epochs, dpo.learning_rate, dpo.lr_scheduler, dpo.warmup_ratio, dpo.beta) == (8, 1e-6, "cosine", 0.05, 0.4)


def test_unknown_trainer_key_is_refused(tmp_path: Path):
    from supercorrect.errors import UserError

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(GOOD)
    with pytest.raises(UserError, match="cross_dpo.pack_lenght: unknown key"):
        load_config(cfg_file, _overrides(["cross_dpo.pack_lenght=4"]))
