"""The optional LLM judge (`evaluate.judge`) and the name of the evaluation protocol a number was measured with.

Why: the paper's numbers were graded by GPT-4o-mini (the official SuperCorrect repository, `llm_evaluation.py`:
gpt-4o-mini-2024-07-18 is given the ground truth and the model's XML response and returns the extracted answer
and a boolean `correct`), while this project grades by rule (answer extraction + Math-Verify) so runs are
reproducible offline. With a judge configured, every evaluated solution gets both verdicts; the report shows
the two accuracies side by side and lists where they disagree, so a user can see how much the grader matters.

The judge is any OpenAI-compatible model behind the same client as the API teacher (`OpenAIChat`: retries,
content-addressed cache under `<run_dir>/judge_cache`, spend caps, `<run_dir>/judge_spend.jsonl`), so a re-run
asks nothing twice. Its prompt is `prompts/judge.txt` (problem, reference answer, solution; a JSON reply).
Its reply is untrusted text: `parse_verdict` reads a JSON object or a `"correct": true/false` pair and nothing
else; a reply it cannot read is counted as `unparsed`, a request that failed as `failed`, and both count as
not correct in the judge's accuracy (as in the official script, where a failed judgement is not correct).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import prompts
from .config import RunConfig
from .schema import Problem

JUDGE_CACHE = "judge_cache"
JUDGE_LEDGER = "judge_spend.jsonl"
JUDGE_BATCHES = "judge_batches"
MAX_REPLY_CHARS = 20_000  # a longer reply is not read (untrusted text, bounded work)
_OBJECT = re.compile(r"\{[^{}]{0,2000}\}")
_PAIR = re.compile(r"""["']?correct["']?\s*[:=]\s*["']?(true|false|yes|no)\b""", re.I)
_ANSWER = re.compile(r"""["']?answer["']?\s*[:=]\s*"([^"\n]{0,500})\"""", re.I)


def parse_verdict(text: str | None) -> tuple[bool | None, str | None]:
    """(correct, the judge's reading of the answer) from a judge reply; (None, None) when it says neither."""
    if not text or len(text) > MAX_REPLY_CHARS:
        return None, None
    for m in reversed(list(_OBJECT.finditer(text))):
        try:
            obj = json.loads(m.group())
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("correct"), bool):
            answer = obj.get("answer", obj.get("respond_answer"))
            return obj["correct"], None if answer is None else str(answer)[:500]
    pairs = _PAIR.findall(text)
    if len(pairs) >= 1 and len({p.lower() in ("true", "yes") for p in pairs}) == 1:
        answer = _ANSWER.search(text)
        return pairs[0].lower() in ("true", "yes"), answer.group(1) if answer else None
    return None, None


def conversation(problem: Problem, solution: str) -> list[dict[str, Any]]:
    text = prompts.render("judge", problem=problem.question, reference=problem.answer,
                          solution=solution.strip() or "(empty solution)")  # fmt: skip
    return [{"role": "user", "content": text}]


def make_judge(cfg: RunConfig):
    """The judge's chat client (an `OpenAIChat`, or a `BatchChat` with `evaluate.judge.batch: true`), or None
    when `evaluate.judge` is not set."""
    j = cfg.evaluate.judge
    if j is None:
        return None
    from .errors import UserError
    from .teachers import batched, make_openai_chat

    if not j.model:
        raise UserError("evaluate.judge.model is required")
    chat = make_openai_chat(j, cfg.run_dir / JUDGE_CACHE, cfg.run_dir / JUDGE_LEDGER)
    return batched(chat, j, cfg.run_dir / JUDGE_BATCHES) if j.batch else chat  # batch: the Batch API, half price


def judge_rows(chat: Any, rows: list[dict], problems: Sequence[Problem], desc: str = "judge") -> dict[str, Any]:
    """Judge every graded row (`text`, `correct`, `greedy`, `id`) in place (`judge_correct`: True, False or None;
    `judge_answer`; `judge_error`) and return the judge's summary for the set."""
    by_id = {p.id: p for p in problems}
    results = chat.chat_many([conversation(by_id[r["id"]], r["text"]) for r in rows], desc)
    unparsed = failed = 0
    for r, res in zip(rows, results, strict=True):
        verdict, answer = parse_verdict(res.text)
        r["judge_correct"], r["judge_answer"] = verdict, answer
        r["judge_error"] = res.error if res.text is None else (None if verdict is not None else "unparsed")
        if res.text is None:
            failed += 1
        elif verdict is None:
            unparsed += 1
    out: dict[str, Any] = {"model": chat.model, "judged": len(rows) - failed - unparsed, "unparsed": unparsed,
                           "failed": failed}  # fmt: skip
    for kind, subset in (("greedy", [r for r in rows if r["greedy"]]), ("sampled", [r for r in rows if not r["greedy"]])):
        if subset:
            out[f"{kind}_accuracy"] = sum(r["judge_correct"] is True for r in subset) / len(subset)
            out[f"{kind}_rule_accuracy"] = sum(bool(r["correct"]) for r in subset) / len(subset)
    decided = [r for r in rows if r["judge_correct"] is not None]
    differ = [r for r in decided if r["judge_correct"] != bool(r["correct"])]
    out.update(
        agreement=(len(decided) - len(differ)) / len(decided) if decided else None,
        disagreements=len(differ),
        judge_only_correct=sum(1 for r in differ if r["judge_correct"]),
        rules_only_correct=sum(1 for r in differ if not r["judge_correct"]),
        usage=chat.usage.to_dict(),
    )
    return out


