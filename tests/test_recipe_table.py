"""Stage `recipe-table` on a run folder written by the stages' own writers, with planted per-problem correctness,
so that every number in the table is known by hand (no model: the stage only reads manifests and graded rows).

The folder holds every stage of recipes `lema` and `stage1` (HSFT evaluated) and only part of `supercorrect` and
`explain`, which must be left out. Hand-computed values: Wilson 95% for 1/29 is [0.0061, 0.1718] and for 15/148 [0.0624, 0.1605]
(Newcombe 1998, Stat. Med. 17:857, Table I); exact McNemar for discordant counts 7 and 1 is
2 * (C(8,0) + C(8,1)) / 2^8 = 18/256 = 0.0703, for 5 and 1 it is 2 * 7/64 = 0.21875, for 2 and 0 it is 2/4 = 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_compare import _eval  # one home for an eval stage's artifacts with planted correctness

from supercorrect import stats
from supercorrect.cli import main
from supercorrect.config import RunConfig
from supercorrect.data import generate_synthetic
from supercorrect.io import read_json, write_json
from supercorrect.recipes.lema import LEMA
from supercorrect.recipes.registry import RECIPES
from supercorrect.stages import Stage, recipe_table

N = 29
PROBLEMS = generate_synthetic(N, seed=0, split="test", max_steps=3)
RIGHT = {"base": {0}, "lema": set(range(1, 8)), "lema-plain": {0, 1, 2}}  # lema-corrected: summary only, 15/148
SECONDS = 1.25  # each of lema's 13 stages
TEACHER = {"templates": (50, 5), "correct": (100, 20)}  # prompt, completion tokens
TRAINED = {"hsft": 1000, "lema": 400, "lema-corrected": 390, "lema-plain": 395}  # tokens per epoch
EPOCHS = 2


def _patch(cfg: RunConfig, name: str, **fields) -> None:
    path = Stage(cfg, recipe_table._folder(cfg, name)).manifest_path
    write_json(path, {**read_json(path), **fields})


def make_run(root: Path, prompt: str = "ht") -> RunConfig:
    cfg = RunConfig.model_validate({
        "name": "cmp", "run_root": str(root), "recipe": "compare-recipes",
        "data": {"test": {"kind": "synthetic", "split": "test", "n": N, "max_steps": 3}},
        "evaluate": {"sets": ["test"], "prompt": prompt}, "hsft": {"epochs": EPOCHS}, "stats": {"bootstrap_samples": 2000},
    })  # fmt: skip
    for name in LEMA.stages:
        if name == "report":
            continue
        tag = name.removeprefix("eval-")
        if name == "eval-lema-corrected":  # an eval from before per-problem rows: the summary alone
            Stage(cfg, recipe_table._folder(cfg, name)).start().finish({"sets": 1, "new_tokens": 0},
                                            summary={"test": {"problems": 148, "greedy_accuracy": 15 / 148}})  # fmt: skip
        elif name.startswith("eval-"):
            _eval(cfg, tag, RIGHT[tag], problems=PROBLEMS)
        else:
            Stage(cfg, name).start().finish({"new_tokens": 300} if name == "sample" else {})
        more: dict = {"seconds": SECONDS}
        if name in TEACHER:
            more["teacher_usage"] = {"prompt_tokens": TEACHER[name][0], "completion_tokens": TEACHER[name][1]}
        if name in TRAINED:
            more["metrics"] = {"tokens_per_epoch": TRAINED[name]}
        _patch(cfg, name, **more)
    # With HSFT evaluated, recipe stage1 is complete too; supercorrect (no pairs, cross-dpo, ...) and explain
    # (no solve-based arm) are not, and are left out.
    _eval(cfg, "hsft", set(range(20)), problems=PROBLEMS)
    return cfg


@pytest.fixture
def run(tmp_path) -> RunConfig:
    return make_run(tmp_path / "runs")


def test_rows_numbers_by_hand(run):
    rows = [r for name in RECIPES if name != "compare-recipes" and (r := recipe_table.recipe_row(run, name))]
    assert [r["recipe"] for r in rows] == ["stage1", "lema"]
    stage1, row = rows
    assert stage1["student_trained_tokens"] == EPOCHS * TRAINED["hsft"] and stage1["teacher_tokens"] == 55
    assert [(p["model"], p["vs"], p["model_only"], p["vs_only"]) for p in stage1["paired"]] == [("hsft", "base", 19, 0)]
    # Costs as before: every stage's seconds, teacher prompt + completion, sampled and trained tokens.
    assert row["seconds"] == round(13 * SECONDS, 1) and row["stages"] == 13
    assert row["teacher_tokens"] == 175 and row["student_generated_tokens"] == 300
    assert row["student_trained_tokens"] == EPOCHS * sum(TRAINED.values())
    # Accuracy with the Wilson interval from the rows (1/29, 7/29) or, without rows, from the summary (15/148).
    assert set(row["accuracy"]) == {"lema", "lema-corrected", "lema-plain"}
    base = row["base"]["test"]
    assert base["greedy_accuracy"] == pytest.approx(1 / 29)
    assert (base["interval"]["low"], base["interval"]["high"]) == (pytest.approx(0.0061, abs=5e-5),
                                                                   pytest.approx(0.1718, abs=5e-5))  # fmt: skip
    assert base["interval"]["level"] == 0.95 and base["interval"]["method"] == "wilson"
    fallback = row["accuracy"]["lema-corrected"]["test"]["interval"]
    assert (fallback["low"], fallback["high"]) == (pytest.approx(0.0624, abs=5e-5), pytest.approx(0.1605, abs=5e-5))
    lema = row["accuracy"]["lema"]["test"]["interval"]
    assert lema["low"] == pytest.approx(stats.wilson_interval(7, 29).low) and lema["high"] < 0.43
    # Paired: each trained model with rows against the base, then the recipe's controls that have rows.
    paired = {(p["model"], p["vs"]): p for p in row["paired"]}
    assert list(paired) == [("lema", "base"), ("lema-plain", "base"), ("lema", "lema-plain")]
    p = paired[("lema", "base")]
    assert (p["kind"], p["set"], p["pairs"], p["model_only"], p["vs_only"]) == ("base", "test", 29, 7, 1)
    assert p["diff"] == pytest.approx(6 / 29) and p["mcnemar_p"] == pytest.approx(0.0703125)
    assert p["model_accuracy"] == pytest.approx(7 / 29) and p["vs_accuracy"] == pytest.approx(1 / 29)
    a = [i in RIGHT["lema"] for i in range(N)]
    b = [i in RIGHT["base"] for i in range(N)]
    ref = stats.paired_bootstrap_interval(a, b, 0.95, 2000, 0)  # the run's stats block: 2000 resamples, seed 0
    assert (p["diff_interval"]["low"], p["diff_interval"]["high"]) == (ref.low, ref.high)
    assert p["diff_interval"]["low"] < p["diff"] < p["diff_interval"]["high"]
    c = paired[("lema", "lema-plain")]
    assert (c["kind"], c["model_only"], c["vs_only"], c["mcnemar_p"]) == ("control", 5, 1, pytest.approx(0.21875))
    assert paired[("lema-plain", "base")]["mcnemar_p"] == pytest.approx(0.5)


def test_stage_writes_json_and_markdown(run, capsys):
    path = Path(run.run_dir).parent.parent / "cmp.yaml"
    path.write_text(json.dumps(run.model_dump(mode="json")))
    assert main(["recipe-table", str(path)]) == 0
    rows = read_json(run.run_dir / "recipe-table" / "recipe_table.json")
    assert [r["recipe"] for r in rows] == ["stage1", "lema"]
    assert rows[1]["paired"][0]["mcnemar_p"] == pytest.approx(0.0703125)
    md = read_json(run.run_dir / "recipe-table" / "manifest.json")["report_section"]
    assert md in capsys.readouterr().out
    assert "Base student (`eval-base`, shared by every recipe): test: 3.4 [0.6, 17.2] (n=29)" in md
    assert "lema-corrected test: 10.1 [6.2, 16.0] (n=148)" in md  # 0.16049: Newcombe prints 0.1605
    table_row = next(ln for ln in md.splitlines() if ln.startswith("| lema | lema test: "))
    assert table_row.endswith("| 16.2 | 175 | 300 | 4370 |")  # seconds, teacher, sampled, trained tokens
    line = next(ln for ln in md.splitlines() if ln.startswith("| lema | lema | base | test |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[4:8] == ["29", "24.1", "3.4", "+20.7"] and cells[9:] == ["7", "1", "0.0703"]
    assert "| lema | lema | lema-plain (control) | test | 29 | 24.1 | 10.3 | +13.8 |" in md
    assert "lema-corrected" not in "".join(ln for ln in md.splitlines() if ln.startswith("| lema | lema-"))


def test_every_control_names_eval_stages_of_its_recipe():
    declared = 0
    for r in RECIPES.values():
        for a, b in r.controls:
            assert f"eval-{a}" in r.stages and f"eval-{b}" in r.stages and a != b, (r.name, a, b)
            declared += 1
    assert declared >= 5 and {c for r in RECIPES.values() for c in r.controls} >= {
        ("lema", "lema-plain"), ("elad-sft", "elad-sft-random"), ("reer-sft-high", "reer-sft-draft"),
        ("cross-dpo", "hsft")}  # fmt: skip


def test_cot_evaluated_recipe_is_found(tmp_path):
    """lema.yaml and reer.yaml evaluate with the CoT prompt, so their eval stages write `eval-<tag>-cot`: the
    table must find them there, take `base-cot` as the base student and map the recipe's controls to them."""
    run = make_run(tmp_path / "runs", prompt="cot")
    assert (run.run_dir / "eval-lema-cot").is_dir() and not (run.run_dir / "eval-lema").exists()
    row = recipe_table.recipe_row(run, "lema")
    assert row is not None and set(row["accuracy"]) == {"lema-cot", "lema-corrected-cot", "lema-plain-cot"}
    assert row["base"]["test"]["greedy_accuracy"] == pytest.approx(1 / 29)
    paired = {(p["model"], p["vs"]): (p["kind"], p["model_only"], p["vs_only"]) for p in row["paired"]}
    assert paired == {("lema-cot", "base-cot"): ("base", 7, 1), ("lema-plain-cot", "base-cot"): ("base", 2, 0),
                      ("lema-cot", "lema-plain-cot"): ("control", 5, 1)}  # fmt: skip


def test_generated_tokens_count_every_stage_that_makes_training_data():
    """ELAD's selection sampling and REER's search are student generation spent on training data, like `sample`;
    evaluation tokens are not (the table counts them apart)."""
    g = recipe_table.generated_for_training
    assert g("sample", {"new_tokens": 4612, "samples": 32}) == 4612
    assert g("elad-select", {"inter_new_tokens": 14368, "intra_new_tokens": 1680, "problems": 32}) == 16048
    assert g("reer-search", {"student_new_tokens": 7623, "tokens_scored": 61482}) == 7623
    assert g("eval-hsft", {"new_tokens": 999}) == 0 and g("lema-data", {"base_tokens": 4780}) == 0
