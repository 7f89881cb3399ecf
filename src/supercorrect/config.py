"""The run config: one YAML file for a whole run, validated up front.

Sections that belong to one part live beside it and are used here as they are: the trainers' settings
(`trainers/sft_config.py`, `trainers/dpo_config.py`) and the problem sets (`data/spec.py`). The sections a recipe
uses are listed by the recipe (`recipes/`).

Every section is a pydantic model with `extra="forbid"`, so a misspelt key or a wrong type is a one-line error
naming the file and the key. `load_config(path)` is the only entry point; stages receive the validated object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .data.spec import DataSpec
from .errors import UserError
from .io import sha256_json
from .recipes.registry import RECIPES
from .trainers.dpo_config import CrossDPOConfig
from .trainers.sft_config import SFTConfig


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class StudentConfig(Section):
    model: str = "smollm2-135m"  # "smollm2-135m" (embedded), a hub id, or a local path
    # auto: bf16 weights for generation where the hardware runs bf16 natively, else fp32 (precision.py);
    # training keeps fp32 master weights under auto (its autocast is hsft.bf16 / cross_dpo.bf16).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class TeacherConfig(Section):
    kind: Literal["reference", "openai", "local"] = "reference"
    model: str | None = None  # API model name (openai) or model id/path (local)
    base_url: str | None = None  # any OpenAI-compatible endpoint; None = api.openai.com
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the environment variable holding the key
    max_concurrency: int = Field(8, ge=1)
    max_retries: int = Field(6, ge=0)
    timeout_s: float = Field(120.0, gt=0)
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(2048, ge=1)
    price_in_per_1m: float | None = None  # USD per million prompt tokens, for the cost estimate
    price_out_per_1m: float | None = None
    cache_dir: str | None = None  # default: <run_dir>/teacher_cache
    backoff_base_s: float = Field(1.0, gt=0)  # first retry waits up to this; doubles per retry
    backoff_max_s: float = Field(60.0, gt=0)  # longest wait between retries (a longer Retry-After fails the item)
    # A stage that calls the teacher fails (exit 2, after writing its partial outputs) when fewer of its
    # requests than this share are answered; answered ones are cached, so a re-run sends only the rest.
    min_success_rate: float = Field(0.9, ge=0, le=1)
    # Spend caps on everything this run's teacher has sent (all stages, all invocations; cached answers are
    # free). A request is sent only if its worst case fits; when one does not, the stage stops with exit 2.
    max_spend_usd: float | None = Field(None, gt=0)  # needs price_in_per_1m and price_out_per_1m
    max_total_tokens: int | None = Field(None, ge=1)  # prompt + completion tokens
    # OpenAI Batch API (teachers.openai_batch): the same requests at the batch price, answered within 24 h. The
    # batch ids are kept in <run_dir>/teacher_batches, so a killed stage resumes polling instead of paying again.
    batch: bool = False
    batch_price_in_per_1m: float | None = None  # default: half of price_in_per_1m (OpenAI's batch discount)
    batch_price_out_per_1m: float | None = None  # default: half of price_out_per_1m
    batch_poll_s: float = Field(30.0, gt=0)  # seconds between status checks
    batch_max_wait_s: float | None = Field(None, gt=0)  # stop waiting (the batch runs on; a re-run resumes it)
    batch_retry: Literal["live", "batch", "none"] = "live"  # failed lines: live calls, a new batch, or not at all
    batch_max_rounds: int = Field(2, ge=0)  # with batch_retry=batch: at most this many new batches
    batch_max_requests: int = Field(50_000, ge=1)  # per batch (the API's limit); more are split

    # How hard and how long to try, not what is asked: changing these never redoes a finished stage.
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset(
        {"api_key_env", "max_concurrency", "max_retries", "timeout_s", "price_in_per_1m", "price_out_per_1m",
         "backoff_base_s", "backoff_max_s", "min_success_rate", "max_spend_usd", "max_total_tokens", "batch",
         "batch_price_in_per_1m", "batch_price_out_per_1m", "batch_poll_s", "batch_max_wait_s", "batch_retry",
         "batch_max_rounds", "batch_max_requests"}
    )  # fmt: skip

    @model_validator(mode="after")
    def _priced_cap(self) -> TeacherConfig:
        if self.max_spend_usd is not None and (self.price_in_per_1m is None or self.price_out_per_1m is None):
            raise ValueError("max_spend_usd needs price_in_per_1m and price_out_per_1m (USD per million tokens)")
        if self.batch and self.kind != "openai":
            raise ValueError(f"batch: true needs kind: openai (the Batch API), not {self.kind!r}")
        return self


class GenerationConfig(Section):
    backend: Literal["transformers", "vllm"] = "transformers"
    batch_size: int = Field(32, ge=1)
    max_new_tokens: int = Field(320, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    vllm_gpu_memory_utilization: float = Field(0.2, gt=0, le=1)
    # vLLM only (docs/distributed.md): GPUs per engine, and engine replicas each taking a share of the prompts.
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)

    # Where the engine runs, not what it samples (every request has its own seed): never redoes a finished stage,
    # and runs made before these keys existed keep their fingerprints.
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"tensor_parallel_size", "data_parallel_size"})

    @model_validator(mode="after")
    def _parallel_needs_vllm(self) -> GenerationConfig:
        if self.backend != "vllm" and (self.tensor_parallel_size > 1 or self.data_parallel_size > 1):
            raise ValueError("tensor_parallel_size / data_parallel_size > 1 need backend: vllm")
        return self


class TemplatesConfig(Section):
    data: str = "train"  # which entry of `data` to transform


class JudgeConfig(TeacherConfig):
    """`evaluate.judge`: an LLM that decides correctness from the problem, the reference answer and the solution
    (the official SuperCorrect evaluation used gpt-4o-mini-2024-07-18). Any OpenAI-compatible endpoint; the same
    client, cache and spend caps as the API teacher (see judge.py). Its cache and ledger default to
    <run_dir>/judge_cache and <run_dir>/judge_spend.jsonl."""

    kind: Literal["openai"] = "openai"
    model: str | None = "gpt-4o-mini-2024-07-18"
    max_tokens: int = Field(512, ge=1)
    min_success_rate: float = Field(0.0, ge=0, le=1)  # unused: a failed judgement is counted, never fatal


class GradingConfig(Section):
    """The `grading:` block: how a final answer is read from a model's text (equivalence: Math-Verify)."""

    extractor: Literal["default", "qwen"] = "default"  # ours (<Answer>, box, last number) or Qwen2.5-Math's


