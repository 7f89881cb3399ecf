"""The efficacy study's machinery: `skip` on data specs (a dev split disjoint from train by construction, without
changing the fingerprint of any existing spec), the equal-compute control `hsft-more`, and `supercorrect study`."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from planting import plant_wrong_solutions

from supercorrect import study
from supercorrect.cli import main
from supercorrect.config import RunConfig, load_config
from supercorrect.data import DataSpec, load_problems
from supercorrect.errors import UserError
from supercorrect.io import read_json, sha256_json
from supercorrect.pipeline import run_pipeline, stages_of

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ skip


def _pin_config() -> RunConfig:
    return RunConfig.model_validate({
        "name": "pin", "run_root": "/tmp/pin-runs",
        "data": {
            "train": {"kind": "synthetic", "split": "train", "n": 200, "seed": 0, "min_steps": 2, "max_steps": 3},
            "test": {"kind": "synthetic", "split": "test", "n": 500, "seed": 0, "min_steps": 2, "max_steps": 3},
            "gsm8k_test": {"kind": "gsm8k", "path": "x/test.jsonl", "hub": "openai/gsm8k:main", "split": "test",
                           "n": 300, "optional": True},
        },
        "evaluate": {"sets": ["test", "gsm8k_test"]},
    })  # fmt: skip


def test_fingerprints_of_specs_without_skip_are_unchanged():
    """Values computed before `skip` existed: a finished run must not redo its stages because of the new key."""
    from supercorrect.stages import evaluate, templates

    cfg = _pin_config()
    assert sha256_json(cfg.data["train"].fingerprint())[:16] == "8da42718ccf567ba"
    # With the seed hashed, as the stages were when `skip` came: the values of that time.
    assert replace(templates.stage(cfg), seeded=True).fingerprint == "36ae8d3bd7683c8a"
    assert replace(evaluate.stage(cfg, "base"), seeded=True).fingerprint == "5f964265c47f696b"
    # Since: greedy evaluation of the base model does not hash the training seed, so every seed shares it. The
    # templates stage keeps the seed (dropping it would redo every finished stage downstream of it).
    assert templates.stage(cfg).fingerprint == "36ae8d3bd7683c8a"
    assert evaluate.stage(cfg, "base").fingerprint == "7d20bb2b078afc89"
    # A spec that does skip is a different set: its stages' fingerprints change.
    skipped = cfg.model_copy(update={"data": {**cfg.data, "train": cfg.data["train"].model_copy(update={"skip": 200})}})
    assert skipped.data["train"].fingerprint()["skip"] == 200
    assert templates.stage(skipped).fingerprint != "36ae8d3bd7683c8a"


def test_seed_enters_only_the_stages_that_draw_from_it():
    """Greedy evaluation of the base model does not depend on the training seed; sampling does, and so does
    everything trained (its seed, and its inputs' fingerprints). The templates stage keeps the seed hashed."""
    from supercorrect.stages import evaluate, hsft, sample, templates

    a = _pin_config()
    b = a.model_copy(update={"seed": 7})
    assert templates.stage(a).fingerprint != templates.stage(b).fingerprint
    assert evaluate.stage(a, "base").fingerprint == evaluate.stage(b, "base").fingerprint
    assert evaluate.stage(a, "base", "cot").fingerprint == evaluate.stage(b, "base", "cot").fingerprint
    assert sample.stage(a).config_hash != sample.stage(b).config_hash
    assert hsft.stage(a).config_hash != hsft.stage(b).config_hash
    # Sampled evaluation (`evaluate.samples`, drawn at seed + 1) makes the base model's evaluation seed-dependent.
    sa, sb = (c.model_copy(update={"evaluate": c.evaluate.model_copy(update={"samples": 4})}) for c in (a, b))
    assert evaluate.stage(sa, "base").fingerprint != evaluate.stage(sb, "base").fingerprint


def test_skip_gives_a_disjoint_synthetic_set_with_unique_ids():
    train = DataSpec(kind="synthetic", split="train", seed=0, n=200, min_steps=2, max_steps=3)
    dev = train.model_copy(update={"skip": 200})
    both = train.model_copy(update={"n": 400})
    a, b, ab = load_problems(train), load_problems(dev), load_problems(both)
    assert len(a) == len(b) == 200
    assert {p.id for p in a}.isdisjoint(p.id for p in b)
    assert {p.question for p in a}.isdisjoint(p.question for p in b)
    assert [p.id for p in a + b] == [p.id for p in ab]  # the next 200 of the same deterministic stream
    assert [p.question for p in b] == [p.question for p in ab[200:]]
    assert len({p.id for p in a + b}) == 400
    # offset still counts within n, after the skip
    assert [p.id for p in load_problems(dev.model_copy(update={"offset": 150}))] == [p.id for p in ab[350:]]


def test_skip_on_a_file_counts_good_problems(tmp_path):
    rows = [{"question": f"q{i}?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(6)]
    rows.insert(2, {"question": "bad", "answer": "no answer line"})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = DataSpec(kind="gsm8k", path=str(path), n=2, skip=2, skip_bad_rows=True)
    first = DataSpec(kind="gsm8k", path=str(path), n=2, skip_bad_rows=True)
    assert [p.question for p in load_problems(first)] == ["q0?", "q1?"]
    assert [p.question for p in load_problems(spec)] == ["q2?", "q3?"]
    assert [p.question for p in load_problems(spec.model_copy(update={"offset": 1}))] == ["q3?", "q4?"]


# ------------------------------------------------------------------------------------------------ configs


def test_study_yaml_valid_and_demo_not_slower():
    cfg = load_config(REPO / "configs" / "study.yaml")
    stages = stages_of(cfg)
    assert stages.index("cross-dpo") < stages.index("hsft-more") < stages.index("eval-hsft-more")
    from supercorrect.recipes.supercorrect import STUDY_STAGES, SUPERCORRECT

    assert tuple(stages) == STUDY_STAGES and set(STUDY_STAGES) - set(SUPERCORRECT.stages) == {"hsft-more",
                                                                                                "eval-hsft-more"}
    assert cfg.study.seeds == [0, 1, 2] and cfg.data["dev"].skip == 200 and cfg.data["test"].n == 500
    assert cfg.evaluate.sets == ["test", "gsm8k_test"] and cfg.data["gsm8k_test"].n == 300
    study.check_dev_unseen(cfg, "dev")  # dev shares no question with train
    demo = load_config(REPO / "configs" / "demo.yaml")
    assert "hsft-more" not in stages_of(demo)
    per_seed = study.seed_configs(REPO / "configs" / "study.yaml", "dev", [0, 5])
    assert [(c.name, c.seed, c.variant) for c in per_seed] == [("study-s0", 0, "study"), ("study-s5", 5, "study")]
    assert all(c.evaluate.sets == ["dev"] and c.evaluate.self_correction_sets == ["dev"] for c in per_seed)
    test = study.seed_configs(REPO / "configs" / "study.yaml", "test")
    assert [c.seed for c in test] == [0, 1, 2] and test[0].evaluate.sets == ["test", "gsm8k_test"]


def test_study_refuses_a_dev_set_that_was_trained_on(tmp_path):
    raw = yaml.safe_load((REPO / "configs" / "study.yaml").read_text())
    raw["data"]["dev"]["skip"] = 150  # overlaps the last 50 training problems
    path = tmp_path / "overlap.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="shares 50 problems with 'train'"):
        study.seed_configs(path, "dev")
    raw["data"].pop("dev")
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match="no data set named 'dev'"):
        study.seed_configs(path, "dev")
    with pytest.raises(UserError, match="each seed at most once"):
        study.seed_configs(REPO / "configs" / "study.yaml", "dev", [1, 1])
    with pytest.raises(UserError, match="comma-separated integers"):
        study.parse_seeds("0,x")


# ------------------------------------------------------------------------------------------------ tiny model


def tiny_config(tmp_path: Path, model: Path, stages: list[str], **extra) -> Path:
    cfg = {
        "name": "tiny",
        "run_root": str(tmp_path / "runs"),
        "student": {"model": str(model)},
        "generation": {"batch_size": 8, "max_new_tokens": 16},
        "data": {
            "train": {"kind": "synthetic", "split": "train", "n": 12, "max_steps": 3},
            "dev": {"kind": "synthetic", "split": "train", "n": 4, "skip": 12, "max_steps": 3},
            "test": {"kind": "synthetic", "split": "test", "n": 4, "max_steps": 3},
        },
        "hsft": {"epochs": 1, "batch_size": 4, "max_length": 384, "learning_rate": 1e-3, "logging_steps": 1},
        "sample": {"k": 2, "max_new_tokens": 16},
        "cross_dpo": {"epochs": 1, "batch_size": 1, "max_length": 512},
        "evaluate": {"sets": ["test"]},
        "stages": stages,
        **extra,
    }
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.mark.slow  # ~4 min on the shared 2-core machine: three trainings and four evaluations
def test_hsft_more_takes_as_many_steps_as_cross_dpo_from_hsft(tmp_path, tiny_model_dir, monkeypatch):
    """Cross-DPO on 6 planted pairs, batch 1: 6 steps; one HSFT epoch is 3 steps (12 rows, batch 4), so hsft-more
    has to cycle over its rows twice to take as many steps, starting from the HSFT model."""
    from supercorrect.stages import hsft_more

    path = tiny_config(tmp_path, tiny_model_dir, ["templates", "hsft", "sample"])
    cfg = load_config(path)
    run_pipeline(cfg)
    run = cfg.run_dir
    plant_wrong_solutions(cfg, 6)
    calls = []
    rates = []
    real = hsft_more.train_sft

    def spy(model_path, rows, out, settings, **kw):
        calls.append((model_path, len(rows), kw.get("max_steps")))
        rates.append(settings.learning_rate)
        return real(model_path, rows, out, settings, **kw)

    monkeypatch.setattr(hsft_more, "train_sft", spy)
    run_pipeline(cfg, only=["eval-hsft", "correct", "pairs", "cross-dpo", "eval-cross-dpo", "hsft-more",
                                 "eval-hsft-more", "report"])  # fmt: skip
    xdpo = read_json(run / "cross-dpo" / "manifest.json")["counts"]
    more = read_json(run / "hsft-more" / "manifest.json")
    hsft = read_json(run / "hsft" / "manifest.json")["counts"]
    assert xdpo["steps"] == 6 and hsft["steps"] == 3
    assert more["counts"] == {"examples": 12, "steps": 6, "cross_dpo_steps": 6}
    assert more["inputs"] == ["hsft", "cross-dpo"] and more["start_model"] == str(run / "hsft" / "model")
    assert calls == [(str(run / "hsft" / "model"), 12, 6)]
    assert (run / "hsft-more" / "model" / "config.json").exists()
    assert "equal-compute control" in (run / "hsft-more" / "model" / "README.md").read_text()
    assert (run / "eval-hsft-more" / "test" / "samples.jsonl").exists()
    report = (run / "report" / "report.md").read_text()
    assert "| HSFT + more HSFT | HSFT | test | 4 |" in report  # the control against its parent, paired
    assert "| HSFT + Cross-DPO | HSFT + more HSFT | test | 4 |" in report  # and Cross-DPO against the control
    assert "curves-hsft-more.png" in report

    # A change of the Cross-DPO settings redoes hsft-more (its step count may change), not hsft.
    before = more["fingerprint"]
    hsft_time = (run / "hsft" / "manifest.json").stat().st_mtime
    cfg2 = load_config(path, {"cross_dpo.max_pairs": 4})
    run_pipeline(cfg2, only=["cross-dpo", "hsft-more"])
    more2 = read_json(run / "hsft-more" / "manifest.json")
    assert more2["fingerprint"] != before and more2["counts"]["steps"] == 4
    assert (run / "hsft" / "manifest.json").stat().st_mtime == hsft_time
    assert calls[-1] == (str(run / "hsft" / "model"), 12, 4)
    assert rates == [cfg.hsft.learning_rate] * 2

    # hsft_more.learning_rate: the control's own rate redoes the control only; left at its default (None: hsft's
    # rate) the section does not count, so a finished control is not redone.
    assert hsft_more.stage(load_config(path, {"cross_dpo.max_pairs": 4, "hsft_more.learning_rate": None})
                           ).fingerprint == more2["fingerprint"]  # fmt: skip
    cfg3 = load_config(path, {"cross_dpo.max_pairs": 4, "hsft_more.learning_rate": 1e-5})
    run_pipeline(cfg3, only=["cross-dpo", "hsft-more"])
    more3 = read_json(run / "hsft-more" / "manifest.json")
    assert more3["fingerprint"] != more2["fingerprint"] and rates[-1] == 1e-5 and len(rates) == 3
    assert (run / "hsft" / "manifest.json").stat().st_mtime == hsft_time
    assert '"learning_rate": 1e-05,' in (run / "hsft-more" / "model" / "README.md").read_text()
    with pytest.raises(UserError, match="hsft_more.learning_rate"):
        load_config(path, {"hsft_more.learning_rate": 0})


@pytest.mark.slow  # ~2 min on the shared 2-core machine: two trainings, six evaluations
def test_study_two_seeds_tiny(tmp_path, tiny_model_dir, capsys):
    """A 2-seed study on a tiny config: one run per seed, dev phase evaluates the dev set only, the compare table
    pools both seeds; the test phase reuses the trained models and evaluates the config's sets."""
    stages = ["eval-base", "templates", "hsft", "eval-hsft", "report"]
    path = tiny_config(tmp_path, tiny_model_dir, stages, study={"seeds": [0, 1]})
    assert main(["study", str(path), "--phase", "dev"]) == 0
    runs = tmp_path / "runs"
    for seed in (0, 1):
        run = runs / f"tiny-s{seed}"
        man = read_json(run / "hsft" / "manifest.json")
        assert man["run"] == {"name": f"tiny-s{seed}", "variant": "tiny", "seed": seed}
        assert set(read_json(run / "eval-hsft" / "summary.json")) == {"dev"}
    out = runs / "tiny-dev-compare"
    md = (out / "compare.md").read_text()
    assert "| tiny | HSFT | dev | pooled (0,1) | 8 |" in md  # both seeds' 4 dev problems, one variant
    rows = list(read_jsonl_csv(out / "compare.csv"))
    assert {r["scope"] for r in rows if r["model"] == "hsft"} == {"seed 0", "seed 1", "pooled", "seed mean"}
    assert {r["set"] for r in rows} == {"dev"}
    assert "supercorrect compare" in capsys.readouterr().out

    hsft_time = (runs / "tiny-s0" / "hsft" / "manifest.json").stat().st_mtime
    assert main(["study", str(path), "--phase", "test", "--seeds", "0"]) == 0
    assert (runs / "tiny-s0" / "hsft" / "manifest.json").stat().st_mtime == hsft_time  # trained models reused
    assert set(read_json(runs / "tiny-s0" / "eval-hsft" / "summary.json")) == {"test"}
    rows = list(read_jsonl_csv(runs / "tiny-test-compare" / "compare.csv"))
    assert {r["set"] for r in rows} == {"test"} and {r["seeds"] for r in rows} == {"0"}


def test_study_computes_seed_independent_stages_once(tmp_path, tiny_model_dir, monkeypatch, capsys):
    """A 2-seed study evaluates the base model once: seed 1's run gets seed 0's finished eval-base (and templates)
    folder, its manifest holding the same fingerprint (templates, which hash the seed, are not shared); a stage whose fingerprint differs is never copied."""
    from supercorrect.stages import evaluate

    calls = []
    real = evaluate.run

    def spy(cfg, tag="base", prompt=None):
        calls.append((cfg.name, tag))
        return real(cfg, tag, prompt)

    monkeypatch.setattr(evaluate, "run", spy)
    path = tiny_config(tmp_path, tiny_model_dir, ["eval-base", "templates", "report"], study={"seeds": [0, 1]})
    res = study.run_study(path, "dev")
    assert calls == [("tiny-s0", "base")]  # computed for the first seed only
    s0, s1 = (c.run_dir for c in res.runs)
    for name in ("eval-base",):
        a, b = read_json(s0 / name / "manifest.json"), read_json(s1 / name / "manifest.json")
        assert a["fingerprint"] == b["fingerprint"] and a["finished_at"] == b["finished_at"]
        assert b["shared_from"] == {"run": "tiny-s0", "seed": 0, "dir": str(s0 / name)}
        assert b["run"] == {"name": "tiny-s1", "variant": "tiny", "seed": 1} and "shared_from" not in a
    assert (s0 / "eval-base" / "dev" / "samples.jsonl").read_bytes() == (s1 / "eval-base" / "dev" /
                                                                        "samples.jsonl").read_bytes()
    err = capsys.readouterr().err
    assert "tiny-s1: stage eval-base shared from run tiny-s0" in err and "stage templates shared" not in err
    assert "[eval-base] up to date, skipped" in err  # seed 1's pipeline found it finished
    assert "Shared from another seed's run" in (s1 / "report" / "report.md").read_text()
    md = (res.compare_dir / "compare.md").read_text()
    assert "| tiny | base (HT prompt) | dev | pooled (0,1) | 8 |" in md

    # Sampled evaluation draws from the seed: a third seed's eval-base has its own fingerprint and is not copied.
    sampled = study.seed_configs(path, "dev", [2], {"evaluate.samples": 2})[0]
    assert study.share_finished(sampled, res.runs) == []
    assert not (sampled.run_dir / "eval-base").exists()
    # Nor is a finished stage whose manifest's fingerprint differs from the one this run computes.
    man = read_json(s0 / "eval-base" / "manifest.json")
    (s0 / "eval-base" / "manifest.json").write_text(json.dumps({**man, "fingerprint": "0" * 16}))
    other = study.seed_configs(path, "dev", [3])[0]
    assert study.share_finished(other, res.runs[:1]) == []
    assert not (other.run_dir / "eval-base").exists()


def read_jsonl_csv(path: Path):
    import csv

    with path.open(newline="") as f:
        yield from csv.DictReader(f)


def test_study_cli_errors(tmp_path, capsys):
    assert main(["study", str(REPO / "configs" / "study.yaml"), "--seeds", "a"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