def disagreements(rows: list[dict]) -> list[dict]:
    """The rows where the judge and the rule-based grade differ (what the report lists)."""
    keep = ("id", "greedy", "sample", "answer", "predicted", "correct", "reason", "judge_answer", "judge_correct")
    return [{k: r.get(k) for k in keep} for r in rows
            if r.get("judge_correct") is not None and r["judge_correct"] != bool(r["correct"])]  # fmt: skip


def protocol(cfg: RunConfig) -> dict[str, Any]:
    """Which evaluation protocol the numbers of an eval stage used: say it beside every number."""
    e, g = cfg.evaluate, cfg.generation
    official = (cfg.evaluate.samples >= 1 and e.temperature == 0.7 and g.top_p == 0.8
                and (e.max_new_tokens or g.max_new_tokens) == 2048)  # fmt: skip
    out: dict[str, Any] = {
        "prompt": e.prompt,
        "extractor": cfg.grading.extractor,
        "grader": "Math-Verify (rule-based)",
        "judge": e.judge.model if e.judge else None,
        "greedy": {"max_new_tokens": e.max_new_tokens or g.max_new_tokens},
        "sampled": ({"n": e.samples, "temperature": e.temperature, "top_p": g.top_p,
                     "max_new_tokens": e.max_new_tokens or g.max_new_tokens} if e.samples else None),  # fmt: skip
    }
    out["name"] = (
        ("official SuperCorrect sampling (t=0.7, top_p=0.8, 2048 tokens)" if official else "supercorrect default")
        + f"; extractor={cfg.grading.extractor}"
        + (f"; judge={e.judge.model}" if e.judge else "; rule-based only")
    )
    return out


def write_disagreements(path: Path, rows: list[dict]) -> int:
    from .io import write_jsonl

    return write_jsonl(path, disagreements(rows))


def report_section(run_dir: Path, limit: int = 20) -> list[str]:
    """Markdown for the run report: the protocol of each eval stage and, where a judge ran, its accuracy beside
    the rule-based one and the first `limit` disagreements."""
    from .io import iter_jsonl_tolerant, read_json

    manifests = {m.parent.name: read_json(m) for m in sorted(run_dir.glob("eval-*/manifest.json"))}
    protocols = sorted({str((man.get("protocol") or {}).get("name")) for man in manifests.values()
                        if man.get("protocol")})  # fmt: skip
    parts = []
    if protocols:
        parts += ["## Evaluation protocol\n", *(f"- {p}" for p in protocols), ""]
    rows, listed = [], []
    for stage, man in manifests.items():
        for set_name, summ in sorted((man.get("summary") or {}).items()):
            j = summ.get("judge") if isinstance(summ, dict) else None
            if not j:
                continue
            for kind in ("greedy", "sampled"):
                if f"{kind}_accuracy" in j:
                    rows.append([stage, set_name, kind, _pct(j[f"{kind}_rule_accuracy"]), _pct(j[f"{kind}_accuracy"]),
                                 str(j["disagreements"]), str(j["unparsed"]), str(j["failed"])])  # fmt: skip
            for d in iter_jsonl_tolerant(run_dir / stage / set_name / "judge_disagreements.jsonl"):
                if len(listed) < limit:
                    listed.append(f"| {stage} | {set_name} | {d.get('id')} | {'greedy' if d.get('greedy') else 'sample'} "
                                  f"| {_cell(d.get('answer'))} | {_cell(d.get('predicted'))} | {_cell(d.get('judge_answer'))} "
                                  f"| {'correct' if d.get('correct') else 'wrong'} | "
                                  f"{'correct' if d.get('judge_correct') else 'wrong'} |")  # fmt: skip
    if rows:
        judge = next(((man.get("protocol") or {}).get("judge") for man in manifests.values()), None)
        parts += [f"## LLM judge ({judge}) beside rule-based grading\n",
                  "Accuracy by each grader on the same solutions; a judge reply that could not be read (*unparsed*) "
                  "or a failed request counts as not correct.\n",
                  "| stage | set | decoding | rule-based % | judge % | disagreements | unparsed | failed |",
                  "|---|---|---|---|---|---|---|---|", *("| " + " | ".join(r) + " |" for r in rows), ""]  # fmt: skip
    if listed:
        parts += [f"Disagreements (first {len(listed)}; all in `<stage>/<set>/judge_disagreements.jsonl`):\n",
                  "| stage | set | id | solution | reference | rule-based read | judge read | rule-based | judge |",
                  "|---|---|---|---|---|---|---|---|---|", *listed, ""]  # fmt: skip
    return parts


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _cell(x: Any) -> str:
    """Untrusted text in a Markdown table cell: one line, no pipes, bounded."""
    text = " ".join(str("" if x is None else x).split()).replace("|", "\\|")
    return text if len(text) <= 60 else text[:57] + "..."