class EvalConfig(Section):
    """The `evaluate:` block: what every `eval-<model>` stage measures."""

    sets: list[str] = Field(default_factory=lambda: ["test"])  # entries of `data` to evaluate on
    prompt: Literal["ht", "cot"] = "ht"
    cot_baseline: bool = False  # also evaluate the base model with the plain CoT prompt
    samples: int = Field(0, ge=0)  # k sampled solutions per problem (0 = greedy only)
    # Models (base, hsft, cross-dpo, ...) that also get the correction prompt on their own greedy solutions.
    self_correction: list[str] = Field(default_factory=list)
    self_correction_sets: list[str] | None = None  # which of `sets` it runs on (default: all of them)
    error_location: bool = False  # with self-correction: does its trace point at the teacher's step k?
    temperature: float = Field(0.7, ge=0)
    max_new_tokens: int | None = None  # default: generation.max_new_tokens
    judge: JudgeConfig | None = None  # optional LLM judge beside the rule-based grade (judge.py)


class SampleConfig(Section):
    data: str = "train"  # which entry of `data` the HSFT student samples on
    k: int = Field(4, ge=1)  # solutions per problem
    temperature: float = Field(0.8, ge=0)
    max_new_tokens: int | None = None  # default: generation.max_new_tokens
    max_wrong_per_problem: int = Field(2, ge=1)  # distinct wrong solutions kept per problem


class CorrectConfig(Section):
    mode: Literal["single_pass", "stepwise"] = "single_pass"  # paper's one pass, or ELAD's CLAER step by step
    inspector_rounds: int = Field(0, ge=0, le=3)  # re-ask the teacher when its trace's answer is wrong
    student_max_new_tokens: int = Field(160, ge=1)  # the student's own analysis of step k
    # Every written step checks out but the answer is wrong and a reference value was never computed (rule-based
    # teacher): own_k blames the missing step at its own position (one past the last step when the student stopped
    # early; its pair then adds the step instead of replacing a right one); last_step blames the last written step
    # (before this key existed). With own_k a trace flagging step len(steps)+1 is also kept for LLM teachers.
    missing_step: Literal["own_k", "last_step"] = "own_k"


