"""Stage `elad-report`: ELAD's question, answered from the run: does the selection pay for its own sampling?

One table per run: for each arm (EGSS, entropy-only, random at equal total compute), the problems the teacher
annotated, the student tokens spent on selection (inter and intra separately), the teacher tokens (real for an LLM
teacher, estimated in student tokens for the rule-based one), the total compute, the rationales kept, and the
trained student's greedy accuracy with n. Written to `elad-report/elad.md` and `summary.json`; redone every run.
"""

from __future__ import annotations

from ..config import RunConfig
from ..io import atomic_write_text, read_json, read_jsonl, write_json
from . import Stage
from . import evaluate as ev
from .common import StageDef
from .elad_sft import ARM_STAGE


def stage(cfg: RunConfig) -> Stage:
    return Stage(cfg, "elad-report")


def _accuracy(cfg: RunConfig, tag: str) -> dict:
    m = ev.stage(cfg, tag).manifest_path  # eval-<tag>, or eval-<tag>-cot with the CoT prompt
    if not m.exists():
        return {}
    summ = read_json(m).get("summary", {})
    return {s: {"accuracy": v.get("greedy_accuracy"), "n": v.get("problems")} for s, v in summ.items()}


def run(cfg: RunConfig) -> dict:
    st = stage(cfg).start()
    sel = read_json(cfg.run_dir / "elad-select" / "selection.json")
    cost = sel["cost"]
    revised = read_jsonl(cfg.run_dir / "elad-revise" / "revised.jsonl")
    real_teacher = {r["id"]: r.get("teacher_tokens", 0) for r in revised}
    inter = cost["inter"]["new_tokens"] + cost["inter"]["prompt_tokens"]
    intra = cost["intra"]["new_tokens"] + cost["intra"]["prompt_tokens"]
    spent = {"egss": (inter, intra), "entropy": (inter, 0), "random": (0, 0)}
    est = cost["est_teacher_tokens_per_problem"]
    base = _accuracy(cfg, "base")
    arms = {}
    for arm, ids in sel["selection"].items():
        arms[arm] = {
            "problems": len(ids),
            "student_tokens_inter": spent[arm][0],
            "student_tokens_intra": spent[arm][1],
            "teacher_tokens_real": sum(real_teacher.get(i, 0) for i in ids),
            "teacher_tokens_est": round(len(ids) * est),
            "teacher_tokens_saved_est": round((sel["pool"] - len(ids)) * est),
            "total_compute": cost["total_compute"][arm],
            "rationales_kept": sum(1 for r in revised if arm in r["arms"] and r["kept"]),
            "eval": _accuracy(cfg, ARM_STAGE[arm]),
        }
    lines = [
        "# ELAD: does the selection pay for its own sampling?", "",
        f"Pool {sel['pool']} problems; teacher budget for EGSS {sel['budgets']['egss']}; one teacher token = "
        f"{cost['teacher_token_weight']} student tokens; estimated teacher tokens per problem {est} "
        "(grounded correction prompt + reference solution, in student tokens). Arms at equal total compute: "
        "entropy-only and random spend the selection tokens they save on more teacher annotations.", "",
        "| arm | problems | student tok. inter | student tok. intra | teacher tok. (real) | teacher tok. (est.) "
        "| total compute | rationales kept | accuracy (n) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for arm, a in arms.items():
        acc = "; ".join(f"{s}: {100 * v['accuracy']:.1f}% (n={v['n']})" for s, v in a["eval"].items()
                        if v.get("accuracy") is not None) or "-"  # fmt: skip
        lines.append(f"| {arm} | {a['problems']} | {a['student_tokens_inter']} | {a['student_tokens_intra']} | "
                     f"{a['teacher_tokens_real']} | {a['teacher_tokens_est']} | {a['total_compute']} | "
                     f"{a['rationales_kept']} | {acc} |")  # fmt: skip
    base_acc = "; ".join(f"{s}: {100 * v['accuracy']:.1f}% (n={v['n']})" for s, v in base.items()
                         if v.get("accuracy") is not None) or "-"  # fmt: skip
    saved = arms["egss"]["teacher_tokens_saved_est"]
    # Cost alone: selection pays for its sampling once a teacher token costs more than this many student tokens.
    break_even = round((inter + intra) / saved, 3) if saved else None
    lines += ["", f"Base student (no SFT): {base_acc}.", "",
              f"EGSS saves an estimated {saved} teacher tokens against annotating the whole pool, for "
              f"{inter + intra} student tokens of selection sampling ({inter} inter, {intra} intra): on cost alone "
              f"the selection pays for its sampling when one teacher token costs more than {break_even} student "
              "tokens; whether it also buys accuracy is the table's last column (EGSS vs random at equal compute).",
              ""]  # fmt: skip
    atomic_write_text(st.dir / "elad.md", "\n".join(lines) + "\n")
    write_json(st.dir / "summary.json", {"arms": arms, "base": base, "cost": cost, "break_even_weight": break_even})
    print("\n".join(lines))
    return st.finish({"arms": len(arms)}, arms=arms, break_even_weight=break_even)


STAGE = StageDef("elad-report", "ELAD: selection cost vs accuracy per arm, at equal total compute", stage, run,
                 always=True)  # fmt: skip
