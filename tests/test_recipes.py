"""Recipes: each names existing stages in a runnable order and existing config sections; a run config picks one."""

from __future__ import annotations

from pathlib import Path

import pytest

from supercorrect.cli import main
from supercorrect.config import RunConfig, load_config
from supercorrect.errors import UserError
from supercorrect.pipeline import stages_of
from supercorrect.recipes.registry import RECIPES
from supercorrect.stages.registry import STAGES

REPO = Path(__file__).resolve().parents[1]
GOOD = "name: t\ndata:\n  train: {kind: synthetic, split: train, n: 8}\n"


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_names_known_stages_and_sections(name):
    r = RECIPES[name]
    assert r.name == name and r.summary and "\n" not in r.summary
    assert [s for s in r.stages if s not in STAGES] == []
    assert [s for s in r.sections if s not in RunConfig.model_fields] == []
    assert len(set(r.stages)) == len(r.stages)


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_runs_each_stage_after_its_inputs(tmp_path: Path, name):
    """A stage's upstream stages (its `inputs`) come earlier in the recipe."""
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(GOOD + "evaluate: {sets: [train]}\n")
    cfg = load_config(cfg_file, {"recipe": name})
    seen: set[str] = set()
    for stage in RECIPES[name].stages:
        missing = [i for i in STAGES[stage].make(cfg).inputs if i not in seen]
        assert missing == [], f"{name}: {stage} before {missing}"
        seen.add(stage)


def test_supercorrect_is_the_default_and_the_old_default_stages():
    assert RunConfig.model_fields["recipe"].default == "supercorrect"
    assert list(RECIPES["supercorrect"].stages) == [
        "eval-base", "templates", "hsft", "eval-hsft", "sample", "correct", "pairs", "cross-dpo", "eval-cross-dpo",
        "cot-sft", "eval-cot-sft", "instance-dpo", "eval-instance-dpo", "report",
    ]  # fmt: skip


def test_config_picks_recipe_and_may_still_pick_stages(tmp_path: Path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(GOOD)
    assert stages_of(load_config(cfg_file)) == list(RECIPES["supercorrect"].stages)
    assert stages_of(load_config(cfg_file, {"recipe": "stage1"})) == list(RECIPES["stage1"].stages)
    assert stages_of(load_config(cfg_file, {"recipe": "stage1", "stages": ["eval-base"]})) == ["eval-base"]
    with pytest.raises(UserError, match="recipe: Value error, unknown recipe .nope."):
        load_config(cfg_file, {"recipe": "nope"})


def test_presets_name_their_recipe_in_the_header():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        head = path.read_text().splitlines()[:2]
        assert head[0] == f"# Recipe: {cfg.recipe} " or head[0].startswith(f"# Recipe: {cfg.recipe} "), path
        study = f"# Run: supercorrect study configs/{path.name} --phase "  # a study config (study.py): its phases
        assert head[1] == f"# Run: supercorrect run configs/{path.name}" or head[1].startswith(study), path


def test_cli_lists_recipes_one_line_each(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(RECIPES)
