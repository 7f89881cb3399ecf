"""The teacher client and the templates stage against a faulty OpenAI-compatible server (tests/fault_server.py).

Every request ends answered (with exactly the server's text) or recorded as failed with its kind; nothing is
lost: a re-run sends only the failed requests. Retries wait at least what Retry-After asked (measured at the
server). The stage fails (exit 2, one line) only below `teacher.min_success_rate`, and a spend cap stops it
cleanly and resumably. The default variants use about 200 requests; `pytest --long` runs 1000+.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fault_server import (
    CLIENT_KIND,
    CLIENT_TIMEOUT_S,
    FAULTS,
    KEY_ENV,
    FaultPlan,
    FaultServer,
    expected_text,
    messages_key,
    run_cli,
    run_config,
    template_keys,
)

from supercorrect.io import read_json, read_jsonl
from supercorrect.teachers.openai_chat import OpenAIChat

MAX_RETRIES = 3
ANSWERED_FAULTS = ("ok", "length")


def report(name: str, data: dict[str, Any]) -> None:
    """Print the measured figures (run with -s to see them; docs/reliability.md quotes them)."""
    print(f"\n[reliability] {name}: {json.dumps(data, sort_keys=True)}")


def client(url: str, cache: Path, **kw: Any) -> OpenAIChat:
    settings: dict[str, Any] = dict(
        max_concurrency=16, max_retries=MAX_RETRIES, timeout_s=CLIENT_TIMEOUT_S, backoff_base_s=0.01, backoff_max_s=5.0,
        max_tokens=512, progress=False,
    )  # fmt: skip
    return OpenAIChat(model="fault-teacher", base_url=url, api_key_env=KEY_ENV, cache_dir=cache, **{**settings, **kw})


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, "sk-test-not-secret")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return "sk-test-not-secret"


def cache_files(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*.json") if p.is_file()]


# ---- chat_many -----------------------------------------------------------------------------------------------


def chat_many_under_faults(n: int, tmp_path: Path) -> None:
    convs = [[{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}] for i in range(n)]
    keys = [messages_key(c) for c in convs]
    cache = tmp_path / "cache"
    with FaultServer(FaultPlan(seed=7, always_fail=0.03)) as srv:
        chat = client(srv.url, cache)
        t0 = time.monotonic()
        results = chat.chat_many(convs)
        seconds = time.monotonic() - t0
        stats = srv.stats()
        log = srv.snapshot()

        # every request: answered with exactly the server's text, or failed with the kind of its last fault
        answered, failed = [], []
        for conv, key, res in zip(convs, keys, results, strict=True):
            attempts = log[key]
            last = attempts[-1].fault
            assert len(attempts) <= MAX_RETRIES + 1
            if res.text is not None:
                answered.append(key)
                assert last in ANSWERED_FAULTS, (key, last, res)
                full = expected_text(conv)
                if last == "length":
                    assert res.error_kind == "length" and res.text == full[: len(full) // 2]
                else:
                    assert res.error is None and res.text == full
            else:
                failed.append(key)
                assert res.error_kind == CLIENT_KIND[last], (res.error, last)
                assert len(attempts) == MAX_RETRIES + 1, "a failed request used all its retries"
        assert len(answered) + len(failed) == n
        assert stats["distinct"] == n
        assert chat.usage.requests_sent == stats["requests"], "every request the client sent arrived"
        assert chat.usage.retries == stats["requests"] - n
        assert set(stats["by_fault"]) >= set(FAULTS) - {"unauthorized"}, stats["by_fault"]
        assert stats["handler_errors"] == 0
        gaps = [gap for _, gap in stats["retry_after_gaps"]]
        assert gaps and all(gap >= asked for asked, gap in stats["retry_after_gaps"]), min(gaps)
        assert len(cache_files(cache)) == len(answered), "every answer is cached, no failure is"

        # the same batch again: answers come from the cache, only the failed requests are sent
        before = {k: len(v) for k, v in log.items()}
        again = client(srv.url, cache).chat_many(convs)
        after = srv.snapshot()
        resent = {k for k in after if len(after[k]) > before[k]}
        assert resent == set(failed)
        for first, second in zip(results, again, strict=True):
            if first.text is not None:
                assert second.cached and second.text == first.text
    report(
        "chat_many",
        {
            "conversations": n, "requests": stats["requests"], "by_fault": stats["by_fault"],
            "answered": len(answered), "failed": len(failed),
            "failed_by_kind": dict(Counter(r.error_kind for r in results if r.text is None)),
            "truncated": sum(r.error_kind == "length" for r in results),
            "retry_after_gaps_s": [round(min(gaps), 3), round(max(gaps), 3), len(gaps)],
            "resent": len(resent), "seconds": round(seconds, 1),
        },
    )  # fmt: skip


def test_chat_many_under_faults(key: str, tmp_path: Path) -> None:
    chat_many_under_faults(200, tmp_path)


@pytest.mark.long
def test_chat_many_under_faults_long(key: str, tmp_path: Path) -> None:
    chat_many_under_faults(1200, tmp_path)


def test_token_cap_is_never_exceeded(key: str, tmp_path: Path) -> None:
    convs = [[{"role": "user", "content": f"Question {i} " + "x" * 200}] for i in range(40)]
    cap = 3000
    with FaultServer(FaultPlan(rates={})) as srv:
        chat = client(srv.url, tmp_path, max_total_tokens=cap, spend_ledger=tmp_path / "spend.jsonl")
        results = chat.chat_many(convs)
        stats = srv.stats()
        sent = sum(r.text is not None for r in results)
        assert 0 < sent < len(convs) and stats["requests"] == sent
        assert stats["prompt_tokens"] + stats["completion_tokens"] <= cap
        assert {r.error_kind for r in results if r.text is None} == {"budget"}
        assert chat.usage.cumulative_tokens == stats["prompt_tokens"] + stats["completion_tokens"]
        # the cap covers earlier invocations (the ledger): the same cap again sends nothing
        assert all(r.error_kind == "budget" or r.cached for r in client(
            srv.url, tmp_path, max_total_tokens=cap, spend_ledger=tmp_path / "spend.jsonl").chat_many(convs))
        assert srv.requests() == sent


# ---- the templates stage through the CLI -----------------------------------------------------------------------


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def templates_under_faults(n: int, tmp_path: Path) -> None:
    with FaultServer(FaultPlan(seed=11, always_fail=0.03)) as srv:
        cfg = run_config(tmp_path, srv.url, n=n)
        keys = template_keys(cfg)
        t0 = time.monotonic()
        proc = run_cli("templates", str(cfg))
        seconds = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr[-3000:]
        stage = tmp_path / "runs" / "faulty" / "templates"
        man = read_json(stage / "manifest.json")
        stats = srv.stats()
        log = srv.snapshot()
        kept = {r["id"]: r for r in read_jsonl(stage / "hsft.jsonl")}
        dropped = {r["id"]: r for r in read_jsonl(stage / "dropped.jsonl")}

        # nothing lost: every problem is kept or dropped with a reason, and the teacher's failures are listed
        assert set(kept) | set(dropped) == set(keys) and not set(kept) & set(dropped)
        c = man["counts"]
        failed = {pid for pid, r in dropped.items() if r["reason"] == "teacher_failed"}
        assert c["teacher"]["requests"] == n and c["teacher"]["failed"] == len(failed)
        assert c["teacher"]["failed_by_kind"] == dict(Counter(dropped[p]["teacher_error_kind"] for p in failed))
        for pid, key in keys.items():
            last = log[key][-1].fault
            if pid in failed:
                assert dropped[pid]["teacher_error_kind"] == CLIENT_KIND[last] and dropped[pid]["detail"]
            elif last == "length":
                assert pid in dropped and dropped[pid]["reason"] == "no_answer"  # the cut text lost its <Answer>
            else:
                assert pid in kept, dropped.get(pid)
        assert c["teacher"]["success_rate"] >= 0.9
        assert man["teacher_usage"]["requests_sent"] == stats["requests"]
        assert stats["distinct"] == n and stats["handler_errors"] == 0
        gaps = stats["retry_after_gaps"]
        assert gaps and all(gap >= asked for asked, gap in gaps)

        # a forced re-run sends only the failed requests; everything else comes from the cache
        before = {k: len(v) for k, v in log.items()}
        proc = run_cli("templates", str(cfg), "--force")
        assert proc.returncode == 0, proc.stderr[-3000:]
        after = srv.snapshot()
        assert {k for k in after if len(after[k]) > before[k]} == {keys[p] for p in failed}
    report(
        "templates stage (CLI)",
        {
            "problems": n, "requests": stats["requests"], "by_fault": stats["by_fault"],
            "teacher": c["teacher"], "kept": c["kept"], "dropped_by_reason": c["dropped_by_reason"],
            "retry_after_gaps_s": [round(min(g for _, g in gaps), 3), round(max(g for _, g in gaps), 3), len(gaps)],
            "seconds": round(seconds, 1),
        },
    )  # fmt: skip


def test_templates_stage_under_faults(tmp_path: Path) -> None:
    templates_under_faults(200, tmp_path)


@pytest.mark.long
def test_templates_stage_under_faults_long(tmp_path: Path) -> None:
    templates_under_faults(1000, tmp_path)


def test_stage_fails_below_min_success_rate_and_resumes(tmp_path: Path) -> None:
    n = 40
    with FaultServer(FaultPlan(seed=3, always_fail=0.5)) as srv:
        cfg = run_config(tmp_path, srv.url, n=n, teacher={"max_retries": 1})
        keys = template_keys(cfg)
        proc = run_cli("templates", str(cfg))
        assert proc.returncode == 2
        line = one_error_line(proc.stderr)
        assert "teacher.min_success_rate 90%" in line and "run the same command again" in line, line
        stage = tmp_path / "runs" / "faulty" / "templates"
        assert not (stage / "manifest.json").exists()
        dropped = read_jsonl(stage / "dropped.jsonl")  # the partial outputs are written before the stage fails
        failed = {r["id"] for r in dropped if r["reason"] == "teacher_failed"}
        answered = n - len(failed)
        assert f"only {answered}/{n} teacher requests answered" in line
        assert len(cache_files(tmp_path / "runs" / "faulty" / "teacher_cache")) == answered

        # the endpoint recovers: the re-run sends exactly the failed requests, once each
        srv.plan = FaultPlan(rates={})
        before = srv.snapshot()
        proc = run_cli("templates", str(cfg))
        assert proc.returncode == 0, proc.stderr[-3000:]
        after = srv.snapshot()
        resent = {k: len(after[k]) - len(before.get(k, [])) for k in after}
        assert {k for k, v in resent.items() if v} == {keys[p] for p in failed}
        assert set(resent.values()) <= {0, 1}
        man = read_json(stage / "manifest.json")
        assert man["counts"]["teacher"]["answered"] == n and man["teacher_usage"]["cache_hits"] == answered
    report("min_success_rate", {"problems": n, "answered_first": answered, "resent": len(failed)})


def test_spend_cap_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    n = 30
    prices = {"price_in_per_1m": 1000.0, "price_out_per_1m": 1000.0}  # 0.001 USD a token
    cap = 4.0
    with FaultServer(FaultPlan(rates={})) as srv:
        cfg = run_config(tmp_path, srv.url, n=n, teacher={**prices, "max_spend_usd": cap})
        proc = run_cli("templates", str(cfg))
        assert proc.returncode == 2
        line = one_error_line(proc.stderr)
        assert "teacher spend cap reached: max_spend_usd=4 reached" in line, line
        assert "--set teacher.max_spend_usd=8" in line
        assert "run the same command again" in line
        first = srv.stats()
        spent = (first["prompt_tokens"] + first["completion_tokens"]) * 0.001
        assert 0 < first["requests"] < n and spent <= cap
        run = tmp_path / "runs" / "faulty"
        assert not (run / "templates" / "manifest.json").exists()
        assert len(cache_files(run / "teacher_cache")) == first["requests"]

        # the same cap again: the run folder's spend already reached it, nothing is sent
        proc = run_cli("templates", str(cfg))
        assert proc.returncode == 2 and srv.requests() == first["requests"]

        # a higher cap: only the missing requests are sent
        proc = run_cli("templates", str(cfg), "--set", "teacher.max_spend_usd=1000")
        assert proc.returncode == 0, proc.stderr[-3000:]
        final = srv.stats()
        assert final["requests"] == n and final["distinct"] == n
        man = read_json(run / "templates" / "manifest.json")
        assert man["teacher_usage"]["requests_sent"] == n - first["requests"]
        assert man["teacher_usage"]["cache_hits"] == first["requests"]

        # caps, retries and timeouts are not part of the stage's fingerprint: changing them redoes nothing
        proc = run_cli("templates", str(cfg), "--set", "teacher.max_spend_usd=2000", "--set", "teacher.max_retries=9")
        assert proc.returncode == 0 and "up to date, skipped" in proc.stderr, proc.stderr[-2000:]
        assert srv.requests() == n
    report("spend cap", {"problems": n, "cap_usd": cap, "sent_under_cap": first["requests"],
                         "spent_usd": round(spent, 3), "resent_after_raise": n - first["requests"]})  # fmt: skip


def test_correct_stage_enforces_the_same_rules(tmp_path: Path) -> None:
    """The `correct` stage under a teacher that never answers, and under a cap too small for one request: it
    writes its rows (each with the teacher's error) and stops with exit 2. (No request is answered, so no step
    is located and the student model is never needed.)"""
    from supercorrect import xmlformat
    from supercorrect.config import load_config
    from supercorrect.data import load_problems
    from supercorrect.io import write_json, write_jsonl

    with FaultServer(FaultPlan(always_fail=1.0)) as srv:
        cfg_path = run_config(tmp_path, srv.url, n=5, teacher={"max_retries": 1})
        cfg = load_config(cfg_path)
        run = cfg.run_dir
        problems = load_problems(cfg.data["train"], cfg.base_dir)
        wrong = [
            {"key": f"{p.id}#0", "id": p.id, "sample": 0, "answer": p.answer, "correct": False,
             "text": xmlformat.render_solution(["1 + 1 = 3", "3 * 2 = 6"], "6")}
            for p in problems
        ]  # fmt: skip
        write_jsonl(run / "sample" / "wrong.jsonl", wrong)
        write_json(run / "sample" / "manifest.json", {"stage": "sample", "fingerprint": "test"})

        proc = run_cli("correct", str(cfg_path))
        assert proc.returncode == 2
        line = one_error_line(proc.stderr)
        assert "correct: only 0/5 teacher requests answered" in line and "teacher.min_success_rate" in line, line
        rows = read_jsonl(run / "correct" / "corrections.jsonl")
        assert len(rows) == 5 and all(r["teacher_error"] and r["teacher_trace"] is None for r in rows)
        assert not (run / "correct" / "manifest.json").exists()
        assert srv.stats()["requests"] == 10  # 5 requests, each tried twice

        prices = "teacher.price_in_per_1m=1000", "teacher.price_out_per_1m=1000", "teacher.max_spend_usd=0.01"
        proc = run_cli("correct", str(cfg_path), *[a for p in prices for a in ("--set", p)])
        assert proc.returncode == 2
        assert "correct: teacher spend cap reached" in one_error_line(proc.stderr)
        assert srv.stats()["requests"] == 10  # nothing was sent


def test_tally_counts_declined_items_apart() -> None:
    """An item the rule-based teacher declines (`not_checkable`) is no failed request; an unknown error is."""
    from supercorrect.stages.teacher_check import tally
    from supercorrect.teachers import TeacherOutput

    outs = [
        TeacherOutput("x"), TeacherOutput("cut", "length: truncated at max_tokens=8"),
        TeacherOutput(None, "not_checkable: no reference steps"), TeacherOutput(None, "timeout: no response"),
        TeacherOutput(None, "rate_limit: step 2: HTTP 429"), TeacherOutput(None, "something odd"),
    ]  # fmt: skip
    t = tally(outs).to_dict()
    assert t["answered"] == 2 and t["truncated"] == 1 and t["declined_by_kind"] == {"not_checkable": 1}
    assert t["failed_by_kind"] == {"timeout": 1, "rate_limit": 1, "other": 1} and t["success_rate"] == 0.4
