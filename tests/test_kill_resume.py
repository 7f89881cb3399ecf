"""Kill and resume: `supercorrect run` is killed with SIGKILL mid-stage, run again until it finishes, and the
result is compared with an uninterrupted run of the same config in another folder.

Each run is a subprocess in a new session; a kill is `os.killpg(SIGKILL)` on that session, so the grader's
worker processes die with it. Kills are aimed by watching the run folder, the process's own log and the
teacher's server:
- phase A, the templates stage with an OpenAI-compatible teacher: llama.cpp's server with the embedded
  SmolLM2 behind a `CountingProxy` (with its barrier, so that llama.cpp's answer to a request does not depend
  on the requests before it; see tests/servers.py). Kills land while teacher requests are in flight.
- phase B, stages 1 and 2 with the rule-based reference teacher on a tiny random model: kills land inside
  HSFT and Cross-DPO training (`save_steps: 1`, so checkpoints exist; some while a checkpoint is being
  written), inside evaluation, sampling, correction. The tiny random model writes no steps, so between
  `sample` and `correct` the test plants the same wrong step-by-step solutions in both runs (tests/planting.py), to give stage 2
  something to do.
No kill in the default tests is aimed by a delay: each fires on an observable state (a teacher request in
flight after n answers were cached, a new checkpoint on disk), or, where a stage is too quick to catch from
outside (eval-hsft), the process kills itself right after a named shard flush (tests/kill_at.py).

Checked afterwards: the data artifacts are byte-identical to the uninterrupted run's; the trained weights load
and are bit-identical (observed on CPU: the Trainer restores weights, optimizer, scheduler, RNG and data
order, so this is asserted); each training stage resumed from the newest complete checkpoint its last kill
left; the proxy saw exactly the uninterrupted run's requests, and a request was sent again only when the
process that sent it was killed before its answer was in the teacher's cache (counted: still in flight, or
answered but not yet cached); no request whose answer was cached was ever sent again.

The default tests do five aimed kills; `pytest --long` adds seeded random kills (27 planned, >= 20 asserted).
SC_KILL_SEED changes the seed; SC_KILL_REPORT=path.json writes the kill log as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from planting import plant_wrong_solutions
from servers import CountingProxy, Forwarded, ServerProcess, llama_server

from supercorrect.config import load_config
from supercorrect.io import read_json, read_jsonl
from supercorrect.trainers.common import last_checkpoint

KEY_ENV = "SC_KILL_TEST_KEY"
SENTINEL = "sk-SENTINEL-kill-9d2c51e0b7"
TEACHER_MODEL = "smollm2-135m-q4"
POLL_S = 0.01
PROCESS_TIMEOUT_S = 900
KILL_AT = Path(__file__).with_name("kill_at.py")  # the CLI that kills itself at a named point

STAGE1 = ["templates", "hsft", "eval-hsft", "sample"]
STAGE2 = ["correct", "pairs", "cross-dpo"]
CHECKPOINTS = {"hsft": "hsft/checkpoints", "cross-dpo": "cross-dpo/model"}  # where each trainer checkpoints
# Artifacts that must be byte-identical to the uninterrupted run's.
SAME_A = ["templates/hsft.jsonl", "templates/dropped.jsonl"]
SAME_B1 = [*SAME_A, "eval-hsft/test/samples.jsonl", "eval-hsft/test/summary.json", "sample/samples.jsonl"]
SAME_B2 = ["correct/corrections.jsonl", "pairs/pairs.jsonl"]


# ---- configs ---------------------------------------------------------------------------------------------


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def openai_config(root: Path, model: Path, proxy: CountingProxy, n: int) -> Path:
    """Phase A: the templates stage with the OpenAI-compatible teacher behind the counting proxy."""
    return write_config(
        root / "a.yaml",
        {
            "name": "a",
            "run_root": str(root / "runs"),
            "student": {"model": str(model)},
            "teacher": {
                "kind": "openai", "model": TEACHER_MODEL, "base_url": proxy.url, "api_key_env": KEY_ENV,
                "max_tokens": 48, "max_concurrency": 2, "timeout_s": 600, "max_retries": 2,
            },
            "data": {"train": {"kind": "synthetic", "split": "train", "n": n, "max_steps": 2}},
            "stages": ["templates"],
        },
    )  # fmt: skip


def pipeline_config(root: Path, model: Path) -> Path:
    """Phase B: stage 1 and 2 on the tiny model with the reference teacher; checkpoints at every step."""
    return write_config(
        root / "b.yaml",
        {
            "name": "b",
            "run_root": str(root / "runs"),
            "student": {"model": str(model)},
            "teacher": {"kind": "reference"},
            "generation": {"batch_size": 8, "max_new_tokens": 16},
            "data": {
                "train": {"kind": "synthetic", "split": "train", "n": 4, "max_steps": 2},
                "test": {"kind": "synthetic", "split": "test", "n": 4, "max_steps": 2},
            },
            "hsft": {"epochs": 2, "batch_size": 2, "max_length": 320, "learning_rate": 1e-3, "logging_steps": 1,
                     "save_steps": 1},
            "evaluate": {"sets": ["test"], "samples": 2},
            "sample": {"k": 2, "max_new_tokens": 16},
            "correct": {"student_max_new_tokens": 16},
            "cross_dpo": {"epochs": 2, "batch_size": 2, "max_length": 512, "learning_rate": 1e-4,
                          "save_steps": 1},
            "stages": [*STAGE1, *STAGE2],
        },
    )  # fmt: skip


def plant_phase_b(config: Path) -> None:
    """Plant the same wrong solutions in every phase-B run (tests/planting.py says why). The sample stage's own
    `samples.jsonl` is left as it is and its `wrong.jsonl` is kept beside the config as `sampled_wrong.jsonl`:
    both are compared with the uninterrupted run's, to check that the sample stage resumed exactly."""
    kept = config.parent / "sampled_wrong.jsonl"
    planted = plant_wrong_solutions(load_config(config), samples=False, keep_original=kept)
    assert len(planted) == 4


