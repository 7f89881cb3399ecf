"""The optional LLM judge (`evaluate.judge`, judge.py): verdict parsing of untrusted replies, caching (a re-run sends
nothing), the eval stage and report with a judge (stdlib stub, fast), and the real llama.cpp server (slow)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from servers import CountingProxy, _Handler, _Server, completion, llama_server

from supercorrect.config import RunConfig, load_config
from supercorrect.judge import judge_rows, make_judge, parse_verdict, protocol
from supercorrect.schema import Problem


@pytest.mark.parametrize(
    ("reply", "verdict", "answer"),
    [
        ('{"answer": "12", "correct": true}', True, "12"),
        ('```json\n{"answer": "1/2", "correct": false}\n```', False, "1/2"),
        ('Sure. {"respond_answer": "7", "correct": true} Hope it helps', True, "7"),  # the official field name
        ('"answer": "9", "correct": false', False, "9"),
        ("correct: yes", True, None),
        ('{"correct": "true"}', True, None),  # a string, not a boolean: the pair fallback reads it
        ("correct: true ... wait, correct: false", None, None),  # contradicts itself
        ("The student is right.", None, None),
        ("", None, None),
        (None, None, None),
        ("{" * 5000 + "correct: true", True, None),
        ('{"correct": true}' + "x" * 30_000, None, None),  # over the length bound: not read
        ("<script>correct</script> {nested: {json}}", None, None),
    ],
)
def test_parse_verdict(reply, verdict, answer) -> None:
    assert parse_verdict(reply) == (verdict, answer)


# ---- a stdlib judge: reads the reference and the solution's last number from the prompt ----------------------


class _JudgeHandler(_Handler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.server.record(self)
        prompt = body["messages"][-1]["content"]
        ref = re.search(r"Reference answer: (.*)", prompt).group(1).strip()
        solution = prompt.split("Student's solution:", 1)[1].rsplit("Reply with", 1)[0]
        if "GARBAGE" in solution:
            text = "I cannot decide. ¯\\_(ツ)_/¯ {not json"
        else:
            nums = re.findall(r"-?\d+", solution)
            said = nums[-1] if nums else ""
            text = json.dumps({"answer": said, "correct": said == ref})
        self.reply(200, {"Content-Type": "application/json"}, json.dumps(completion(text)).encode())


class JudgeStub(_Server):
    def __init__(self) -> None:
        super().__init__(_JudgeHandler)


def cfg_with_judge(tmp_path: Path, url: str, **more) -> RunConfig:
    return RunConfig.model_validate({
        "name": "j", "run_root": str(tmp_path / "runs"), "data": {"test": {"kind": "synthetic", "split": "test"}},
        "evaluate": {"judge": {"model": "stub-judge", "base_url": url, "api_key_env": "SC_NO_SUCH_KEY",
                               "max_retries": 0, **more}},
    })  # fmt: skip


def rows_and_problems() -> tuple[list[dict], list[Problem]]:
    problems = [Problem(id=f"p{i}", question=f"What is {i} + {i}?", solution="", answer=str(2 * i), source="t")
                for i in range(4)]  # fmt: skip
    texts = ["<Answer>0</Answer>", "I think 3", "so GARBAGE 4", "the sum is \\boxed{6}. Check 7"]
    rule = [True, False, True, True]  # rule-based verdicts (as the grader would give); row 3 differs from the judge
    rows = [{"id": p.id, "greedy": True, "sample": 0, "text": t, "correct": c, "answer": p.answer, "predicted": None,
             "reason": "correct" if c else "wrong"} for p, t, c in zip(problems, texts, rule, strict=True)]  # fmt: skip
    return rows, problems


def test_judge_rows_counts_unparsed_caches_and_lists_disagreements(tmp_path: Path) -> None:
    server = JudgeStub()
    try:
        cfg = cfg_with_judge(tmp_path, server.url)
        rows, problems = rows_and_problems()
        summary = judge_rows(make_judge(cfg), rows, problems)
        assert [r["judge_correct"] for r in rows] == [True, False, None, False]
        assert rows[2]["judge_error"] == "unparsed"
        assert summary["unparsed"] == 1 and summary["failed"] == 0 and summary["judged"] == 3
        assert summary["greedy_accuracy"] == 0.25 and summary["greedy_rule_accuracy"] == 0.75
        assert summary["disagreements"] == 1 and summary["rules_only_correct"] == 1
        assert server.chat_requests() == 4
        again, _ = rows_and_problems()
        judge2 = make_judge(cfg)
        assert judge_rows(judge2, again, problems)["greedy_accuracy"] == 0.25
        assert server.chat_requests() == 4 and judge2.usage.requests_sent == 0  # all from the judge cache
        assert (tmp_path / "runs" / "j" / "judge_cache").is_dir()
    finally:
        server.stop()


def test_judge_failures_are_counted_not_raised(tmp_path: Path) -> None:
    cfg = cfg_with_judge(tmp_path, "http://127.0.0.1:9/v1", timeout_s=1)  # nothing listens on port 9
    rows, problems = rows_and_problems()
    summary = judge_rows(make_judge(cfg), rows, problems)
    assert summary["failed"] == 4 and summary["greedy_accuracy"] == 0.0 and summary["agreement"] is None
    assert all(r["judge_correct"] is None and r["judge_error"].startswith("connection") for r in rows)


def test_protocol_names_the_settings(tmp_path: Path) -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "official_eval.yaml")
    p = protocol(cfg)
    assert p["name"].startswith("official SuperCorrect sampling") and "extractor=qwen" in p["name"]
    assert p["judge"] == "gpt-4o-mini-2024-07-18" and p["sampled"]["top_p"] == 0.8
    default = protocol(cfg_with_judge(tmp_path, "http://x"))
    assert default["name"].startswith("supercorrect default; extractor=default; judge=stub-judge")


def test_eval_stage_and_report_with_a_judge(tmp_path: Path, tiny_model_dir: Path) -> None:
    from supercorrect.io import read_json, read_jsonl
    from supercorrect.pipeline import run_pipeline

    server = JudgeStub()
    try:
        cfg = {
            "name": "tiny-judge", "run_root": str(tmp_path / "runs"), "student": {"model": str(tiny_model_dir)},
            "generation": {"batch_size": 8, "max_new_tokens": 16},
            "data": {"test": {"kind": "synthetic", "split": "test", "n": 5, "max_steps": 2}},
            "grading": {"extractor": "qwen"},
            "evaluate": {"sets": ["test"], "judge": {"model": "stub-judge", "base_url": server.url,
                                                     "api_key_env": "SC_NO_SUCH_KEY"}},
            "stages": ["eval-base", "report"],
        }  # fmt: skip
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg))
        run_pipeline(load_config(path))
        run = tmp_path / "runs" / "tiny-judge"
        man = read_json(run / "eval-base" / "manifest.json")
        judge = man["summary"]["test"]["judge"]
        assert judge["model"] == "stub-judge" and judge["judged"] + judge["unparsed"] + judge["failed"] == 5
        assert "extractor=qwen" in man["protocol"]["name"] and man["protocol"]["judge"] == "stub-judge"
        rows = read_jsonl(run / "eval-base" / "test" / "samples.jsonl")
        assert all("judge_correct" in r for r in rows)
        assert (run / "eval-base" / "test" / "judge_disagreements.jsonl").exists()
        report = (run / "report" / "report.md").read_text()
        assert "## Evaluation protocol" in report and "extractor=qwen" in report
        assert "LLM judge (stub-judge) beside rule-based grading" in report
        assert server.chat_requests() == 5
    finally:
        server.stop()


@pytest.mark.slow
def test_judge_on_the_real_llama_server(tmp_path: Path, tmp_path_factory) -> None:
    """A real small model as the judge: its replies are whatever it writes; every row ends judged, unparsed or
    failed (never a crash), and a re-run sends nothing (counted at the server, through a proxy)."""
    with llama_server(tmp_path_factory.mktemp("llama") / "server.log") as port:
        proxy = CountingProxy(port)
        try:
            cfg = cfg_with_judge(tmp_path, proxy.url, max_tokens=48, timeout_s=120, max_concurrency=1)
            rows, problems = rows_and_problems()
            summary = judge_rows(make_judge(cfg), rows, problems)
            assert summary["judged"] + summary["unparsed"] + summary["failed"] == 4
            assert summary["failed"] == 0, [r["judge_error"] for r in rows]
            sent = len(proxy.chat_records())
            assert sent == 4
            again, _ = rows_and_problems()
            assert judge_rows(make_judge(cfg), again, problems)["unparsed"] == summary["unparsed"]
            assert len(proxy.chat_records()) == sent
            assert [r["judge_correct"] for r in again] == [r["judge_correct"] for r in rows]
        finally:
            proxy.stop()



def test_judge_through_the_batch_api(tmp_path: Path) -> None:
    """`evaluate.judge.batch: true`: the judge's requests go as one batch (loopback files+batches server), land in
    the judge cache, and a re-run sends nothing."""
    from batch_server import BatchServer

    with BatchServer() as server:
        cfg = cfg_with_judge(tmp_path, server.url, batch=True, batch_poll_s=0.02)
        rows, problems = rows_and_problems()
        summary = judge_rows(make_judge(cfg), rows, problems)
        # the batch server answers "echo <hash>": no verdict in it, so every row is unparsed, none failed
        assert summary["unparsed"] == 4 and summary["failed"] == 0
        assert server.created == 1 and server.live == 0 and sum(server.paid.values()) == 4
        calls = sum(server.calls.values())
        judge_rows(make_judge(cfg), rows_and_problems()[0], problems)
        assert sum(server.calls.values()) == calls
