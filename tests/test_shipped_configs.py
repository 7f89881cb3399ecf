"""Every config shipped under configs/ (recursively, so recipes in sub-folders are covered) validates, and each of
its data sets loads wherever its file exists here; a set whose file is absent is skipped with the reason.

A preset that validates but points at the wrong place (a `../shared/data` that resolves to configs/../shared)
is caught by the data half: with the real data folder beside the repository every GSM8K/MATH path must load.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from supercorrect.config import load_config
from supercorrect.data import load_problems
from supercorrect.pipeline import stages_of

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / "configs").rglob("*") if p.suffix in (".yaml", ".yml"))
SHARED_DATA = REPO.parent / "shared" / "data"


def test_configs_are_found() -> None:
    assert len(CONFIGS) >= 4, CONFIGS  # demo, stage1, the two GPU presets, the official-eval preset


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_config_validates(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.data, f"{path}: no data sets"
    stages = stages_of(cfg)  # also checks that every stage name is known
    used = [("evaluate.sets", s) for s in cfg.evaluate.sets]
    if "templates" in stages:
        used.append(("templates.data", cfg.templates.data))
    if "sample" in stages:
        used.append(("sample.data", cfg.sample.data))
    for field, name in used:
        assert name in cfg.data, f"{path}: {field} names {name!r}, not a data set (have {sorted(cfg.data)})"


DATA_CASES = [(path, name) for path in CONFIGS for name in load_config(path).data]


@pytest.mark.parametrize(
    ("path", "name"), DATA_CASES, ids=[f"{p.relative_to(REPO / 'configs')}:{n}" for p, n in DATA_CASES]
)
def test_config_data_loads(path: Path, name: str) -> None:
    cfg = load_config(path)
    spec = cfg.data[name]
    if spec.kind == "hf":
        pytest.skip(f"{name}: a hub dataset ({spec.name}); no network in tests")
    file = spec.resolved_path(cfg.base_dir)
    if file is not None and not file.is_file():
        if SHARED_DATA.is_dir() and "shared/data" in (spec.path or ""):
            pytest.fail(f"{name}: {spec.path} resolves to {file.resolve()}, not into {SHARED_DATA.resolve()}")
        pytest.skip(f"{name}: {file} not present on this machine")
    small = spec.model_copy(update={"n": min(spec.n or 50, 50)})
    problems = load_problems(small, cfg.base_dir)
    assert problems, f"{name}: no problems loaded from {file or spec.kind}"
    assert all(p.question and p.answer for p in problems)