# ---- the run folder, as seen from outside ----------------------------------------------------------------


def checkpoints(folder: Path) -> tuple[list[int], list[int]]:
    """Steps of the complete checkpoints under `folder` and of the half-written ones (no readable state)."""
    complete, partial = [], []
    if folder.is_dir():
        for p in folder.glob("checkpoint-*"):
            if not p.name.removeprefix("checkpoint-").isdigit():
                continue
            try:
                json.loads((p / "trainer_state.json").read_text())
                complete.append(int(p.name.removeprefix("checkpoint-")))
            except (OSError, ValueError):
                partial.append(int(p.name.removeprefix("checkpoint-")))
    return sorted(complete), sorted(partial)


def is_done(run_dir: Path, stage: str) -> bool:
    return (run_dir / stage / "manifest.json").exists()


def cache_entries(run_dir: Path) -> int:
    return sum(1 for _ in (run_dir / "teacher_cache").glob("*/*.json"))


def messages_id(messages: Any) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def cached_conversations(run_dir: Path) -> set[str]:
    """`messages_id` of every conversation answered in the teacher's cache (from the entries' content)."""
    out = set()
    for p in (run_dir / "teacher_cache").glob("*/*.json"):
        out.add(messages_id(json.loads(p.read_text())["messages"]))
    return out


def shard_rows(run_dir: Path, stage: str) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in (run_dir / stage).glob("**/*.shard.jsonl"))


# ---- running and killing -------------------------------------------------------------------------------


STARTED = re.compile(r"\[([\w-]+)\] -> ")  # what Stage.start prints when a stage begins its work


@dataclass
class Proc:
    """The process being watched: when it started, and where its output begins in the log."""

    runner: Runner
    t_start: float  # time.monotonic()
    wall_start: float  # time.time(), to compare with file times
    log_from: int

    def stage(self) -> str:
        """The stage this process is in: the last one it started (per its log) that has no manifest yet;
        "between stages" (starting up included) or "after finishing" otherwise."""
        with self.runner.log.open("rb") as f:
            f.seek(self.log_from)
            started = STARTED.findall(f.read().decode(errors="replace"))
        if started and not is_done(self.runner.run_dir, started[-1]):
            return started[-1]
        if all(is_done(self.runner.run_dir, s) for s in self.runner.stages):
            return "after finishing"
        return "between stages"


