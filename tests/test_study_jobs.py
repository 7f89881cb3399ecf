"""`supercorrect study --jobs N`: the seeds as concurrent child processes give the same runs and the same table as
the seeds in turn, each child logs to `<run_root>/<run>.log`, and a failed seed fails the command, naming it."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
from test_study import tiny_config

from supercorrect import study
from supercorrect.cli import main
from supercorrect.io import read_json

STAGES = ["eval-base", "templates", "hsft", "eval-hsft", "report"]


def _table(runs):
    md = (runs / "tiny-dev-compare" / "compare.md").read_text()
    return [line for line in md.splitlines() if line.startswith("| tiny |")]


@pytest.mark.slow  # ~2 min on the shared 2-core machine: four tiny trainings, child processes importing torch
def test_jobs_two_gives_the_table_of_jobs_one(tmp_path, tiny_model_dir, capsys):
    path = tiny_config(tmp_path, tiny_model_dir, STAGES, study={"seeds": [0, 1]})
    assert main(["study", str(path), "--phase", "dev"]) == 0  # in turn, in this process, torch's default threads
    runs = tmp_path / "runs"
    sequential = _table(runs)
    assert len(sequential) >= 4
    hsft = {s: read_json(runs / f"tiny-s{s}" / "hsft" / "manifest.json") for s in (0, 1)}
    samples = {s: (runs / f"tiny-s{s}" / "eval-hsft" / "dev" / "samples.jsonl").read_bytes() for s in (0, 1)}
    shutil.move(runs, tmp_path / "runs-sequential")
    capsys.readouterr()

    assert main(["study", str(path), "--phase", "dev", "--jobs", "2", "--set", "generation.max_new_tokens=16"]) == 0
    err = capsys.readouterr().err
    assert "seed 0: seed-independent stages eval-base first" in err
    assert "run tiny-s0 started (1 threads" in err and "run tiny-s1 started (1 threads" in err
    assert _table(runs) == sequential  # same accuracies: greedy fp32 on the tiny model, whatever the threads
    for s in (0, 1):
        log = (runs / f"tiny-s{s}.log").read_text()
        assert f"--only-seed {s}" in log and "[run] tiny-s" in log
        man = read_json(runs / f"tiny-s{s}" / "hsft" / "manifest.json")
        assert man["counts"] == hsft[s]["counts"] and man["fingerprint"] == hsft[s]["fingerprint"]
        assert man["metrics"]["loss_curve"] == hsft[s]["metrics"]["loss_curve"]  # same training, 1 or 2 threads
        assert (runs / f"tiny-s{s}" / "eval-hsft" / "dev" / "samples.jsonl").read_bytes() == samples[s]
    assert read_json(runs / "tiny-s1" / "eval-base" / "manifest.json")["shared_from"]["run"] == "tiny-s0"
    assert "stage eval-base shared from run tiny-s0" in (runs / "tiny-s1.log").read_text()

    # Resume: everything is finished, so the children skip every stage and the table is the same.
    assert main(["study", str(path), "--phase", "dev", "--jobs", "2"]) == 0
    assert _table(runs) == sequential
    assert "[hsft] up to date, skipped" in (runs / "tiny-s1.log").read_text()


def test_a_failed_seed_fails_the_study_naming_it(tmp_path, tiny_model_dir, capsys):
    """Seed 1's run folder is held by another process (its lock): that child fails at once, seed 0's finishes,
    and the command exits non-zero naming seed 1 with its exit code and the last lines of its log."""
    from supercorrect.io import run_lock

    path = tiny_config(tmp_path, tiny_model_dir, ["templates"], study={"seeds": [0, 1]})
    held = run_lock(study.seed_configs(path, "dev", [1])[0].run_dir)
    try:
        assert main(["study", str(path), "--phase", "dev", "--jobs", "2"]) == 2
    finally:
        held.release()
    err = capsys.readouterr().err
    runs = tmp_path / "runs"
    assert "seed 1 (run tiny-s1) failed with exit code 2" in err and "1 of 2 seeds failed" in err
    assert "another supercorrect process is using this run folder" in err  # the log's last lines
    assert "seed 0: run tiny-s0 finished" in err
    assert (runs / "tiny-s0" / "templates" / "manifest.json").exists()
    assert not (runs / "tiny-dev-compare").exists()


def test_child_command_round_trips_overrides(tmp_path):
    """The child's `--set KEY=VALUE` read back by the CLI give the very overrides of the parent (1e-5 stays a
    float, a list stays a list, a string that looks like a number stays a string)."""
    from supercorrect.cli import _overrides, build_parser

    path = tmp_path / "x.yaml"
    cfgs = [SimpleNamespace(seed=s) for s in (0, 3)]  # the command reads the seeds only
    overrides = {"hsft.learning_rate": 1e-5, "evaluate.sets": ["dev", "test"], "name": "007", "hsft.epochs": 2,
                 "teacher.model": None, "x.flag": True}
    cmd = study._child_command(path, "test", cfgs, overrides, 3, 1, ["eval-base"])
    args = build_parser().parse_args(cmd[3:])
    assert (args.config, args.phase, args.seeds, args.only_seed, args.threads) == (str(path), "test", "0,3", 3, 1)
    assert _overrides(args.set) == overrides and args.only_stages == "eval-base"


def test_jobs_and_threads_must_be_positive(tmp_path, capsys):
    path = tmp_path / "x.yaml"
    path.write_text("name: x\n")
    assert main(["study", str(path), "--jobs", "0"]) == 2
    assert "--jobs and --threads must be at least 1" in capsys.readouterr().err
