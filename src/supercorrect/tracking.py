"""Training curves and experiment tracking for the training stages (HSFT, Cross-DPO, CoT SFT, instance DPO).

Why here and not in each trainer: every trainer is a transformers Trainer, so one helper gives them the same three
things, (1) the full `trainer.state.log_history` saved as `<stage>/log_history.json` (loss, learning rate, grad norm
and, for DPO, reward margins and accuracies, per logged step), which the report reads to draw the curves without
any tracking service; (2) the `report_to` config key passed through to the Trainer, with `"auto"` meaning
TensorBoard event files when tensorboard is installed and nothing otherwise, so no run ever needs the network
(W&B and the other integrations transformers knows work when the user names them, e.g. with `WANDB_MODE=offline`);
(3) the TensorBoard event files written to `<stage>/tensorboard/` instead of transformers' default
`<output_dir>/runs/<date>`, which for the DPO stages would land inside the saved model folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HISTORY_FILE = "log_history.json"
TENSORBOARD_DIR = "tensorboard"

# Curves drawn per training stage, in this order: (panel title, log keys drawn in it). A panel whose keys are never
# logged is left out, so SFT stages get loss / token accuracy / lr / grad norm and DPO stages the reward panels too.
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss",)),
    ("reward margin (chosen - rejected)", ("rewards/margins",)),
    ("reward accuracy (chosen > rejected)", ("rewards/accuracies",)),
    ("token accuracy", ("mean_token_accuracy",)),
    ("learning rate", ("learning_rate",)),
    ("grad norm", ("grad_norm",)),
)


def tensorboard_available() -> bool:
    from importlib.util import find_spec

    return find_spec("tensorboard") is not None or find_spec("tensorboardX") is not None


def resolve_report_to(value: str | Sequence[str] | None) -> list[str] | str:
    """The config's `report_to` as transformers wants it.

    `"auto"` (the default): `["tensorboard"]` when tensorboard is installed, else `"none"`. `"none"` or an empty list:
    `"none"`. Otherwise the named integrations, given as a list or a comma-separated string ("tensorboard,wandb").
    """
    if value is None:
        return "none"
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v and v.strip()]
    if names == ["auto"]:
        return ["tensorboard"] if tensorboard_available() else "none"
    names = [n for n in names if n != "none"]
    if "auto" in names:
        raise ValueError("report_to: 'auto' cannot be combined with other integrations; name them instead")
    return names or "none"


def attach(trainer: Any, stage_dir: str | Path) -> None:
    """Point the trainer's TensorBoard callback (if report_to asked for one) at `<stage_dir>/tensorboard`.

    The callback reads its folder in `on_train_begin` only when none was set, so setting it here, after the Trainer
    is built and before `train()`, is enough.
    """
    try:
        from transformers.integrations import TensorBoardCallback
    except ImportError:  # pragma: no cover - transformers always ships it
        return
    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and os.environ.get("TENSORBOARD_LOGGING_DIR") is None:
            cb.logging_dir = str(Path(stage_dir) / TENSORBOARD_DIR)


def save_history(trainer: Any, stage_dir: str | Path) -> Path | None:
    """Write `trainer.state.log_history` to `<stage_dir>/log_history.json` (main process only)."""
    from .io import write_json

    if not trainer.is_world_process_zero():
        return None
    path = Path(stage_dir) / HISTORY_FILE
    write_json(path, {"log_history": trainer.state.log_history, "global_step": trainer.state.global_step})
    return path


def load_history(stage_dir: str | Path) -> list[dict] | None:
    """The log history of a training stage's folder, or None when it holds none.

    Read from `log_history.json`; for runs made before it existed, from the Cross-DPO metrics file or the newest
    checkpoint's `trainer_state.json`.
    """
    stage_dir = Path(stage_dir)
    candidates = [
        stage_dir / HISTORY_FILE,
        stage_dir / "model" / "cross_dpo_metrics.json",
        *sorted(stage_dir.glob("**/checkpoint-*/trainer_state.json"), key=lambda p: p.stat().st_mtime, reverse=True),
    ]
    for path in candidates:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        history = data.get("log_history") if isinstance(data, dict) else None
        if isinstance(history, list):
            return [h for h in history if isinstance(h, dict)]
    return None


def series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one logged quantity, in step order; entries without it (the final summary) skipped."""
    points = sorted(
        (float(h["step"]), float(h[key]))
        for h in history
        if isinstance(h.get(key), int | float) and isinstance(h.get("step"), int | float)
    )
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(history: list[dict], title: str, path: str | Path) -> bool:
    """Draw the per-step curves of one training stage into a PNG; False when nothing was logged."""
    panels = [(name, keys) for name, keys in PANELS if any(series(history, k)[0] for k in keys)]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, keys) in zip(axes.flat, panels, strict=False):
        for key in keys:
            xs, ys = series(history, key)
            if xs:
                ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, linewidth=1.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if name == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
