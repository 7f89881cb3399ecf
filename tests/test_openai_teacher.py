"""The OpenAI-compatible teacher client and the LLM teacher.

Fast tests use a scripted stdlib HTTP server (retries, Retry-After, failures, cache, secrets). Slow tests start
a real OpenAI-compatible server (llama.cpp's, serving the embedded SmolLM2 GGUF) behind a counting reverse
proxy, so the number of requests is measured where they arrive.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import CountingProxy, StubServer, completion, llama_server

from supercorrect.errors import UserError
from supercorrect.schema import Problem
from supercorrect.teachers.base import CorrectionRequest, TeacherOutput
from supercorrect.teachers.llm import LLMTeacher, format_steps, parse_step_verdict
from supercorrect.teachers.openai_chat import ChatCache, ChatResult, OpenAIChat, parse_retry_after, safe_url

KEY_ENV = "SUPERCORRECT_TEST_KEY"
SENTINEL = "sk-SENTINEL-3f9a1c7e5b2d4a68"


@pytest.fixture
def stub() -> Iterator[Any]:
    servers: list[StubServer] = []

    def make(*script: tuple[int, dict[str, str], Any]) -> StubServer:
        servers.append(StubServer(list(script)))
        return servers[-1]

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, SENTINEL)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return SENTINEL


def client(url: str, cache: Path, **kw: Any) -> OpenAIChat:
    kw = {"backoff_base_s": 0.01, "backoff_max_s": 5.0, "max_tokens": 16, "progress": False, **kw}
    return OpenAIChat(model="m", base_url=url, api_key_env=KEY_ENV, cache_dir=cache, **kw)


HI = [{"role": "user", "content": "hi"}]


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


# ---- fast tests: retries, failures, cache, secrets ---------------------------------------------------------


def test_429_then_200_honours_retry_after(stub: Any, key: str, tmp_path: Path) -> None:
    srv = stub((429, {"Retry-After": "1"}, {"error": {"message": "slow down"}}), (200, {}, completion("ok")))
    chat = client(srv.url, tmp_path)
    t0 = time.monotonic()
    [res] = chat.chat_many([HI])
    elapsed = time.monotonic() - t0
    assert res.text == "ok" and res.error is None and not res.cached
    assert elapsed >= 1.0, "the retry came before Retry-After allowed"
    assert srv.chat_requests() == 2
    assert chat.usage.requests_sent == 2 and chat.usage.retries == 1
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (7, 3)
    assert srv.seen[0][2] == f"Bearer {key}"  # the key is really sent ...


def test_400_fails_at_once(stub: Any, key: str, tmp_path: Path) -> None:
    srv = stub((400, {}, {"error": {"message": "bad request"}}))
    chat = client(srv.url, tmp_path, backoff_base_s=2.0)
    delays: list[float | None] = []
    backoff = chat._delay

    def recorded(attempt: int, retry_after: float | None) -> float | None:
        delays.append(backoff(attempt, retry_after))
        return delays[-1]

    chat._delay = recorded  # type: ignore[method-assign]
    [res] = chat.chat_many([HI])
    assert delays == [], "a 400 waited for a retry"  # at once: no backoff asked for, so no sleep
    assert res.text is None and res.error_kind == "client_error" and "400" in (res.error or "")
    assert srv.chat_requests() == 1
    assert chat.usage.failures == {"client_error": 1} and chat.usage.retries == 0
    assert files_under(tmp_path) == [], "failures must not be cached"


def test_5xx_and_invalid_json_are_retried(stub: Any, key: str, tmp_path: Path) -> None:
    srv = stub(
        (500, {}, "oops"), (200, {}, "{not json"), (200, {}, {"no": "choices"}), (200, {}, completion("fine"))
    )
    chat = client(srv.url, tmp_path)
    [res] = chat.chat_many([HI])
    assert res.text == "fine"
    assert srv.chat_requests() == 4 and chat.usage.retries == 3


def test_retries_are_bounded(stub: Any, key: str, tmp_path: Path) -> None:
    srv = stub((503, {}, "down"))
    chat = client(srv.url, tmp_path, max_retries=2)
    [res] = chat.chat_many([HI])
    assert res.error_kind == "server_error" and "after 2 retries" in (res.error or "")
    assert srv.chat_requests() == 3


def test_retry_after_beyond_max_fails_at_once(stub: Any, key: str, tmp_path: Path) -> None:
    srv = stub((429, {"Retry-After": "3600"}, {"error": {"message": "quota"}}))
    [res] = client(srv.url, tmp_path).chat_many([HI])
    assert res.error_kind == "rate_limit" and "3600" in (res.error or "")
    assert srv.chat_requests() == 1


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = email.utils.formatdate(1_000_010, usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=1_000_000) == pytest.approx(10.0)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_empty_and_length(stub: Any, key: str, tmp_path: Path) -> None:
    srv = stub((200, {}, completion("")))
    [res] = client(srv.url, tmp_path / "a").chat_many([HI])
    assert res.text is None and res.error_kind == "empty"
    assert files_under(tmp_path / "a") == []

    srv = stub((200, {}, completion("trunc", finish="length")))
    [res] = client(srv.url, tmp_path / "b").chat_many([HI])
    assert res.text == "trunc" and res.finish_reason == "length" and res.error_kind == "length"
    again = client(srv.url, tmp_path / "b")
    [res2] = again.chat_many([HI])
    assert (res2.text, res2.error_kind, res2.cached) == ("trunc", "length", True)
    assert srv.chat_requests() == 1 and again.usage.requests_sent == 0


def test_cache_dedup_and_cost(stub: Any, key: str, tmp_path: Path) -> None:
    srv = stub((200, {}, completion("same")))
    chat = client(srv.url, tmp_path, price_in_per_1m=1.0, price_out_per_1m=2.0)
    other = [{"role": "user", "content": "other"}]
    results = chat.chat_many([HI, HI, other])
    assert [r.text for r in results] == ["same"] * 3
    assert srv.chat_requests() == 2  # identical conversations are sent once
    assert chat.usage.cost_usd == pytest.approx((14 * 1.0 + 6 * 2.0) / 1e6)
    files = files_under(tmp_path)
    assert len(files) == 2 and all(p.parent.name == p.stem[:2] for p in files)
    record = json.loads(files[0].read_text())
    assert record["text"] == "same" and record["model"] == "m"


def test_cache_key_ignores_the_key(tmp_path: Path) -> None:
    k1 = ChatCache.key("m", HI, {"temperature": 0.0, "max_tokens": 16})
    assert k1 == ChatCache.key("m", [dict(HI[0])], {"max_tokens": 16, "temperature": 0.0})
    assert k1 != ChatCache.key("m", HI, {"temperature": 0.0, "max_tokens": 17})
    assert k1 != ChatCache.key("m2", HI, {"temperature": 0.0, "max_tokens": 16})
    cache = ChatCache(tmp_path)
    assert cache.get(k1) is None
    cache.path(k1).parent.mkdir(parents=True)
    cache.path(k1).write_text("{torn")
    assert cache.get(k1) is None  # a damaged entry is a miss
    with pytest.raises(ValueError):
        cache.path("../../etc/passwd")


def test_missing_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UserError, match=KEY_ENV):
        OpenAIChat(model="m", api_key_env=KEY_ENV, cache_dir=tmp_path)
    with pytest.raises(UserError, match=KEY_ENV):
        OpenAIChat(model="m", base_url="https://api.example.com/v1", api_key_env=KEY_ENV, cache_dir=tmp_path)
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:1/v1", "http://[::1]:8000/v1"):
        OpenAIChat(model="m", base_url=url, api_key_env=KEY_ENV, cache_dir=tmp_path)


def test_key_never_leaks(stub: Any, key: str, tmp_path: Path) -> None:
    echo = {"error": {"message": f"Incorrect API key provided: {key}. Also sk-proj-abcdef1234."}}
    srv = stub((401, {}, echo), (200, {}, completion("ok")))
    chat = client(srv.url, tmp_path)
    [res] = chat.chat_many([HI])
    assert res.error_kind == "client_error"
    for text in (res.error or "", repr(res), repr(chat), str(vars(chat)), json.dumps(chat.describe())):
        assert key not in text and "SENTINEL" not in text and "sk-proj-abcdef" not in text
    assert safe_url("https://user:pw@host:8443/v1?token=abc") == "https://host:8443/v1"


def test_chat_many_inside_a_running_loop(stub: Any, key: str, tmp_path: Path) -> None:
    srv = stub((200, {}, completion("loop")))
    chat = client(srv.url, tmp_path)

    async def caller() -> list[ChatResult]:
        return chat.chat_many([HI])

    assert asyncio.run(caller())[0].text == "loop"
    result: list[ChatResult] = []
    t = threading.Thread(target=lambda: result.extend(client(srv.url, tmp_path / "t").chat_many([HI])))
    t.start()
    t.join()
    assert result[0].text == "loop"


# ---- LLMTeacher over a fake backend -----------------------------------------------------------------------


def problem(i: int = 1) -> Problem:
    return Problem(
        id=f"p{i}",
        question=f"Tom has {i} apples and buys 2 more. How many apples does he have?",
        solution=f"He has {i} + 2 = {i + 2} apples. The answer is {i + 2}.",
        answer=str(i + 2),
        source="synthetic",
    )


class FakeChat:
    """Answers each conversation with `reply(prompt)`, recording every batch."""

    def __init__(self, reply: Any):
        self.reply = reply
        self.batches: list[list[str]] = []

    def __call__(self, convs: list[list[dict[str, Any]]], desc: str) -> list[ChatResult]:
        prompts = [c[-1]["content"] for c in convs]
        self.batches.append(prompts)
        return [
            ChatResult(text=self.reply(p), finish_reason="stop", prompt_tokens=5, completion_tokens=2)
            for p in prompts
        ]


def test_single_pass_prompt_lists_the_steps() -> None:
    fake = FakeChat(lambda p: "<Step1>x</Step1><Answer>3</Answer>")
    teacher = LLMTeacher(fake, name="fake")
    reqs = [
        CorrectionRequest(problem(), "raw", ["1 + 2 = 4", "so 4"]),
        CorrectionRequest(problem(2), "just 5"),
    ]
    outs = teacher.corrections(reqs)
    assert [o.text for o in outs] == ["<Step1>x</Step1><Answer>3</Answer>"] * 2
    assert (
        "Step 1: 1 + 2 = 4\nStep 2: so 4" in fake.batches[0][0]
        and "Reference solution: He has 1 + 2" in fake.batches[0][0]
    )
    assert fake.batches[0][1].rstrip().endswith("just 5")
    assert format_steps([], "  ") == "(empty solution)"


def test_parse_step_verdict() -> None:
    assert parse_step_verdict("Yes\nfine") == ("yes", None, None)
    assert parse_step_verdict("**No**\n<Cause>wrong sum</Cause>\n<Correction>1 + 2 = 3</Correction>") == (
        "no",
        "wrong sum",
        "1 + 2 = 3",
    )
    assert parse_step_verdict("No, it should be 1 + 2 = 3.") == ("no", None, "it should be 1 + 2 = 3")
    assert parse_step_verdict("Hmm") == (None, None, None)
    _, _, corr = parse_step_verdict("No <Correction><Step2>2 + 2 = 4</Step2> <Answer>4</Answer></Correction>")
    assert corr == "2 + 2 = 4 4"


def test_stepwise_stops_at_first_no() -> None:
    xml = pytest.importorskip("supercorrect.xmlformat")

    def reply(prompt: str) -> str:
        if "Step to check now:\nStep 2:" in prompt:
            return "No\n<Cause>2 + 2 is 4, not 5.</Cause>\n<Correction>2 + 2 = 4</Correction>"
        return "Yes"

    fake = FakeChat(reply)
    teacher = LLMTeacher(fake)
    reqs = [
        CorrectionRequest(problem(), "", ["1 + 1 = 2", "2 + 2 = 5", "so 5"]),
        CorrectionRequest(problem(2), "", ["2 + 2 = 4"]),  # every step "Yes": the error is the last step
    ]
    outs = teacher.corrections(reqs, mode="stepwise")
    assert len(fake.batches) == 2 and [len(b) for b in fake.batches] == [2, 1]  # one batched call per round
    assert "Steps already checked and correct:\nStep 1: 1 + 1 = 2" in fake.batches[1][0]
    first = xml.parse(outs[0].text)
    assert first.first_error == 2 and first.steps[1].correction.strip() == "2 + 2 = 4"
    assert "4, not 5" in first.steps[1].cause
    assert xml.parse(outs[1].text).first_error == 1
    assert outs[0].prompt_tokens == 10 and outs[1].prompt_tokens == 5


def test_stepwise_failed_round_fails_the_item() -> None:
    pytest.importorskip("supercorrect.xmlformat")
    fake = FakeChat(lambda p: "No")  # "No" with no correction at all
    [out] = LLMTeacher(fake).corrections([CorrectionRequest(problem(), "", ["a", "b"])], mode="stepwise")
    assert out.text is None and (out.error or "").startswith("bad_response")


def test_inspector_rounds() -> None:
    replies = iter(["<Answer>4</Answer>", "<Answer>3</Answer>"])
    fake = FakeChat(lambda p: next(replies))
    teacher = LLMTeacher(fake)
    traces = [TeacherOutput("<Answer>3</Answer>"), TeacherOutput("<Answer>5</Answer>")]

    def check(p: Problem, text: str | None) -> str | None:
        return None if text and f"<Answer>{p.answer}</Answer>" in text else f"answer is not {p.answer}"

    outs, used = teacher.inspect([problem(), problem()], traces, check, rounds=3)
    assert used == [0, 2] and outs[1].text == "<Answer>3</Answer>"
    assert "Reference answer: 3" in fake.batches[0][0] and "answer is not 3" in fake.batches[0][0]
    assert traces[1].text == "<Answer>5</Answer>"  # inputs are not mutated


# ---- a real OpenAI-compatible server: llama.cpp serving the embedded SmolLM2 --------------------------------


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountingProxy]:
    with llama_server(tmp_path_factory.mktemp("llama") / "server.log") as server:
        proxy = CountingProxy(server)
        try:
            yield proxy
        finally:
            proxy.stop()


def real_client(proxy: CountingProxy, cache: Path) -> OpenAIChat:
    return OpenAIChat(
        model="smollm2",
        base_url=proxy.url,
        api_key_env=KEY_ENV,
        cache_dir=cache,
        max_tokens=48,
        progress=False,
    )


@pytest.mark.slow
def test_real_server_roundtrip(real_server: CountingProxy, key: str, tmp_path: Path) -> None:
    before = real_server.chat_requests()
    chat = real_client(real_server, tmp_path)
    convs = [
        [{"role": "user", "content": "What is 2 + 3? Answer with a number."}],
        [{"role": "user", "content": "Say hi."}],
    ]
    results = chat.chat_many(convs)
    assert all(r.text and r.text.strip() for r in results), results
    assert all(r.error is None or r.error_kind == "length" for r in results)
    assert chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens > 0
    assert chat.usage.requests_sent == 2 and real_server.chat_requests() - before == 2


@pytest.mark.slow
def test_real_templates_cache_and_secret(real_server: CountingProxy, key: str, tmp_path: Path) -> None:
    problems = [problem(1), problem(2), problem(3)]
    cache = tmp_path / "teacher_cache"
    before = real_server.chat_requests()
    first = LLMTeacher.from_openai(real_client(real_server, cache)).templates(problems)
    assert real_server.chat_requests() - before == 3
    assert all(o.text for o in first), [o.error for o in first]
    xml = importlib.util.find_spec("supercorrect.xmlformat")
    if xml is not None:
        from supercorrect.xmlformat import parse

        for o in first:
            parse(o.text)  # untrusted model text: must not raise
    # the key really went over the wire ...
    assert any(auth == f"Bearer {key}" for _, _, auth in real_server.seen)

    # an immediate re-run with a fresh client on the same cache sends nothing
    chat2 = real_client(real_server, cache)
    teacher2 = LLMTeacher.from_openai(chat2)
    mid = real_server.chat_requests()
    second = teacher2.templates(problems)
    assert real_server.chat_requests() == mid
    assert [o.text for o in second] == [o.text for o in first] and all(o.cached for o in second)
    assert teacher2.usage()["requests_sent"] == 0 and teacher2.usage()["cache_hits"] == 3
    assert teacher2.describe()["model"] == "smollm2" and teacher2.describe()["rule_based"] is False

    # ... and is nowhere under the cache folder
    files = files_under(cache)
    assert len(files) == 3
    for f in files:
        data = f.read_bytes()
        assert key.encode() not in data and b"SENTINEL" not in data
