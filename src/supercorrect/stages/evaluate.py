"""Stage `eval-<model>`: accuracy of a model on the evaluation sets, with the HT prompt (or the CoT baseline).

Greedy decoding always; with `evaluate.samples: k` also k sampled solutions per problem (sampled accuracy, maj@k,
unbiased pass@k, and stability: the spread of accuracy across sampling rounds). Writes, per evaluation set,
`<set>/samples.jsonl` (one graded row per sample) and `<set>/summary.json`, and `summary.json` for all sets.
"""

from __future__ import annotations

import sys

from .. import prompts, xmlformat
from ..config import RunConfig
from ..data import load_optional
from ..errors import UserError
from ..generation import SamplingSettings, generate_resumable, make_backend
from ..grading import Grader
from ..io import write_json, write_jsonl
from ..judge import judge_rows, make_judge, protocol, write_disagreements
from ..metrics import error_location, mean, summarize
from ..models import chat_prompt
from ..teachers import CorrectionRequest, make_teacher
from ..teachers.llm import format_steps
from . import Stage
from .common import STOP, StageDef, model_path


def self_correction(cfg, st, set_name, backend, grader, problems, greedy, max_new) -> dict:
    """The model gets the plain correction prompt on its own greedy solution (paper's self-correction test).

    Returns accuracy before and after and their difference; with `evaluate.error_location`, also, on the wrong
    solutions that the teacher can locate, how often the model's trace flags the teacher's step k and how often
    it then also reaches the right answer.
    """
    by_id = {p.id: p for p in problems}
    steps = {r["id"]: xmlformat.step_texts(xmlformat.parse(r["text"])) for r in greedy}
    items = [
        (
            r["id"],
            chat_prompt(
                backend.tokenizer,
                prompts.render("correction_plain", problem=by_id[r["id"]].question,
                               steps=format_steps(steps[r["id"]], r["text"])),
            ),
        )
        for r in greedy
    ]
    settings = SamplingSettings(max_new_tokens=max_new, stop=("</Answer>",), seed=cfg.seed)
    gens, _ = generate_resumable(backend, items, settings, st.dir / set_name / "selfcorrect.shard.jsonl",
                                 desc=f"{st.name} {set_name} self-correction")
    traces = {k: v[0]["text"] for k, v in gens.items()}
    grades = grader.grade_many([(traces[r["id"]], r["answer"]) for r in greedy])
    rows = [
        {"id": r["id"], "before": r["correct"], "after": g.correct, "trace": traces[r["id"]],
         "model_step": xmlformat.parse(traces[r["id"]]).first_error}
        for r, g in zip(greedy, grades, strict=True)
    ]
    out = {
        "accuracy_before": mean(r["before"] for r in rows),
        "accuracy_after": mean(r["after"] for r in rows),
        "wrong_to_right": sum(1 for r in rows if r["after"] and not r["before"]),
        "right_to_wrong": sum(1 for r in rows if r["before"] and not r["after"]),
    }
    out["delta"] = out["accuracy_after"] - out["accuracy_before"]
    if cfg.evaluate.error_location:
        wrong = [r for r in rows if not r["before"]]
        teacher = make_teacher(cfg, cfg.run_dir)
        texts = {g["id"]: g["text"] for g in greedy}
        req = [CorrectionRequest(by_id[r["id"]], texts[r["id"]], steps[r["id"]]) for r in wrong]
        corrections = teacher.corrections(req) if req else []
        for r, t in zip(wrong, corrections, strict=True):
            r["teacher_step"] = xmlformat.parse(t.text).first_error if t.text else None
        same, guess, guess_step = error_location(rows)  # per problem id, on the wrong solutions the teacher located
        judged = len(same)
        hits = [r for r in wrong if same.get(r["id"])]
        out["error_location"] = {
            "wrong_solutions": len(wrong),
            "teacher_located": judged,
            "model_located_same_step": len(hits),
            "located_rate": len(hits) / judged if judged else None,
            "located_and_corrected": sum(1 for r in hits if r["after"]),
            "corrected_rate": sum(1 for r in hits if r["after"]) / judged if judged else None,
            "model_named_a_step": sum(1 for r in wrong if r["id"] in same and r["model_step"] is not None),
            "constant_guess_step": guess_step,
            "constant_guess_rate": sum(guess.values()) / judged if judged else None,
        }
    write_jsonl(st.dir / set_name / "selfcorrect.jsonl", rows)
    return out


def stage(cfg: RunConfig, tag: str, prompt: str | None = None) -> Stage:
    prompt = prompt or ("cot" if tag == "cot-sft" else cfg.evaluate.prompt)
    name = f"eval-{tag}" + ("-cot" if prompt == "cot" and tag != "cot-sft" else "")
    specs = {s: cfg.data[s].fingerprint() for s in cfg.evaluate.sets if s in cfg.data}
    return Stage(
        cfg,
        name,
        sections=("evaluate", "generation"),
        inputs=(tag,) if tag != "base" else (),
        # The base model's evaluation draws nothing from the training seed when it only decodes greedily: the
        # greedy and self-correction passes are argmax decoding, the error-location teacher and the judge take no
        # seed. Only `evaluate.samples` (sampled at seed + 1) makes it seed-dependent. (A trained model's
        # evaluation depends on the seed through its input's fingerprint anyway.)
        seeded=tag != "base" or bool(cfg.evaluate.samples),
        extra={"prompt": prompt, "data": specs, "model": cfg.student.model if tag == "base" else tag,
               **({"extractor": cfg.grading.extractor} if cfg.grading.extractor != "default" else {})},
    )