@dataclass
class Aim:
    """Kill `delay` seconds after `ready(process)` first holds; or, with `after_append`, let the process kill
    itself right after it first appends rows to a file whose path ends with that (tests/kill_at.py)."""

    what: str
    ready: Callable[[Proc], bool]
    delay: float = 0.0
    after_append: str | None = None


@dataclass
class Kill:
    phase: str
    aim: str
    landed: str  # the stage the process was in, "between stages" or "after finishing"
    at: float  # time.monotonic() of the kill
    after_s: float  # seconds since the process started
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def mid_stage(self) -> bool:
        return self.landed not in ("between stages", "after finishing")


class Runner:
    """One `supercorrect run CONFIG --stages ...` invocation, started again after each kill until it finishes."""

    def __init__(self, phase: str, config: Path, stages: list[str], env: dict[str, str],
                 proxy: CountingProxy | None = None):  # fmt: skip
        self.phase = phase
        self.config = config
        self.stages = stages
        self.env = env
        self.proxy = proxy
        self.run_dir = config.parent / "runs" / yaml.safe_load(config.read_text())["name"]
        self.log = config.parent / f"{phase}.log"
        self.kills: list[Kill] = []
        self.cached_at_kill: dict[float, set[str]] = {}  # kill time -> conversations in the teacher's cache
        self.processes = 0

    def attempt(self, aim: Aim | None) -> Kill | None:
        """Start the run; kill it as aimed. None when it finished by itself (exit code 0)."""
        env = self.env
        cmd = [sys.executable, "-m", "supercorrect.cli", "run", str(self.config)]
        if aim is not None and aim.after_append is not None:
            env = {**self.env, "SC_KILL_AFTER_APPEND": aim.after_append}
            cmd[1:3] = [str(KILL_AT)]
        cmd += ["--stages", ",".join(self.stages)]
        self.processes += 1
        with self.log.open("ab") as log:
            log.write(f"\n==== process {self.processes} (aim: {aim.what if aim else 'none'}) ====\n".encode())
            log.flush()
            current = Proc(self, time.monotonic(), time.time(), log.tell())
            proc = subprocess.Popen(cmd, cwd=self.config.parent, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        fire_at = None
        at = 0.0
        try:
            while proc.poll() is None:
                now = time.monotonic()
                assert now - current.t_start < PROCESS_TIMEOUT_S, (
                    f"{self.phase}: no end in {PROCESS_TIMEOUT_S} s"
                )
                if aim is not None and fire_at is None and aim.ready(current):
                    fire_at = now + aim.delay
                if fire_at is not None and now >= fire_at:
                    at = time.monotonic()
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    break
                time.sleep(POLL_S)
            else:  # it ended by itself: finished, failed, or killed itself (`aim.after_append`)
                at = time.monotonic()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.returncode == 0:
            return None
        assert proc.returncode == -signal.SIGKILL, (
            f"{self.phase}: exit code {proc.returncode}\n{self.log.read_text(errors='replace')[-4000:]}"
        )
        kill = Kill(self.phase, aim.what if aim else "?", current.stage(), at, round(at - current.t_start, 2),
                    self.snapshot(at))  # fmt: skip
        self.kills.append(kill)
        return kill

    def snapshot(self, at: float) -> dict[str, Any]:
        """What the killed process left (the folder is frozen now)."""
        out: dict[str, Any] = {}
        for stage, sub in CHECKPOINTS.items():
            if stage in self.stages and not is_done(self.run_dir, stage):
                complete, partial = checkpoints(self.run_dir / sub)
                if complete or partial:
                    out[stage] = {"checkpoints": complete, "half_written": partial}
        if self.proxy is not None:
            out["in_flight"] = sum(
                1 for r in self.proxy.chat_records() if r.t_start <= at and (r.t_end is None or r.t_end > at)
            )
            self.cached_at_kill[at] = cached_conversations(self.run_dir)
            out["cached"] = len(self.cached_at_kill[at])
        shards = {s: shard_rows(self.run_dir, s) for s in self.stages if (self.run_dir / s).is_dir()}
        out["shard_rows"] = {s: n for s, n in shards.items() if n}
        return out

    def run(self, aims: Iterable[Aim], after_kill: Callable[[Kill], None] | None = None) -> None:
        """Kill once per aim (an aim that the process outlives is not retried), then run to the end."""
        for aim in aims:
            kill = self.attempt(aim)
            if kill is None:
                return  # finished before the aim came: nothing left to kill
            if after_kill is not None:
                after_kill(kill)
        assert self.attempt(None) is None


Aims = Callable[[Runner], Iterable[Aim]]  # the kills to aim at in one invocation, given its runner


def subprocess_env() -> dict[str, str]:
    """The runs' environment, the same for the killed and the uninterrupted ones. One torch thread: on a small
    shared machine two spinning OpenMP threads train and generate 2-3 times slower than one."""
    env = {**os.environ, KEY_ENV: SENTINEL, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
    env.pop("OPENAI_BASE_URL", None)
    return env


# ---- aims: each also fires when its stage has finished meanwhile, so that it lands in what comes next -----


def aim_teacher_call(runner: Runner, n_answered: int = 1, delay: float = 0.0) -> Aim:
    """While this process has a teacher request in flight, after `n_answered` more answers were cached."""
    proxy, run_dir = runner.proxy, runner.run_dir
    assert proxy is not None
    box: dict[str, int] = {}

    def ready(p: Proc) -> bool:
        base = box.setdefault("cached", cache_entries(run_dir))
        if is_done(run_dir, "templates"):
            return True
        mine = [r for r in proxy.chat_records() if r.t_start >= p.t_start and r.t_end is None]
        return bool(mine) and cache_entries(run_dir) >= base + n_answered

    return Aim(f"teacher call (+{n_answered} answers)", ready, delay)


def aim_training(runner: Runner, stage: str, new_checkpoints: int = 1, delay: float = 0.0) -> Aim:
    """Inside training, once this process has saved `new_checkpoints` more steps (by step number: the
    trainers keep only their last one or two checkpoints)."""
    folder = runner.run_dir / CHECKPOINTS[stage]
    box: dict[str, int] = {}

    def last_step() -> int:
        return max(checkpoints(folder)[0], default=0)

    def ready(p: Proc) -> bool:
        base = box.setdefault("step", last_step())
        return is_done(runner.run_dir, stage) or last_step() >= base + new_checkpoints

    return Aim(f"{stage} training (+{new_checkpoints} checkpoints)", ready, delay)


def aim_checkpoint_save(runner: Runner, stage: str) -> Aim:
    """While the trainer is writing a checkpoint: a checkpoint folder of this process, without its
    trainer_state.json (written last). One left by an earlier kill does not count."""
    folder = runner.run_dir / CHECKPOINTS[stage]

    def ready(p: Proc) -> bool:
        if is_done(runner.run_dir, stage):
            return True
        for step in checkpoints(folder)[1]:
            try:
                if (folder / f"checkpoint-{step}").stat().st_mtime >= p.wall_start:
                    return True
            except FileNotFoundError:
                pass  # removed meanwhile (checkpoint rotation)
        return False

    return Aim(f"{stage} checkpoint save", ready)


def aim_stage(runner: Runner, stage: str, delay: float = 0.0) -> Aim:
    """`delay` seconds after this process started the stage."""

    def ready(p: Proc) -> bool:
        return is_done(runner.run_dir, stage) or p.stage() == stage

    return Aim(f"{stage} (+{delay:.1f} s)", ready, delay)


def aim_shard_flush(runner: Runner, stage: str, shard: str) -> Aim:
    """Inside `stage`, right after its first rows are flushed to `shard` (a path under the stage's folder): the
    process kills itself there (tests/kill_at.py), so the kill lands at that point on any machine."""
    return Aim(f"{stage} after the first flush of {shard}", lambda p: False,
               after_append=f"{runner.run_dir.name}/{stage}/{shard}")  # fmt: skip


def aim_anywhere(delay: float) -> Aim:
    return Aim(f"anywhere (+{delay:.1f} s)", lambda p: True, delay)


def random_aims(runner: Runner, rng: random.Random, quotas: dict[str, int]) -> Iterator[Aim]:
    """Seeded random kills: `quotas[stage]` aimed inside each stage of the invocation, in order (what a stage
    that finished early did not use goes to the next one), and `quotas["anywhere"]` at a random time after
    the start, interleaved at random. What is random: the kind of moment and the delay; eval-hsft's first two
    kills come at its two shard flushes (it is over in well under a second), so one surely lands there."""
    plan = [s for s in runner.stages for _ in range(quotas.get(s, 0))]
    eval_flushes = ["test/greedy.shard.jsonl", "test/sampled.shard.jsonl"]
    for _ in range(quotas.get("anywhere", 0)):
        plan.insert(rng.randint(0, len(plan)), "anywhere")
    for target in plan:
        todo = [s for s in runner.stages if not is_done(runner.run_dir, s)]
        if not todo:
            return
        stage = target if target == "anywhere" or target in todo else todo[0]
        if stage == "anywhere":
            yield aim_anywhere(rng.uniform(0, 15))
        elif stage == "templates" and runner.proxy is not None:
            yield aim_teacher_call(runner, rng.randint(0, 2), rng.uniform(0, 1.0))
        elif stage in CHECKPOINTS and rng.random() < 0.3:
            yield aim_checkpoint_save(runner, stage)
        elif stage in CHECKPOINTS:
            yield aim_training(runner, stage, 1, rng.uniform(0, 1.5))
        elif stage == "eval-hsft" and (flushes := [f for f in eval_flushes if not (runner.run_dir / stage / f).exists()]):
            eval_flushes.remove(flushes[0])  # too quick to hit by a delay: aimed at its next shard flush
            yield aim_shard_flush(runner, stage, flushes[0])
        else:
            yield aim_stage(runner, stage, rng.uniform(0, 0.5 if stage == "pairs" else 2.0))


# ---- checks ----------------------------------------------------------------------------------------------


def assert_same_bytes(ref: Path, run: Path, rels: list[str]) -> None:
    for rel in rels:
        a, b = ref / rel, run / rel
        assert b.exists(), f"{rel} missing after the resumed run"
        assert a.read_bytes() == b.read_bytes(), f"{rel} differs from the uninterrupted run's"


def same_weights(ref: Path, run: Path) -> bool:
    """Both model folders load; True when every tensor is bit-identical."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run)  # loadable as a model, not just as a file
    a, b = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def assert_resumed_from_checkpoints(runner: Runner) -> dict[str, str | None]:
    """Each training stage that was killed with a complete checkpoint on disk resumed from the newest one."""
    out = {}
    for stage in CHECKPOINTS:
        if stage not in runner.stages:
            continue
        resumed = read_json(runner.run_dir / stage / "manifest.json")["metrics"].get("resumed_from")
        out[stage] = Path(resumed).name if resumed else None
        frozen = [
            k.detail[stage]["checkpoints"] for k in runner.kills if k.detail.get(stage, {}).get("checkpoints")
        ]
        if frozen:
            assert out[stage] == f"checkpoint-{frozen[-1][-1]}", (stage, out[stage], frozen[-1])
    return out


@dataclass
class RequestAudit:
    needed: int  # distinct requests of the uninterrupted run
    distinct: int  # distinct requests the resumed run sent, all processes together
    sent: int  # requests the resumed run sent, all processes together
    resent_in_flight: int  # sent again: no answer had come back yet when its process was killed
    resent_answered_not_cached: int  # sent again: answered, but its process was killed before caching it
    resent_needlessly: int  # sent again though its answer was cached at the kill, or with no kill between: 0


def audit_requests(ref: CountingProxy, runner: Runner) -> RequestAudit:
    """Count, at the server, what the killed-and-resumed run sent. A request sent again is accounted for only
    when its earlier copy's process was killed before the answer was in the teacher's cache."""
    assert runner.proxy is not None
    needed, got = ref.bodies(), runner.proxy.bodies()
    assert all(c == 1 for c in needed.values()), "the uninterrupted run sent a request twice"
    assert set(got) == set(needed), "the resumed run sent different requests"
    copies: dict[str, list[Forwarded]] = {}
    for r in runner.proxy.chat_records():
        copies.setdefault(r.body_sha or "", []).append(r)
    why: Counter[str] = Counter()
    for records in copies.values():
        for lost in sorted(records, key=lambda r: r.t_start)[:-1]:  # every copy but the last was lost
            kill = next((k for k in runner.kills if k.at >= lost.t_start), None)
            conversation = messages_id(json.loads(lost.body or b"{}").get("messages"))
            if kill is None or conversation in runner.cached_at_kill[kill.at]:
                why["needlessly"] += 1
            elif lost.t_end is None or lost.t_end > kill.at:
                why["in_flight"] += 1
            else:
                why["answered_not_cached"] += 1
    return RequestAudit(len(needed), len(got), sum(got.values()), why["in_flight"], why["answered_not_cached"],
                        why["needlessly"])  # fmt: skip


def report(
    kills: list[Kill], extra: dict[str, Any], record_property: Callable[[str, Any], None]
) -> dict[str, Any]:
    """The kills and what was observed: printed (see it with -s), as JUnit properties, and in $SC_KILL_REPORT."""
    summary = {
        "kills": len(kills),
        "mid_stage": sum(k.mid_stage for k in kills),
        "landed": dict(Counter(k.landed for k in kills)),
        **extra,
        "log": [asdict(k) for k in kills],
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "log"}, indent=1, default=str))
    for key in ("kills", "mid_stage", "landed", "requests"):
        if key in summary:
            record_property(key, json.dumps(summary[key], default=str))
    if path := os.environ.get("SC_KILL_REPORT"):
        Path(path).write_text(json.dumps(summary, indent=1, default=str))
    return summary


# ---- fixtures: the teacher's server and the uninterrupted runs ------------------------------------------


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with llama_server(tmp_path_factory.mktemp("llama") / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def proxies(llama: ServerProcess) -> Iterator[Callable[[], CountingProxy]]:
    made: list[CountingProxy] = []

    def make() -> CountingProxy:
        made.append(CountingProxy(llama, barrier=True))
        return made[-1]

    yield make
    for p in made:
        p.stop()


@pytest.fixture(scope="module")
def reference(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Callable[..., Any]:
    """Uninterrupted runs, made once per module: ("a", n) -> (run_dir, proxy); ("b",) -> run_dir."""
    made: dict[tuple, Any] = {}

    def get(*key: Any) -> Any:
        if key not in made:
            root = tmp_path_factory.mktemp(f"ref-{'-'.join(map(str, key))}")
            if key[0] == "a":
                proxy = request.getfixturevalue("proxies")()  # starts llama.cpp's server only when needed
                runner = Runner("ref-a", openai_config(root, tiny_model_dir, proxy, key[1]), ["templates"],
                                subprocess_env(), proxy)  # fmt: skip
                runner.run([])
                made[key] = (runner.run_dir, proxy)
            else:
                config = pipeline_config(root, tiny_model_dir)
                Runner("ref-b1", config, STAGE1, subprocess_env()).run([])
                plant_phase_b(config)
                runner = Runner("ref-b2", config, STAGE2, subprocess_env())
                runner.run([])
                made[key] = runner.run_dir
        return made[key]

    return get


# ---- the planted wrong solutions of phase B ---------------------------------------------------------------


def test_plant_phase_b_keeps_what_the_sample_stage_wrote(tmp_path: Path) -> None:
    """The planting every phase-B run does (the slow tests' only call site), on phase B's own config."""
    config = pipeline_config(tmp_path, tmp_path / "model")
    sample = load_config(config).run_dir / "sample"
    sample.mkdir(parents=True)
    (sample / "wrong.jsonl").write_text('{"id": "sampled"}\n')
    (sample / "samples.jsonl").write_text('{"id": "every sample"}\n')
    plant_phase_b(config)
    rows = read_jsonl(sample / "wrong.jsonl")
    assert len(rows) == 4 and all(r["predicted"] == "999" and "= 999\n</Step2>" in r["text"] for r in rows)
    assert (tmp_path / "sampled_wrong.jsonl").read_text() == '{"id": "sampled"}\n'
    assert (sample / "samples.jsonl").read_text() == '{"id": "every sample"}\n'


# ---- a checkpoint half-written by a kill is never resumed from -----------------------------------------


def test_last_checkpoint_skips_half_written(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path / "missing") is None
    assert last_checkpoint(tmp_path) is None
    for step, state in ((1, "{}"), (2, '{"global_step": 2}'), (3, None), (4, '{"global_st')):
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"x")
        if state is not None:
            (d / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == str(tmp_path / "checkpoint-2")
    # The half-written ones (no state, torn state) are removed: the resumed run writes those steps again.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", "checkpoint-2", "checkpoint-x"]


# ---- phase A: teacher calls ------------------------------------------------------------------------------


def killed_templates_run(root: Path, model: Path, proxy: CountingProxy, n: int, aims: Aims) -> Runner:
    """Phase A with kills: the templates stage, its teacher behind `proxy`."""
    runner = Runner("a", openai_config(root, model, proxy, n), ["templates"], subprocess_env(), proxy)
    runner.run(aims(runner))
    return runner


def check_templates_run(runner: Runner, ref_dir: Path, ref_proxy: CountingProxy) -> RequestAudit:
    assert_same_bytes(ref_dir, runner.run_dir, SAME_A)
    assert runner.proxy is not None
    audit = audit_requests(ref_proxy, runner)
    assert audit.resent_needlessly == 0, audit
    assert audit.distinct == audit.needed
    assert audit.sent == audit.needed + audit.resent_in_flight + audit.resent_answered_not_cached
    # The key went over the wire, and nowhere into the run folder.
    assert all(r.endswith(SENTINEL) for m, p, r in runner.proxy.seen if p.endswith("/chat/completions") and r)
    for f in runner.run_dir.rglob("*"):
        assert not f.is_file() or SENTINEL.encode() not in f.read_bytes(), f
    return audit


@pytest.mark.slow
def test_kill_during_teacher_calls(
    tmp_path: Path, tiny_model_dir: Path, proxies, reference, record_property
) -> None:
    n = 4
    ref_dir, ref_proxy = reference("a", n)
    runner = killed_templates_run(
        tmp_path,
        tiny_model_dir,
        proxies(),
        n,
        lambda r: [aim_teacher_call(r, 1, 0.2), aim_teacher_call(r, 2)],  # 0.2 s: let the answer that made the count settle (without it CI saw a resend counted as needless)
    )
    audit = check_templates_run(runner, ref_dir, ref_proxy)
    summary = report(
        runner.kills, {"requests": asdict(audit), "processes": runner.processes}, record_property
    )
    assert summary["kills"] == 2 and summary["mid_stage"] == 2, summary
    assert all(k.detail["in_flight"] >= 1 for k in runner.kills), summary


# ---- phase B: training, evaluation, sampling, correction --------------------------------------------------


def tear_checkpoint(folder: Path) -> str:
    """Leave what a kill inside the Trainer's checkpoint save leaves: the next checkpoint folder with the
    weights and half the optimizer state, and no trainer_state.json (written last)."""
    complete, partial = checkpoints(folder)
    if partial:
        return f"checkpoint-{partial[-1]} (half-written by the kill itself)"
    src = folder / f"checkpoint-{complete[-1]}"
    dst = folder / f"checkpoint-{complete[-1] + 1}"
    shutil.copytree(src, dst)
    (dst / "trainer_state.json").unlink()
    optimizer = dst / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[: optimizer.stat().st_size // 2])
    return dst.name


def killed_pipeline_run(
    root: Path, model: Path, aims1: Aims, aims2: Aims, after_kill: Callable[[Kill], None] | None = None
) -> tuple[Runner, Runner]:
    """Phase B with kills: stage 1 and sampling (`aims1`), the planted wrong solutions, then stage 2 (`aims2`)."""
    config = pipeline_config(root, model)
    first = Runner("b1", config, STAGE1, subprocess_env())
    first.run(aims1(first), after_kill)
    plant_phase_b(config)
    second = Runner("b2", config, STAGE2, subprocess_env())
    second.run(aims2(second), after_kill)
    return first, second


def check_pipeline_run(first: Runner, second: Runner, ref_dir: Path) -> dict[str, Any]:
    run_dir = first.run_dir
    # Data artifacts. Those downstream of a model are only comparable if the model came out the same, so the
    # weights are compared first; on CPU the resumed training has always been bit-identical.
    hsft_same = same_weights(ref_dir / "hsft" / "model", run_dir / "hsft" / "model")
    dpo_same = same_weights(ref_dir / "cross-dpo" / "model", run_dir / "cross-dpo" / "model")
    assert hsft_same, "HSFT weights differ from the uninterrupted run's after resuming"
    assert dpo_same, "Cross-DPO weights differ from the uninterrupted run's after resuming"
    assert_same_bytes(ref_dir, run_dir, SAME_B1 + SAME_B2)
    assert_same_bytes(ref_dir.parent.parent, run_dir.parent.parent, ["sampled_wrong.jsonl"])
    assert len(read_jsonl(run_dir / "pairs" / "pairs.jsonl")) == 4
    resumed = {**assert_resumed_from_checkpoints(first), **assert_resumed_from_checkpoints(second)}
    for stage in CHECKPOINTS:
        assert read_json(run_dir / stage / "manifest.json")["counts"]["steps"] == 4
    return {"resumed_from": resumed, "hsft_weights_identical": hsft_same, "dpo_weights_identical": dpo_same,
            "processes": first.processes + second.processes}  # fmt: skip


@pytest.mark.slow
def test_kill_during_training_and_evaluation(
    tmp_path: Path, tiny_model_dir: Path, reference, record_property
) -> None:
    ref_dir = reference("b")
    torn: list[str] = []

    def after_kill(kill: Kill) -> None:
        if kill.landed == "hsft" and not torn:  # as if that kill had come while a checkpoint was being saved
            torn.append(tear_checkpoint(tmp_path / "runs" / "b" / "hsft" / "checkpoints"))

    first, second = killed_pipeline_run(
        tmp_path,
        tiny_model_dir,
        # eval-hsft takes well under a second now: the kill is the process's own, after its first shard flush
        lambda r: [aim_training(r, "hsft", 2), aim_shard_flush(r, "eval-hsft", "test/greedy.shard.jsonl")],
        lambda r: [aim_training(r, "cross-dpo", 2)],
        after_kill,
    )
    result = check_pipeline_run(first, second, ref_dir)
    kills = first.kills + second.kills
    summary = report(kills, {**result, "torn_checkpoint": torn}, record_property)
    assert [k.landed for k in kills] == ["hsft", "eval-hsft", "cross-dpo"], summary
    assert kills[1].detail["shard_rows"].get("eval-hsft") == 4, summary  # right after the greedy shard's flush
    # ... and the resumed eval-hsft read its greedy answers from that shard instead of generating them again
    shard = "eval-hsft/test/greedy.shard.jsonl"
    greedy = sum(c["n_tokens"] for row in read_jsonl(ref_dir / shard) for c in row["completions"])
    new = [read_json(d / "eval-hsft" / "manifest.json")["counts"]["new_tokens"] for d in (ref_dir, first.run_dir)]
    assert greedy > 0 and new[1] == new[0] - greedy, (new, greedy)
    assert torn and result["resumed_from"]["hsft"] != torn[0]


# ---- the long variant: >= 20 kills at random moments ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.long
def test_kill_resume_random_long(
    tmp_path: Path, tiny_model_dir: Path, proxies, reference, record_property
) -> None:
    seed = int(os.environ.get("SC_KILL_SEED", "20250214"))
    rng = random.Random(seed)
    t0 = time.monotonic()
    n = 12
    ref_dir, ref_proxy = reference("a", n)
    a = killed_templates_run(
        tmp_path / "a",
        tiny_model_dir,
        proxies(),
        n,
        lambda r: random_aims(r, rng, {"templates": 8, "anywhere": 1}),
    )
    audit = check_templates_run(a, ref_dir, ref_proxy)

    first, second = killed_pipeline_run(
        tmp_path / "b",
        tiny_model_dir,
        lambda r: random_aims(r, rng, {"hsft": 4, "eval-hsft": 3, "sample": 2, "anywhere": 1}),
        lambda r: random_aims(r, rng, {"correct": 2, "pairs": 1, "cross-dpo": 4, "anywhere": 1}),
    )
    result = check_pipeline_run(first, second, reference("b"))
    kills = a.kills + first.kills + second.kills
    summary = report(kills, {"seed": seed, "requests": asdict(audit), **result,
                             "processes": a.processes + result["processes"],
                             "seconds": round(time.monotonic() - t0)}, record_property)  # fmt: skip
    assert summary["kills"] >= 20, summary
    assert summary["mid_stage"] >= 15, summary
    landed = summary["landed"]
    assert landed.get("templates") and landed.get("hsft") and landed.get("cross-dpo"), summary
    assert landed.get("eval-hsft"), summary
