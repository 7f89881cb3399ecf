"""`locate-bench`: how well a teacher, or a student model as critic, finds the earliest wrong step of a solution.

Why: stage 2 trains on the step the teacher blames. A teacher that fires too early trains the student away from a
correct step; one that fires too late leaves the real error in the prefix. This measures it on solutions with
human labels of the earliest wrong step, before the teacher is trusted with a run.

Input (`load_items`): a JSON array or JSONL of `{"id", "problem", "steps": [str, ...], "label": int,
"final_answer_correct": bool}` with an optional `"generator"` (label: 0-based index of the earliest wrong step,
-1 when every step is right), the format of public step-label sets (ProcessBench); or the toolkit's own
`corrections.jsonl` (stage `correct`), whose label is the run teacher's k: then the bench measures agreement (there
a label may be one past the last step: a missing step, `correct.missing_step: own_k`).

Who is asked (`run_bench`): any teacher of the toolkit (reference, openai, local) through `corrections`, with
the toolkit's correction prompts, cached and resumable like every teacher stage; or a model as critic (paper
Table 6): it gets the plain correction prompt on the solution, greedy, and the step it marks with <Cause> or
<Correction> is its answer. The reference teacher needs the problem's reference steps: questions are matched,
normalised, to the GSM8K files given with `--reference`, and the coverage is reported.

Metric (`score`), exactly ProcessBench's (Zheng et al. 2024, code/run_eval_prm_trl.py `precision_recall` and
`f1_score`): accuracy on erroneous solutions = share whose predicted index equals the label; accuracy on correct
ones = share predicted -1; F1 = their harmonic mean 2ab/(a+b). On top: too early (predicted < label), too late
(predicted > label), missed (predicted -1 on an erroneous solution), false alarms (a step predicted on a correct
one). Items the teacher cannot check (no reference match, a failed request) are scored twice: left out ("checked")
and counted as "no error found" ("all"), since ProcessBench counts every item.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import UserError
from .io import read_jsonl, write_json, write_jsonl
from .schema import Problem
from .teachers.base import CorrectionRequest, Teacher

__all__ = ["BenchItem", "load_items", "load_references", "match_reference", "normalise", "run_bench", "score"]


class BenchItem(BaseModel):
    """One labelled solution. Extra fields of public sets are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: str
    problem: str
    steps: list[str]
    label: int
    final_answer_correct: bool | None = None
    generator: str | None = None
    problem_id: str | None = None  # corrections.jsonl: the run's problem id, matched against --reference ids


# ----------------------------------------------------------------------------------------------- input


def _read_rows(path: Path) -> tuple[list[dict], str]:
    """Rows of a JSON array or a JSONL file, and where each row is ("file:line" for JSONL, "file[i]")."""
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as e:
        raise UserError(f"{path}: cannot read ({type(e).__name__})") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except ValueError as e:
            raise UserError(f"{path}: not a valid JSON array ({str(e).splitlines()[0]})") from None
        if not all(isinstance(r, dict) for r in rows):
            raise UserError(f"{path}: the JSON array must hold objects, one per solution")
        return rows, "array"
    return read_jsonl(path), "jsonl"


def load_items(path: str | Path) -> list[BenchItem]:
    """Labelled solutions from a JSON array, a JSONL file, or a `corrections.jsonl` (see the module docstring).
    A bad row is a one-line UserError naming the file and the row."""
    path = Path(path)
    rows, form = _read_rows(path)
    if not rows:
        raise UserError(f"{path}: no rows")
    items: list[BenchItem] = []
    for i, row in enumerate(rows):
        where = f"{path}[{i}]" if form == "array" else f"{path}: row {i + 1}"
        past_last = False  # a label one past the last step: a missing step (corrections.jsonl only)
        if "student_steps" in row and "k" in row and "steps" not in row:  # the toolkit's corrections.jsonl
            k = row.get("k")
            past_last = True
            row = {
                "id": str(row.get("key") or row.get("id")), "problem": "", "steps": row.get("student_steps"),
                "label": (k - 1) if isinstance(k, int) else -1, "final_answer_correct": False,
                "generator": "student", "problem_id": row.get("id"),
            }  # fmt: skip
        try:
            item = BenchItem.model_validate(row)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "(row)"
            raise UserError(f"{where}: {loc}: {err['msg']}") from None
        if not -1 <= item.label < max(len(item.steps) + past_last, 1) or (item.label >= 0 and not item.steps):
            raise UserError(f"{where}: label {item.label} is not -1 or a step index below {len(item.steps)}")
        items.append(item)
    seen = Counter(it.id for it in items)
    dup = next((k for k, n in seen.items() if n > 1), None)
    if dup is not None:
        raise UserError(f"{path}: id {dup!r} appears {seen[dup]} times; ids must be unique")
    return items