class PairsConfig(Section):
    """The `pairs:` block: what one Cross-DPO pair is made of (stage `pairs`, `pair_builder.py`). The paper's pairs
    are the defaults: the HT context and the teacher's cause + correction as chosen. `both` builds one pair per
    option for every correction row (ids then carry a suffix naming the non-default parts, e.g. `@correction`)."""

    # The prompt the pair continues. ht: the HT prompt + the student's steps 1..k-1 as it wrote them (the paper).
    # correction: the context the student sees when it self-corrects: the plain correction prompt with its
    # solution, its turn pre-filled with steps 1..k-1 marked correct (stages.correct.correction_context).
    context: Literal["ht", "correction", "both"] = "ht"
    # The completions. cause_correction: chosen = the teacher's <Cause>+<Correction> block of step k, rejected =
    # the student's own analysis of step k (the paper). student_form: chosen = the corrected step k in the
    # student's own words (the rule-based teacher's step_fix for an arithmetic error, else the <Correction>
    # text), rejected = the student's step k as it wrote it, so that they differ only where the error is.
    chosen: Literal["cause_correction", "student_form", "both"] = "cause_correction"


class StatsConfig(Section):
    """The `stats:` block: how the report and `supercorrect compare` compute intervals (see stats.py)."""

    interval: Literal["wilson", "bootstrap"] = "wilson"  # accuracy interval; paired differences always bootstrap
    level: float = Field(0.95, gt=0, lt=1)
    bootstrap_samples: int = Field(10_000, ge=100)
    bootstrap_seed: int = 0


class LemaConfig(Section):
    """The `lema:` block (recipe `lema`, stages `lema-data` ... `lema-sense`; see docs/recipes.md)."""

    mix_with: Literal["cot", "ht"] = "cot"  # the solutions the correction data is mixed with: plain CoT or HT templates
    mix_ratio: float | None = Field(1.0, ge=0)  # solution rows per correction row; None: every training problem's
    heldout: float = Field(0.25, ge=0, lt=1)  # share of triplet problems kept out of training (sense-of-error set)
    sense_max: int = Field(64, ge=1)  # at most this many problems per set in the sense-of-error measure
    nll_batch_size: int = Field(8, ge=1)  # batch of the perplexity (mean token NLL) measure
    continue_max_tokens: int = Field(512, ge=1)  # LLM teacher: longest continuation from the corrected step


class ELADConfig(Section):
    """The `elad:` block: which problems the teacher annotates (EGSS) and how (CLAER)."""

    data: str = "train"  # the candidate pool (an entry of `data`)
    k: int = Field(4, ge=2)  # student samples per problem (inter-path uncertainty)
    temperature: float = Field(0.8, gt=0)
    max_new_tokens: int | None = None  # default: generation.max_new_tokens
    intra_paths: int = Field(1, ge=1)  # sampled paths per problem whose steps are removed one at a time
    intra_max_new_tokens: int = Field(96, ge=1)  # the student finishing a path with one step removed
    budget_share: float | None = Field(0.25, gt=0, le=1)  # the teacher annotates this share of the pool...
    budget_count: int | None = Field(None, ge=1)  # ...or this many problems (wins over the share)
    # One teacher token costs this many student tokens, for "equal total compute" (1.0: a token is a token).
    teacher_token_weight: float = Field(1.0, gt=0)
    baselines: list[Literal["entropy", "random"]] = Field(default_factory=lambda: ["entropy", "random"])


class REERConfig(Section):
    """The `reer:` block: the trajectory search and the SFT data built from it."""

    data: str = "train"  # the (problem, known good solution) pairs
    draft_max_new_tokens: int = Field(96, ge=1)  # the student's own draft z
    draft_temperature: float = Field(0.7, ge=0)
    max_segments: int = Field(4, ge=1)  # z is refined sentence by sentence, at most this many segments
    candidates: int = Field(4, ge=1)  # rewrites proposed per segment and step
    candidate_temperature: float = Field(1.0, gt=0)
    segment_max_new_tokens: int = Field(40, ge=1)
    low_steps: int = Field(2, ge=1)  # the two search budgets (steps) trained and compared with the draft
    high_steps: int = Field(6, ge=1)
    threshold: float | None = Field(None, le=0)  # stop a problem's search once its score reaches this
    score_batch_size: int = Field(16, ge=1)
    leak_threshold: float = Field(0.5, ge=0, le=1)  # ROUGE-L(z, y) above this flags a trajectory as leaky
    leak_ngram: int = Field(3, ge=1)
    reject_leaky: bool = False  # drop flagged trajectories from the SFT data

    @model_validator(mode="after")
    def _budgets(self) -> REERConfig:
        if self.high_steps <= self.low_steps:
            raise ValueError(f"high_steps ({self.high_steps}) must be larger than low_steps ({self.low_steps})")
        return self


