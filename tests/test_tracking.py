"""Training curves and tracking: tiny SFT and DPO runs save their per-step log history in the stage folder, the
report draws it as PNG curves (embedded in report.html), `report_to` reaches the Trainer, and with tensorboard
installed TensorBoard event files land in `<stage>/tensorboard/`."""

from __future__ import annotations

import re
from importlib.util import find_spec

import pytest
from run_fixture import make_run_folder

from supercorrect import report, tracking
from supercorrect.config import RunConfig, load_config
from supercorrect.errors import UserError
from supercorrect.io import read_json, read_jsonl, write_json
from supercorrect.trainers.sft_config import SFTConfig

needs_tensorboard = pytest.mark.skipif(find_spec("tensorboard") is None, reason="tensorboard is not installed")


def test_resolve_report_to(monkeypatch):
    monkeypatch.setattr(tracking, "tensorboard_available", lambda: True)
    assert tracking.resolve_report_to("auto") == ["tensorboard"]
    monkeypatch.setattr(tracking, "tensorboard_available", lambda: False)
    assert tracking.resolve_report_to("auto") == "none"
    assert tracking.resolve_report_to("none") == "none"
    assert tracking.resolve_report_to([]) == "none"
    assert tracking.resolve_report_to("tensorboard, wandb") == ["tensorboard", "wandb"]
    assert tracking.resolve_report_to(["wandb"]) == ["wandb"]
    with pytest.raises(ValueError, match="'auto' cannot be combined"):
        tracking.resolve_report_to("auto,wandb")


def test_report_to_is_operational_and_validated(tmp_path):
    """Changing where logs go never redoes a finished training stage; a bad value is a one-line config error."""
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndata: {train: {kind: synthetic, split: train, n: 2}}\n")
    base = load_config(path)
    for key in ("hsft.report_to", "cross_dpo.report_to"):
        assert load_config(path, {key: "wandb"}).section_hash("hsft", "cross_dpo") == base.section_hash("hsft", "cross_dpo")
    assert load_config(path, {"hsft.epochs": 2}).section_hash("hsft") != base.section_hash("hsft")
    with pytest.raises(UserError, match=r"hsft\.report_to: Value error, 'auto' cannot be combined"):
        load_config(path, {"hsft.report_to": ["auto", "wandb"]})


def _sft_rows(n: int = 6) -> list[dict]:
    return [{"prompt": f"What is {i} + {i}?", "completion": f"<Step1>\n{i} + {i} = {2 * i}\n</Step1>\n<Answer>{2 * i}</Answer>"}
            for i in range(n)]  # fmt: skip


def _cfg(tmp_path) -> RunConfig:
    return RunConfig(name="fixture", run_root=str(tmp_path / "runs"),
                     data={"train": {"kind": "synthetic", "split": "train", "n": 2}})  # fmt: skip


def test_sft_history_curves_and_report(tmp_path, tiny_model_dir):
    """A tiny HSFT run writes log_history.json; the report stage draws it into report.md and report.html."""
    from supercorrect.trainers.sft import train_sft

    run = make_run_folder(tmp_path)  # stage-2 fixture artifacts beside it, so report.html has a browser too
    stage_dir = run / "hsft"
    cfg = SFTConfig(epochs=2, batch_size=2, max_length=128, learning_rate=1e-3, logging_steps=1, report_to="none")
    metrics = train_sft(str(tiny_model_dir), _sft_rows(), stage_dir, cfg)
    history = read_json(stage_dir / tracking.HISTORY_FILE)["log_history"]
    steps = [h for h in history if "loss" in h]
    assert len(steps) == metrics["steps"] == 6
    assert all({"loss", "learning_rate", "grad_norm", "step"} <= set(h) for h in steps)
    assert not (stage_dir / tracking.TENSORBOARD_DIR).exists()  # report_to: none
    write_json(stage_dir / "manifest.json", {"stage": "hsft", "counts": {}, "metrics": metrics})

    report.run(_cfg(tmp_path))
    md = (run / "report" / "report.md").read_text()
    assert "## Training curves" in md and "![HSFT training curves](curves-hsft.png)" in md
    png = run / "report" / "curves-hsft.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    page = (run / "report" / "report.html").read_text()
    assert 'alt="HSFT training curves" src="data:image/png;base64,' in page
    assert len(re.findall(r'<article class="item"', page)) == 3
    # The problem text comes from the run's own data set when the ids match (synthetic train problems).
    assert "(problem text not available)" in page


def test_dpo_history_has_reward_curves(tmp_path, tiny_model_dir):
    from supercorrect.trainers.dpo import CrossDPOConfig, train_cross_dpo

    run = make_run_folder(tmp_path)
    pairs = read_jsonl(run / "pairs" / "pairs.jsonl")
    stage_dir = tmp_path / "cross-dpo"
    cfg = CrossDPOConfig(epochs=2, batch_size=1, max_length=256, logging_steps=1, report_to="none",
                         tracking_dir=str(stage_dir))  # fmt: skip
    train_cross_dpo(str(tiny_model_dir), pairs * 2, str(stage_dir / "model"), cfg)
    history = tracking.load_history(stage_dir)
    assert history is not None and (stage_dir / tracking.HISTORY_FILE).exists()
    steps, margins = tracking.series(history, "rewards/margins")
    assert len(steps) == 8 and steps == sorted(steps)
    assert tracking.series(history, "rewards/accuracies")[0] == steps
    assert tracking.plot_curves(history, "Cross-DPO", tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 5000
    assert not tracking.plot_curves([{"step": 1, "train_runtime": 3.0}], "empty", tmp_path / "e.png")


def test_history_of_older_runs_is_read_from_the_metrics_file(tmp_path):
    write_json(tmp_path / "model" / "cross_dpo_metrics.json", {"log_history": [{"step": 1, "loss": 0.69}]})
    assert tracking.load_history(tmp_path) == [{"step": 1, "loss": 0.69}]
    assert tracking.load_history(tmp_path / "none") is None


@needs_tensorboard
def test_tensorboard_event_files(tmp_path, tiny_model_dir):
    """report_to 'auto' with tensorboard installed: event files in <stage>/tensorboard, not in the checkpoints."""
    from supercorrect.trainers.sft import train_sft

    cfg = SFTConfig(epochs=1, batch_size=2, max_length=128, logging_steps=1)  # report_to: auto
    train_sft(str(tiny_model_dir), _sft_rows(4), tmp_path / "hsft", cfg)
    events = list((tmp_path / "hsft" / tracking.TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "train/loss" in acc.Tags()["scalars"]
    assert len(acc.Scalars("train/loss")) == 2
    assert not list((tmp_path / "hsft").glob("checkpoints/runs"))