_SPACE = re.compile(r"\s+")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


def normalise(question: str) -> str:
    """A question's matching key: NFKC, curly quotes and dashes made plain, lower case, whitespace collapsed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", question).translate(_QUOTES)).strip().lower()


def load_references(paths: list[str | Path]) -> list[Problem]:
    """GSM8K-format files (question, answer with calculator annotations), as the toolkit loads them, or the
    toolkit's synthetic problems named `synthetic:SPLIT:N:SEED[:MIN_STEPS:MAX_STEPS]` (generated again: the same
    arguments give the same problems)."""
    from .data import DataSpec, generate_synthetic, load_problems

    out: list[Problem] = []
    for p in paths:
        if str(p).startswith("synthetic:"):
            parts = str(p).split(":")[1:]
            try:
                split, n, seed, *steps = parts[0], int(parts[1]), int(parts[2]), *map(int, parts[3:5])
            except (IndexError, ValueError):
                raise UserError(f"--reference {p}: expected synthetic:SPLIT:N:SEED[:MIN_STEPS:MAX_STEPS]") from None
            out += generate_synthetic(n, seed, split, *steps)
            continue
        out += load_problems(DataSpec(kind="gsm8k", path=str(Path(p).expanduser().resolve())))
    return out


def match_reference(items: list[BenchItem], references: list[Problem]) -> dict[str, Problem]:
    """{item id: reference problem} for items whose normalised question (or, for corrections.jsonl, problem id)
    is among the references."""
    by_text = {normalise(p.question): p for p in references}
    by_id = {p.id: p for p in references}
    out = {}
    for it in items:
        ref = by_id.get(it.problem_id) if it.problem_id else by_text.get(normalise(it.problem))
        if ref is not None:
            out[it.id] = ref
    return out


# ----------------------------------------------------------------------------------------------- metric


def outcome(label: int, pred: int) -> str:
    """One item's outcome: "hit" (right step), "too_early", "too_late", "missed" on an erroneous solution;
    "correct" or "false_alarm" on a correct one."""
    if label < 0:
        return "correct" if pred < 0 else "false_alarm"
    if pred == label:
        return "hit"
    return "missed" if pred < 0 else "too_early" if pred < label else "too_late"


def score(pairs: list[tuple[int, int]]) -> dict[str, Any]:
    """ProcessBench's metric over (label, predicted) pairs: accuracy on erroneous and on correct solutions (None
    when there are none), their harmonic mean `f1` (0 when both are 0, None when one is undefined), and the
    counts of each outcome."""
    counts = Counter(outcome(lab, pred) for lab, pred in pairs)
    n_err = sum(1 for lab, _ in pairs if lab >= 0)
    n_ok = len(pairs) - n_err
    acc_err = counts["hit"] / n_err if n_err else None
    acc_ok = counts["correct"] / n_ok if n_ok else None
    if acc_err is None or acc_ok is None:
        f1 = None
    else:
        f1 = 0.0 if acc_err + acc_ok == 0 else 2 * acc_err * acc_ok / (acc_err + acc_ok)
    return {
        "items": len(pairs), "erroneous": n_err, "correct": n_ok,
        "accuracy_erroneous": acc_err, "accuracy_correct": acc_ok, "f1": f1,
        "hits": counts["hit"], "too_early": counts["too_early"], "too_late": counts["too_late"],
        "missed": counts["missed"], "false_alarms": counts["false_alarm"],
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------- asking


@dataclass
class Prediction:
    pred: int  # 0-based step index, -1 for "no error found"
    checked: bool  # False: the teacher could not judge (no reference, failed request)
    reason: str | None = None  # reference teacher: its reason code; others: "flagged" / "no_error"
    error: str | None = None


def _problem_for(item: BenchItem, ref: Problem | None) -> Problem:
    """The reference problem when matched (its question replaced by the item's wording), else a bare problem
    without reference steps (the reference teacher then says not_checkable; an LLM teacher gets no solution)."""
    if ref is not None:
        return ref.model_copy(update={"question": item.problem or ref.question})
    return Problem(id=item.id, question=item.problem, solution="(no reference solution available)", answer="",
                   source="locate-bench")  # fmt: skip


def _from_trace(text: str | None, n_steps: int, missing_ok: bool = False) -> tuple[int, str | None]:
    """(0-based flagged step or -1, problem) from a correction trace: its first <Cause>/<Correction> step.
    `missing_ok` (teachers): a step one past the last is a missing step (`correct.missing_step: own_k`), index
    n_steps: too late against a label of a written step, a false alarm on a correct solution."""
    from .xmlformat import parse

    k = parse(text).first_error if text else None
    if k is None:
        return -1, None
    if k > n_steps + (missing_ok and n_steps > 0):
        return -1, f"flagged step {k} of {n_steps}"
    return k - 1, None


def ask_teacher(teacher: Teacher, items: list[BenchItem], refs: dict[str, Problem], mode: str) -> list[Prediction]:
    """One `corrections` call for every item the teacher can judge; the reference teacher only where a reference
    problem matched. The trace's first flagged step is the prediction."""
    from .teachers.reference import ReferenceTeacher

    rule_based = isinstance(teacher, ReferenceTeacher)
    preds: list[Prediction | None] = [None] * len(items)
    ask = []
    for i, it in enumerate(items):
        ref = refs.get(it.id)
        if rule_based and ref is None:
            preds[i] = Prediction(-1, False, None, "not_checkable: no reference problem matched the question")
            continue
        req = CorrectionRequest(_problem_for(it, ref), "\n\n".join(it.steps), list(it.steps))
        ask.append((i, req))
    outs = teacher.corrections([r for _, r in ask], mode=mode) if ask else []  # type: ignore[arg-type]
    for (i, _), out in zip(ask, outs, strict=True):
        if out.text is None:
            preds[i] = Prediction(-1, False, None, out.error or "no trace")
            continue
        pred, problem = _from_trace(out.text, len(items[i].steps), missing_ok=True)
        reason = getattr(out, "reason", None) or ("flagged" if pred >= 0 else "no_error")
        preds[i] = Prediction(pred, problem is None, reason, problem or out.error)
    return [p for p in preds if p is not None]


def ask_critic(model: str, items: list[BenchItem], out_dir: Path, *, dtype: str = "float32", batch_size: int = 16,
               max_new_tokens: int = 512) -> tuple[list[Prediction], dict[str, Any]]:  # fmt: skip
    """A model as critic (paper Table 6): the plain correction prompt on each solution, greedy, resumable in
    `out_dir/critic.shard.jsonl`. Returns the predictions and the generation's token counts."""
    from . import prompts
    from .generation import SamplingSettings, generate_resumable, make_backend
    from .models import chat_prompt, resolve_model
    from .teachers.llm import format_steps

    backend = make_backend("transformers", resolve_model(model), dtype, batch_size)
    try:
        work = [
            (it.id, chat_prompt(backend.tokenizer,
                                prompts.render("correction_plain", problem=it.problem, steps=format_steps(it.steps))))
            for it in items
        ]  # fmt: skip
        settings = SamplingSettings(max_new_tokens=max_new_tokens, stop=("</Answer>",))
        gens, stats = generate_resumable(backend, work, settings, out_dir / "critic.shard.jsonl", desc="critic")
        prompt_tokens = sum(len(backend.tokenizer(p, add_special_tokens=False)["input_ids"]) for _, p in work)
    finally:
        backend.close()
    preds = []
    for it in items:
        text = gens[it.id][0]["text"]
        pred, problem = _from_trace(text, len(it.steps))
        preds.append(Prediction(pred, True, "flagged" if pred >= 0 else "no_error", problem))
    completion = sum(g[0].get("n_tokens", 0) for g in gens.values())
    return preds, {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "cost_usd": 0.0,
                   "generation": stats}  # fmt: skip


# ----------------------------------------------------------------------------------------------- report


def summarise(items: list[BenchItem], preds: list[Prediction]) -> dict[str, Any]:
    """Scores on checked items and on all items (unchecked ones as "no error found"), per generator, and the
    distribution of reasons."""
    pairs_all = [(it.label, p.pred) for it, p in zip(items, preds, strict=True)]
    pairs_checked = [(it.label, p.pred) for it, p in zip(items, preds, strict=True) if p.checked]
    by_gen: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for it, p in zip(items, preds, strict=True):
        if p.checked:
            by_gen[it.generator or "(unknown)"].append((it.label, p.pred))
    by_final: dict[str, list[tuple[int, int]]] = defaultdict(list)  # erroneous solutions whose answer is right?
    for it, p in zip(items, preds, strict=True):
        if p.checked and it.label >= 0 and it.final_answer_correct is not None:
            by_final["final_answer_correct" if it.final_answer_correct else "final_answer_wrong"].append((it.label, p.pred))
    reasons = Counter(p.reason or "unchecked" for p in preds)
    by_reason_outcome: dict[str, Counter] = defaultdict(Counter)
    for it, p in zip(items, preds, strict=True):
        by_reason_outcome[p.reason or "unchecked"][outcome(it.label, p.pred)] += 1
    return {
        "checked": score(pairs_checked),
        "all": score(pairs_all),
        "unchecked": len(items) - len(pairs_checked),
        "per_generator": {g: score(v) for g, v in sorted(by_gen.items())},
        "erroneous_by_final_answer": {k: score(v) for k, v in sorted(by_final.items())},
        "reasons": dict(reasons.most_common()),
        "outcomes_by_reason": {r: dict(c) for r, c in sorted(by_reason_outcome.items())},
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few plain-text lines (what the command prints)."""
    lines = []
    for name in ("checked", "all"):
        s = summary[name]
        lines.append(
            f"{name:8s} n={s['items']:4d}  F1 {_pct(s['f1'])}  acc erroneous {_pct(s['accuracy_erroneous'])} "
            f"(n={s['erroneous']})  acc correct {_pct(s['accuracy_correct'])} (n={s['correct']})  "
            f"too early {s['too_early']}  too late {s['too_late']}  missed {s['missed']}  "
            f"false alarms {s['false_alarms']}"
        )
    for g, s in summary["per_generator"].items():
        lines.append(f"  {g:30s} n={s['items']:4d}  F1 {_pct(s['f1'])}  err {_pct(s['accuracy_erroneous'])}  "
                     f"ok {_pct(s['accuracy_correct'])}")  # fmt: skip
    lines.append("reasons: " + ", ".join(f"{r} {n}" for r, n in summary["reasons"].items()))
    return "\n".join(lines)


def run_bench(
    data: str | Path,
    out_dir: str | Path,
    *,
    teacher: Teacher | None = None,
    critic: str | None = None,
    references: list[str | Path] | None = None,
    mode: str = "single_pass",
    limit: int | None = None,
    critic_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Ask `teacher` (or the model `critic`) about every item of `data`; write `items.jsonl` (one row per item:
    label, prediction, outcome, reason) and `summary.json` under `out_dir`; return the summary."""
    if (teacher is None) == (critic is None):
        raise UserError("locate-bench: give either a teacher or a critic model")
    items = load_items(data)[:limit]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    refs_list = load_references(references or [])
    refs = match_reference(items, refs_list)
    blind = [it.id for it in items if not it.problem and it.id not in refs]
    if blind:
        raise UserError(
            f"{data}: {len(blind)} of {len(items)} rows carry a problem id but no problem text "
            f"(corrections.jsonl, e.g. {blind[0]!r}): pass the run's data file with --reference"
        )
    if critic is not None:
        preds, usage = ask_critic(critic, items, out, **(critic_options or {}))
        who: dict[str, Any] = {"critic": critic, "prompt": "correction_plain"}
    else:
        assert teacher is not None
        preds = ask_teacher(teacher, items, refs, mode)
        usage = teacher.usage()
        who = {"teacher": teacher.describe(), "mode": mode}
    rows = [
        {"id": it.id, "generator": it.generator, "label": it.label, "pred": p.pred,
         "outcome": outcome(it.label, p.pred), "checked": p.checked, "reason": p.reason, "error": p.error,
         "reference": refs[it.id].id if it.id in refs else None, "n_steps": len(it.steps),
         "final_answer_correct": it.final_answer_correct}
        for it, p in zip(items, preds, strict=True)
    ]  # fmt: skip
    summary = {
        "data": str(data), **who,
        "reference_files": [str(r) for r in references or []],
        "reference_coverage": {"matched": len(refs), "items": len(items),
                               "rate": len(refs) / len(items) if items else None},
        **summarise(items, preds),
        "cost": usage,
        "metric": "ProcessBench: accuracy on erroneous (predicted index == label) and on correct (predicted -1) "
        "solutions, F1 = harmonic mean",
    }  # fmt: skip
    write_jsonl(out / "items.jsonl", rows)
    write_json(out / "summary.json", summary)
    return summary


def main(args: Any) -> int:
    """The CLI subcommand (see cli.build_parser)."""
    from .config import RunConfig, TeacherConfig
    from .teachers import make_teacher

    tag = args.critic.replace("/", "_") if args.critic else args.teacher
    out = Path(args.out or Path("locate-bench") / f"{Path(args.data).stem}-{tag}")
    teacher = None
    if not args.critic:
        fields: dict[str, Any] = {"kind": args.teacher}
        for key in ("model", "base_url", "api_key_env", "max_tokens", "cache_dir", "price_in_per_1m", "price_out_per_1m"):
            if getattr(args, key, None) is not None:
                fields[key] = getattr(args, key)
        if args.teacher == "openai" and "cache_dir" not in fields:
            fields["cache_dir"] = str(out / "teacher_cache")
        try:
            tcfg = TeacherConfig(**fields)
        except ValidationError as e:
            err = e.errors()[0]
            raise UserError(f"--{'.'.join(str(p) for p in err['loc']).replace('_', '-')}: {err['msg']}") from None
        cfg = RunConfig(name="locate-bench", data={}, teacher=tcfg)
        teacher = make_teacher(cfg, out)
    summary = run_bench(
        args.data, out, teacher=teacher, critic=args.critic, references=args.reference or [], mode=args.mode,
        limit=args.limit, critic_options={"max_new_tokens": args.max_tokens or 512} if args.critic else None,
    )
    cov = summary["reference_coverage"]
    print(f"[locate-bench] {summary['data']}: reference matched {cov['matched']}/{cov['items']}", file=sys.stderr)
    if summary["unchecked"]:
        rows = [json.loads(line) for line in (out / "items.jsonl").read_text(encoding="utf-8").splitlines()]
        kinds = Counter((r["error"] or "unknown").split(":")[0] for r in rows if not r["checked"])
        print(f"[locate-bench] {summary['unchecked']} items not judged: "
              + ", ".join(f"{k} {n}" for k, n in kinds.most_common()), file=sys.stderr)  # fmt: skip
    print(format_summary(summary))
    print(f"[locate-bench] {out / 'summary.json'}, {out / 'items.jsonl'}", file=sys.stderr)
    return 0