class HsftMoreConfig(Section):
    """The `hsft_more:` block: the equal-compute control (stage `hsft-more`, stages/hsft_more.py). The control
    trains with the `hsft:` settings; a field set here replaces that setting for the control only. Left at its
    defaults, the section is not hashed, so finished controls are not redone."""

    # None: HSFT's own learning rate. In the efficacy study the control at HSFT's 2e-4 lost 4.5 points against
    # HSFT (a second pass over the same templates overfits), which makes it an easy bar for Cross-DPO to clear; a
    # lower rate gives a control that does not lose accuracy, i.e. a stricter one (docs/efficacy.md).
    learning_rate: float | None = Field(None, gt=0)


class StudyConfig(Section):
    """The `study:` block: what `supercorrect study` runs (study.py). No stage reads it, so it redoes nothing."""

    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)  # training seeds, one run each
    dev_set: str = "dev"  # the entry of `data` that `--phase dev` evaluates on (never trained on)


class RunConfig(Section):
    name: str
    seed: int = 0
    # What this run varies, e.g. "xdpo-context-both": `compare` pools runs of one variant across their seeds.
    # Default: the run name. Recorded in every manifest with the seed; it changes no stage's fingerprint.
    variant: str | None = None
    run_root: str = "runs"  # the run folder is <run_root>/<name>
    recipe: str = "supercorrect"  # which method this run is (`supercorrect recipes` lists them)
    stages: list[str] | None = None  # a subset of stages to run instead of the recipe's (default: all of them)
    student: StudentConfig = StudentConfig()
    teacher: TeacherConfig = TeacherConfig()
    generation: GenerationConfig = GenerationConfig()
    data: dict[str, DataSpec]  # named problem sets, e.g. train / test / gsm8k_test
    templates: TemplatesConfig = TemplatesConfig()
    hsft: SFTConfig = SFTConfig()  # trainers/sft_config.py
    evaluate: EvalConfig = EvalConfig()
    grading: GradingConfig = GradingConfig()
    sample: SampleConfig = SampleConfig()
    correct: CorrectConfig = CorrectConfig()
    pairs: PairsConfig = PairsConfig()  # what a Cross-DPO pair is made of
    cross_dpo: CrossDPOConfig = CrossDPOConfig()  # trainers/dpo_config.py
    hsft_more: HsftMoreConfig = HsftMoreConfig()  # the equal-compute control's own settings (default: hsft's)
    stats: StatsConfig = StatsConfig()
    lema: LemaConfig = LemaConfig()  # recipe lema
    elad: ELADConfig = ELADConfig()  # recipe elad
    reer: REERConfig = REERConfig()  # recipe reer
    study: StudyConfig = StudyConfig()  # `supercorrect study`: seeds and dev set

    # Where the config file lives: relative data paths resolve against it. Not part of the YAML.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or any(c in v for c in "/\\") or v in {".", ".."}:
            raise ValueError("must be a plain folder name (no slashes)")
        return v

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, v: str) -> str:
        if v not in RECIPES:
            raise ValueError(f"unknown recipe {v!r} (known: {', '.join(RECIPES)})")
        return v

    @property
    def run_dir(self) -> Path:
        root = Path(self.run_root)
        return (root if root.is_absolute() else Path.cwd() / root) / self.name

    def section_hash(self, *names: str) -> str:
        """Hash of the config sections a stage depends on: a stage is redone only when these change."""
        dump = self.model_dump(mode="json")
        for section, field in type(self).model_fields.items():  # keys that never redo a finished stage
            operational = getattr(field.annotation, "OPERATIONAL", None)
            if operational and isinstance(dump.get(section), dict):
                dump[section] = {k: v for k, v in dump[section].items() if k not in operational}
        ev = dump.get("evaluate")
        if isinstance(ev, dict):  # no judge hashes as before judges existed; a judge's operational keys never count
            judge = ev.pop("judge", None)
            if judge is not None:
                ev["judge"] = {k: v for k, v in judge.items() if k not in TeacherConfig.OPERATIONAL}
        if isinstance(dump.get("cross_dpo"), dict):
            dump["cross_dpo"] = {k: v for k, v in dump["cross_dpo"].items()
                                 if CrossDPOConfig.HASHED_IF_SET.get(k, object()) != v}  # fmt: skip
        return sha256_json({n: dump.get(n) for n in names})[:16]


def _format_error(path: Path, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif "input" in e and not isinstance(e["input"], dict | list):
        msg = f"{msg} (got {e['input']!r})"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the config ({e.strerror or type(e).__name__})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}{where}: invalid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of config keys at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                where = ".".join(parents[: i + 1])
                raise UserError(f"--set {dotted}={value!r}: {where!r} is not a mapping in {path}")
        node[leaf] = value
    try:
        cfg = RunConfig.model_validate(raw)
    except ValidationError as e:
        raise UserError(_format_error(path, e)) from None
    cfg.base_dir = path.resolve().parent
    return cfg