def run(cfg: RunConfig, tag: str = "base", prompt: str | None = None) -> dict:
    st = stage(cfg, tag, prompt)
    prompt = st.extra["prompt"]
    for s in cfg.evaluate.sets:
        if s not in cfg.data:
            raise UserError(f"evaluate.sets: no data set named {s!r} (have: {', '.join(cfg.data)})")
    for s in cfg.evaluate.self_correction_sets or []:
        if s not in cfg.evaluate.sets:
            raise UserError(f"evaluate.self_correction_sets: {s!r} is not in evaluate.sets ({cfg.evaluate.sets})")
    path = model_path(cfg, tag)
    judge_chat = make_judge(cfg)  # before any work: a missing key fails here
    st.start()
    backend = make_backend(
        cfg.generation.backend, path, cfg.student.dtype, cfg.generation.batch_size,
        cfg.generation.vllm_gpu_memory_utilization,
        cfg.generation.tensor_parallel_size, cfg.generation.data_parallel_size,
    )
    max_new = cfg.evaluate.max_new_tokens or cfg.generation.max_new_tokens
    summaries: dict[str, dict] = {}
    tokens = 0
    try:
        with Grader(extractor=cfg.grading.extractor) as grader:
            for set_name in cfg.evaluate.sets:
                spec = cfg.data[set_name]
                problems, why = load_optional(spec, cfg.base_dir)
                if problems is None:
                    print(f"[{st.name}] notice: skipping {set_name!r}: {why}", file=sys.stderr)
                    summaries[set_name] = {"skipped": why}
                    continue
                texts = [chat_prompt(backend.tokenizer, prompts.render(prompt, problem=p.question)) for p in problems]
                items = [(p.id, t) for p, t in zip(problems, texts, strict=True)]
                runs = [("greedy", SamplingSettings(max_new_tokens=max_new, stop=STOP[prompt], seed=cfg.seed))]
                if cfg.evaluate.samples:
                    runs.append(
                        (
                            "sampled",
                            SamplingSettings(
                                n=cfg.evaluate.samples,
                                temperature=cfg.evaluate.temperature,
                                top_p=cfg.generation.top_p,
                                max_new_tokens=max_new,
                                stop=STOP[prompt],
                                seed=cfg.seed + 1,
                            ),
                        )
                    )
                rows = []
                for kind, settings in runs:
                    gens, stats = generate_resumable(
                        backend, items, settings, st.dir / set_name / f"{kind}.shard.jsonl",
                        desc=f"{st.name} {set_name} {kind}",
                    )
                    tokens += stats["new_tokens"]
                    for p in problems:
                        for i, c in enumerate(gens[p.id]):
                            rows.append(
                                {
                                    "id": p.id, "greedy": kind == "greedy", "sample": i, "text": c["text"],
                                    "n_tokens": c["n_tokens"], "finish": c["finish"], "answer": p.answer,
                                    "level": p.level, "subject": p.subject, "source": p.source,
                                }
                            )
                grades = grader.grade_many([(r["text"], r["answer"]) for r in rows], desc=f"grade {set_name}")
                for r, g in zip(rows, grades, strict=True):
                    r.update(correct=g.correct, reason=g.reason, predicted=g.predicted, extracted_from=g.source)
                judged = judge_rows(judge_chat, rows, problems, f"judge {set_name}") if judge_chat is not None else None
                write_jsonl(st.dir / set_name / "samples.jsonl", rows)
                summaries[set_name] = summarize(rows, ks=(1, 2, 4, 8))
                if judged is not None:
                    summaries[set_name]["judge"] = judged
                    write_disagreements(st.dir / set_name / "judge_disagreements.jsonl", rows)
                sc_sets = cfg.evaluate.self_correction_sets
                if tag in cfg.evaluate.self_correction and (sc_sets is None or set_name in sc_sets):
                    summaries[set_name]["self_correction"] = self_correction(
                        cfg, st, set_name, backend, grader, problems, [r for r in rows if r["greedy"]], max_new
                    )
                write_json(st.dir / set_name / "summary.json", summaries[set_name])
                acc = summaries[set_name].get("greedy_accuracy", 0.0)
                print(f"[{st.name}] {set_name}: greedy accuracy {acc:.3f} on {len(problems)} problems", flush=True)
    finally:
        backend.close()
    write_json(st.dir / "summary.json", summaries)
    return st.finish({"sets": len(summaries), "new_tokens": tokens}, model=tag, prompt=prompt, summary=summaries,
                     protocol=protocol(cfg), generation=backend.describe())


def stage_def(tag: str, prompt: str | None = None) -> StageDef:
    """The `eval-<tag>` stage (`eval-base-cot` with the CoT prompt) for the model stage `tag` writes."""
    what = "the base student" if tag == "base" else f"the {tag} model"
    return StageDef(
        f"eval-{tag}" + ("-cot" if prompt == "cot" else ""),
        f"evaluate {what}" + (" with the plain CoT prompt" if prompt == "cot" else ""),
        lambda cfg: stage(cfg, tag, prompt),
        lambda cfg: run(cfg, tag, prompt),
    )
