"""The Batch API teacher (`teachers.openai_batch`) against a loopback files+batches server (tests/batch_server.py).

What is counted is counted at the server: batches created, and per request how many answers were paid for
(batch lines that ran plus live completions). "Paid once" means every request's count is exactly 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from batch_server import BatchPlan, BatchServer
from fault_server import KEY_ENV, messages_key, run_cli, run_config

from supercorrect.teachers.openai_batch import BatchChat
from supercorrect.teachers.openai_chat import OpenAIChat, SpendLedger

N = 6

HANG_GUARD_S = 600  # waits for a state (a batch created, a thread done): a guard against hangs, never a claim


def convs(n: int = N, tag: str = "q") -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"{tag} {i}: what is {i} + {i}?"}] for i in range(n)]


def batch_chat(tmp_path: Path, url: str, **kw) -> BatchChat:
    chat_kw = {k: kw.pop(k) for k in list(kw) if k in ("max_spend_usd", "price_in_per_1m", "price_out_per_1m", "batch_price_in_per_1m", "batch_price_out_per_1m",
                                                          "max_total_tokens")}  # fmt: skip
    chat = OpenAIChat(model="batch-teacher", base_url=url, api_key_env="SC_NO_SUCH_KEY", cache_dir=tmp_path / "cache",
                      max_retries=2, timeout_s=5, backoff_base_s=0.01, backoff_max_s=1, progress=False,
                      spend_ledger=tmp_path / "spend.jsonl", max_tokens=64, **chat_kw)  # fmt: skip
    return BatchChat(chat, state_dir=tmp_path / "batches", poll_s=0.02, **kw)


def paid_once(server: BatchServer, conversations) -> bool:
    return all(server.paid[messages_key(c)] == 1 for c in conversations) and len(server.paid) == len(conversations)


def test_batch_answers_land_in_the_live_cache_at_batch_prices(tmp_path: Path) -> None:
    with BatchServer() as server:
        bc = batch_chat(tmp_path, server.url, price_in_per_1m=2.0, price_out_per_1m=8.0)
        out = bc.chat_many(convs())
        assert [r.text for r in out] == [f"echo {messages_key(c)}" for c in convs()]
        assert server.created == 1 and server.live == 0 and paid_once(server, convs())
        u = bc.usage
        assert u.batch_requests == N and u.batch_prompt_tokens == u.prompt_tokens > 0
        # batch price = half the live price by default
        expect = (u.prompt_tokens * 1.0 + u.completion_tokens * 4.0) / 1e6
        assert u.cost_usd == pytest.approx(expect) and u.cumulative_cost_usd == pytest.approx(expect)
        rows = [json.loads(x) for x in (tmp_path / "spend.jsonl").read_text().splitlines()]
        assert len(rows) == 1 and rows[0]["tier"] == "batch" and rows[0]["batch_id"] == "batch_0000"
        assert SpendLedger(tmp_path / "spend.jsonl").totals("batch") == (u.prompt_tokens, u.completion_tokens)
        # the same requests live: all from the cache (one cache for both paths), nothing sent
        live = OpenAIChat(model="batch-teacher", base_url=server.url, api_key_env="SC_NO_SUCH_KEY",
                          cache_dir=tmp_path / "cache", max_tokens=64, progress=False)  # fmt: skip
        again = live.chat_many(convs())
        assert all(r.cached for r in again) and live.usage.requests_sent == 0
        bc2 = batch_chat(tmp_path, server.url)
        assert all(r.cached for r in bc2.chat_many(convs())) and server.created == 1
        # a new process prices the earlier batch spend at batch prices too
        bc3 = batch_chat(tmp_path, server.url, price_in_per_1m=2.0, price_out_per_1m=8.0)
        assert bc3.usage.cumulative_cost_usd == pytest.approx(expect)


def fail_by_conversation(faults: dict[int, str | int]):
    """A `fail_line` that fails the lines of the given conversations (by index in `convs()`)."""
    from supercorrect.teachers.openai_chat import ChatCache

    params = {"temperature": 0.0, "max_tokens": 64}
    by_key = {ChatCache.key("batch-teacher", convs()[i], params): f for i, f in faults.items()}
    return lambda b, i, cid: by_key.get(cid)


@pytest.mark.parametrize("retry", ["live", "batch", "none"])
def test_partially_failed_batch_retries_per_config(tmp_path: Path, retry: str) -> None:
    with BatchServer(BatchPlan(fail_line=fail_by_conversation({0: 500, 2: "error", 4: 400}))) as server:
        bc = batch_chat(tmp_path, server.url, retry=retry)
        out = bc.chat_many(convs())
        kinds = [r.error_kind for r in out]
        assert kinds[4] == "client_error" and out[4].text is None  # a 400 is not retried
        if retry == "none":
            assert [kinds[0], kinds[2]] == ["server_error", "server_error"]
            assert "batch_retry=none" in out[0].error and server.created == 1 and server.live == 0
            assert sum(1 for r in out if r.text) == 3
            return
        assert all(out[i].text == f"echo {messages_key(convs()[i])}" for i in (0, 1, 2, 3, 5))
        if retry == "live":
            assert server.created == 1 and server.live == 2
        else:
            assert server.created == 2 and server.live == 0
        answered = [c for i, c in enumerate(convs()) if i != 4]
        assert all(server.paid[messages_key(c)] == 1 for c in answered) and server.paid[messages_key(convs()[4])] == 0
        assert bc.usage.failures == {"client_error": 1}


def test_expired_batch_keeps_what_ran_and_resubmits_the_rest(tmp_path: Path) -> None:
    with BatchServer(BatchPlan(end="expired", done_share=0.5)) as server:
        bc = batch_chat(tmp_path, server.url, retry="batch")
        out = bc.chat_many(convs())
        assert all(r.text for r in out)
        assert server.created == 2 and server.live == 0 and paid_once(server, convs())
        second = json.loads(server.files[server.batches["batch_0001"].input_file_id].decode().splitlines()[0])
        assert len(server.files[server.batches["batch_0001"].input_file_id].decode().splitlines()) == N // 2
        assert second["url"] == "/v1/chat/completions"


def test_failed_batch_goes_live(tmp_path: Path) -> None:
    with BatchServer(BatchPlan(end="failed")) as server:
        out = batch_chat(tmp_path, server.url, retry="live").chat_many(convs())
        assert all(r.text for r in out) and server.created == 1 and server.live == N and paid_once(server, convs())


def test_cancelled_batch_is_not_resubmitted_in_the_same_run(tmp_path: Path) -> None:
    hold = threading.Event()
    with BatchServer(BatchPlan(hold=hold)) as server:
        bc = batch_chat(tmp_path, server.url, retry="live")
        box: dict = {}
        t = threading.Thread(target=lambda: box.setdefault("out", bc.chat_many(convs())))
        t.start()
        deadline = time.monotonic() + HANG_GUARD_S
        while "batch_0000" not in server.batches and time.monotonic() < deadline:
            time.sleep(0.02)
        import openai

        openai.OpenAI(api_key="x", base_url=server.url).batches.cancel("batch_0000")  # someone cancels it
        t.join(HANG_GUARD_S)
        assert not t.is_alive(), f"chat_many did not return within {HANG_GUARD_S} s of the cancel"
        out = box["out"]
        assert sum(1 for r in out if r.text) == N // 2 and server.live == 0
        assert all("cancelled" in r.error for r in out if r.text is None)
        # a re-run sends only the rest, in a new batch
        hold.set()
        again = batch_chat(tmp_path, server.url).chat_many(convs())
        assert all(r.text for r in again) and server.created == 2 and paid_once(server, convs())


def test_wait_limit_leaves_the_batch_running_and_a_rerun_resumes_it(tmp_path: Path) -> None:
    hold = threading.Event()
    with BatchServer(BatchPlan(hold=hold)) as server:
        out = batch_chat(tmp_path, server.url, max_wait_s=0.3).chat_many(convs())
        assert all(r.error_kind == "timeout" and "batch_0000" in r.error for r in out)
        assert server.created == 1 and server.live == 0 and not server.paid  # not retried: it still runs
        hold.set()
        bc = batch_chat(tmp_path, server.url)
        out = bc.chat_many(convs())
        assert all(r.text for r in out) and bc.batches_resumed == 1 and bc.batches_created == 0
        assert server.created == 1 and paid_once(server, convs())


def test_killed_between_create_and_record_finds_the_batch(tmp_path: Path) -> None:
    hold = threading.Event()
    with BatchServer(BatchPlan(hold=hold)) as server:
        batch_chat(tmp_path, server.url, max_wait_s=0.1).chat_many(convs())
        (state_file,) = (tmp_path / "batches").glob("*.json")
        state = json.loads(state_file.read_text())
        state.update(batch_id=None, status="uploaded")  # as if killed before the id was written
        state_file.write_text(json.dumps(state))
        hold.set()
        out = batch_chat(tmp_path, server.url).chat_many(convs())
        assert all(r.text for r in out) and server.created == 1 and paid_once(server, convs())


def test_spend_cap_prices_batches_at_batch_prices(tmp_path: Path) -> None:
    from supercorrect.teachers.openai_chat import _worst_prompt_tokens

    worst = _worst_prompt_tokens(convs()[0]) + 64  # every request has about this worst case
    cap = 4.5 * worst * 1.0 / 1e6  # at 1 USD/1M live (0.5 batch): 4 live requests or 9 batch ones fit
    with BatchServer() as server:
        bc = batch_chat(tmp_path, server.url, price_in_per_1m=1.0, price_out_per_1m=1.0, max_spend_usd=cap)
        out = bc.chat_many(convs())
        assert all(r.text for r in out), [r.error for r in out]
        assert bc.usage.cost_usd <= cap
    with BatchServer() as server:
        bc = batch_chat(tmp_path / "b", server.url, price_in_per_1m=1.0, price_out_per_1m=1.0, max_spend_usd=cap,
                        batch_price_in_per_1m=1.0, batch_price_out_per_1m=1.0)  # fmt: skip
        out = bc.chat_many(convs())
        assert sum(1 for r in out if r.text) == 4 and sum(1 for r in out if r.error_kind == "budget") == 2


# ---- the stage, killed while its batch is in flight ---------------------------------------------------------


def test_stage_killed_while_batch_in_flight_resumes_the_same_batch(tmp_path: Path) -> None:
    """`supercorrect templates` with teacher.batch: killed (SIGKILL) while the server holds the batch in progress;
    the re-run polls the same batch: one batch created, every request paid once, every template kept."""
    hold = threading.Event()
    n = 8
    with BatchServer(BatchPlan(hold=hold)) as server:
        config = run_config(tmp_path, server.url, n=n, name="batchkill",
                            teacher={"batch": True, "batch_poll_s": 0.05, "price_in_per_1m": 0.15,
                                     "price_out_per_1m": 0.6})  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "OPENAI_BASE_URL"}
        env.update({KEY_ENV: "sk-test-not-secret", "TQDM_DISABLE": "1"})
        proc = subprocess.Popen([sys.executable, "-m", "supercorrect.cli", "templates", str(config)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        run_dir = tmp_path / "runs" / "batchkill"
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            states = [json.loads(p.read_text()) for p in (run_dir / "teacher_batches").glob("*.json")]
            if states and states[0].get("batch_id") and server.calls["GET batches"] >= 2:
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail("the stage did not create a batch in time")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert server.created == 1 and not server.paid and not (run_dir / "templates" / "manifest.json").exists()
        hold.set()
        done = run_cli("templates", str(config))
        assert done.returncode == 0, done.stdout + done.stderr
        man = json.loads((run_dir / "templates" / "manifest.json").read_text())
        assert man["counts"]["kept"] == n, man["counts"]
        assert server.created == 1 and server.live == 0
        assert len(server.paid) == n and set(server.paid.values()) == {1}
        usage = man["teacher_usage"]
        assert usage["batch_requests"] == n and usage["requests_sent"] == 0
        print(f"\nkill-and-resume: batches created {server.created}, requests {n}, paid answers "
              f"{sum(server.paid.values())} (max per request {max(server.paid.values())}), live calls {server.live}, "
              f"cost {usage['cost_usd']:.6f} USD at batch prices")  # fmt: skip
        # and a third run sends nothing at all
        calls = sum(server.calls.values())
        assert run_cli("templates", str(config)).returncode == 0 and sum(server.calls.values()) == calls
