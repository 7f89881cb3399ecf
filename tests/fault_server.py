"""A faulty OpenAI-compatible teacher on 127.0.0.1, for reliability tests (stdlib only).

`FaultServer(plan)` answers `POST /v1/chat/completions` with valid chat completions whose text is a pure
function of the request (`expected_text`): for the paper's template-extraction prompt, a hierarchical XML
solution of the reference solution in the prompt, whose `<Answer>` is that solution's final answer; for any
other prompt, `echo <hash of the messages>`. Faults are injected by a seeded schedule that depends only on
(seed, messages, attempt number of those messages), so which attempt of which request fails, and how, is the
same whatever the client's concurrency:

    rate_limit       429 with `Retry-After: <plan.retry_after_s>` (seconds)
    server_500       500 with a JSON error body
    server_503       503 with a JSON error body
    hang             accepts the request and sends nothing until the client gives up (its timeout closes the
                     connection; `plan.hang_s` bounds it), then closes the connection
    drop_early       closes the connection without a response
    drop_mid_body    sends the status line, headers and half the body, then closes the connection
    truncated_json   200 with a JSON body cut in half
    invalid_json     200 with a body that is not JSON
    empty_choices    200 with `"choices": []`
    length           200 with half the text and `finish_reason: "length"`
    unauthorized     401 whose message echoes the request's Authorization header (a server that leaks the key)
    ok               200 with the full text

The server counts requests per fault kind and per distinct request (`stats()`), records every attempt's
arrival and end times (so the gap between a 429 and its retry is measured here, where it matters) and the
Authorization headers it saw. It is bounded: every request is handled in bounded time (`hang_s` at most), a
watchdog stops the server after `max_lifetime_s`, and `stop()` ends it at once.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import select
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from servers import completion

OK = "ok"
RETRYABLE_FAULTS = (
    "rate_limit", "server_500", "server_503", "hang", "drop_early", "drop_mid_body", "truncated_json",
    "invalid_json", "empty_choices",
)  # fmt: skip
FAULTS = (*RETRYABLE_FAULTS, "length", "unauthorized")
# What the client reports for a request whose last attempt met each fault (see teachers.openai_chat).
CLIENT_KIND = {
    "rate_limit": "rate_limit",
    "server_500": "server_error",
    "server_503": "server_error",
    "hang": "timeout",
    "drop_early": "connection",
    "drop_mid_body": "connection",
    "truncated_json": "bad_response",
    "invalid_json": "bad_response",
    "empty_choices": "bad_response",
    "unauthorized": "client_error",
}
# The clients' timeout in these tests. A hang lasts exactly this long (the server waits for the client to give
# up), so it is no race; it only has to exceed how long a healthy answer can take on a loaded machine, or that
# answer would be reported as a timeout.
CLIENT_TIMEOUT_S = 8.0
# A busy but healthy endpoint: about one attempt in three fails, every fault kind appears.
DEFAULT_RATES = {
    "rate_limit": 0.07, "server_500": 0.04, "server_503": 0.04, "hang": 0.02, "drop_early": 0.03,
    "drop_mid_body": 0.03, "truncated_json": 0.03, "invalid_json": 0.03, "empty_choices": 0.03, "length": 0.03,
}  # fmt: skip


@dataclass
class FaultPlan:
    seed: int = 0
    rates: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))  # per attempt; the rest is ok
    always_fail: float = 0.0  # share of requests that meet a (fast, retryable) fault on every attempt
    retry_after_s: int = 1
    hang_s: float = 600.0  # a bound only: a hang ends when the client gives up (its timeout) or the server stops
    prompt_tokens_per_char: float = 0.25  # reported usage: about four characters a token
    completion_tokens_per_char: float = 0.25

    def fault(self, key: str, attempt: int) -> str:
        """The fault met by attempt number `attempt` (0-based) of the request whose messages hash to `key`."""
        if self.always_fail and _unit(f"{self.seed}:always:{key}") < self.always_fail:
            fast = ("server_500", "server_503", "drop_early", "invalid_json", "empty_choices")
            return fast[int(_unit(f"{self.seed}:{key}:{attempt}:which") * len(fast))]
        u = _unit(f"{self.seed}:{key}:{attempt}")
        for kind in FAULTS:
            u -= self.rates.get(kind, 0.0)
            if u < 0:
                return kind
        return OK


def _unit(text: str) -> float:
    """A uniform number in [0, 1) from a string (stable across processes, unlike hash())."""
    return random.Random(hashlib.sha256(text.encode()).digest()).random()


def messages_key(messages: list[dict[str, Any]]) -> str:
    """The identity of a request: its messages (retries of one request are identical)."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


# ---- the answers ---------------------------------------------------------------------------------------------

_SOLUTION = re.compile(r"\nSolution:\s*(.*)\Z", re.S)
_FINAL = (re.compile(r"The answer is\s+(-?[\d.,/]+)"), re.compile(r"####\s*(\S+)"), re.compile(r"(-?\d[\d,]*\.?\d*)"))


def expected_text(messages: list[dict[str, Any]]) -> str:
    """The full text the server answers `messages` with (deterministic)."""
    prompt = str(messages[-1].get("content", "")) if messages else ""
    m = _SOLUTION.search(prompt) if prompt.startswith("Transform the solution") else None
    if m is None:
        return f"echo {messages_key(messages)}"
    solution = m.group(1).strip()
    answer = None
    for pattern in _FINAL:
        found = pattern.findall(solution)
        if found:
            answer = found[-1].replace(",", "").rstrip(".")
            break
    lines = [ln.strip() for ln in solution.splitlines() if ln.strip() and not ln.startswith("The answer is")]
    steps = "\n".join(
        f"<Step{i}>\n{line}\n" + ("<Key>Check the arithmetic of this step.</Key>\n" if i == 1 else "") + f"</Step{i}>"
        for i, line in enumerate(lines or ["Read the problem."], 1)
    )
    generalized = "<Generalized>Work through the quantities one operation at a time.</Generalized>"
    return f"{steps}\n{generalized}\n<Answer>{answer if answer is not None else 'unknown'}</Answer>"


def completion_body(text: str, finish: str, prompt_chars: int, plan: FaultPlan) -> dict[str, Any]:
    prompt_tokens = max(1, round(prompt_chars * plan.prompt_tokens_per_char))
    completion_tokens = max(1, round(len(text) * plan.completion_tokens_per_char))
    return completion(text, finish, prompt_tokens, completion_tokens)


# ---- the server ----------------------------------------------------------------------------------------------


@dataclass
class Attempt:
    key: str
    number: int  # 0-based attempt of this request
    fault: str
    arrived: float  # time.monotonic()
    ended: float = 0.0  # when the last byte was written or the connection closed
    retry_after: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultServer

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._send(200, {}, json.dumps({"object": "list", "data": [{"id": "fault-teacher"}]}).encode())

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {}, b'{"error": {"message": "not found"}}')
            return
        try:
            request = json.loads(raw)
            messages = request["messages"]
            max_tokens = int(request.get("max_tokens") or 1 << 30)
        except (ValueError, KeyError, TypeError):
            self._send(400, {}, b'{"error": {"message": "bad request"}}')
            return
        srv = self.server
        key = messages_key(messages)
        attempt = srv.begin(key, self.headers.get("Authorization"))
        try:
            self._serve(attempt, messages, max_tokens)
        finally:
            srv.end(attempt)

    def _serve(self, a: Attempt, messages: list[dict[str, Any]], max_tokens: int) -> None:
        plan = self.server.plan
        text = expected_text(messages)
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        full = completion_body(text, "stop", prompt_chars, plan)
        if a.fault == OK or a.fault == "length":
            if a.fault == "length":
                full = completion_body(text[: len(text) // 2], "length", prompt_chars, plan)
            usage = full["usage"]
            usage["completion_tokens"] = min(usage["completion_tokens"], max_tokens)
            a.prompt_tokens, a.completion_tokens = usage["prompt_tokens"], usage["completion_tokens"]
            self._send(200, {}, json.dumps(full).encode())
        elif a.fault == "rate_limit":
            a.retry_after = float(plan.retry_after_s)
            body = b'{"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}'
            self._send(429, {"Retry-After": str(plan.retry_after_s)}, body)
        elif a.fault in ("server_500", "server_503"):
            status = int(a.fault[-3:])
            self._send(status, {}, json.dumps({"error": {"message": f"injected {status}"}}).encode())
        elif a.fault == "unauthorized":
            auth = self.headers.get("Authorization") or ""
            body = {"error": {"message": f"Incorrect API key provided: {auth.removeprefix('Bearer ')}"}}
            self._send(401, {}, json.dumps(body).encode())
        elif a.fault == "hang":
            self._wait_for_client_to_give_up(plan.hang_s)
            self._close()
        elif a.fault == "drop_early":
            self._close()
        elif a.fault == "drop_mid_body":
            data = json.dumps(full).encode()
            self._send(200, {}, data[: len(data) // 2], length=len(data))
            self._close()
        elif a.fault == "truncated_json":
            data = json.dumps(full).encode()
            self._send(200, {}, data[: len(data) // 2])
        elif a.fault == "invalid_json":
            self._send(200, {}, b"<html><body>502 Bad Gateway</body></html>")
        elif a.fault == "empty_choices":
            self._send(200, {}, json.dumps({**full, "choices": []}).encode())
        else:
            raise AssertionError(a.fault)

    def _send(self, status: int, headers: dict[str, str], body: bytes, length: int | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client gave up (e.g. after its timeout): nothing to do
            self.close_connection = True

    def _wait_for_client_to_give_up(self, limit_s: float) -> None:
        """Send nothing until the client closes the connection (its timeout), the server stops, or `limit_s`
        passes: the hang ends with the client's timeout whatever the machine's load, so a hang is always the
        client's `timeout`, never a `connection` error that a fixed server-side delay could turn it into."""
        deadline = time.monotonic() + limit_s
        while not self.server.stopping.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:  # the client sends nothing more on this connection: readable means it closed it
                return

    def _close(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FaultServer(ThreadingHTTPServer):
    """The faulty teacher. `url` is the base URL for an OpenAI client; use as a context manager or `stop()`."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # the default 5 drops SYNs of concurrent clients: a 1 s retransmit, a fake timeout

    def __init__(self, plan: FaultPlan | None = None, max_lifetime_s: float = 900.0):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.plan = plan or FaultPlan()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.attempts: list[Attempt] = []
        self.by_key: dict[str, list[Attempt]] = {}
        self.auth_headers: Counter[str] = Counter()
        self.errors = 0  # exceptions in handlers (should stay 0)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.watchdog = threading.Timer(max_lifetime_s, self.stop)
        self.watchdog.daemon = True
        self.watchdog.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def begin(self, key: str, auth: str | None) -> Attempt:
        with self.lock:
            seen = self.by_key.setdefault(key, [])
            a = Attempt(key, len(seen), self.plan.fault(key, len(seen)), time.monotonic())
            seen.append(a)
            self.attempts.append(a)
            self.auth_headers[auth or ""] += 1
            return a

    def end(self, a: Attempt) -> None:
        a.ended = time.monotonic()

    def handle_error(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.errors += 1

    def stop(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.watchdog.cancel()
        self.shutdown()
        self.server_close()

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what happened -------------------------------------------------------------------------------------

    def requests(self) -> int:
        with self.lock:
            return len(self.attempts)

    def snapshot(self) -> dict[str, list[Attempt]]:
        with self.lock:
            return {k: list(v) for k, v in self.by_key.items()}

    def stats(self) -> dict[str, Any]:
        """Requests by fault kind and per distinct request, and the measured gaps after each 429."""
        with self.lock:
            attempts = list(self.attempts)
            by_key = {k: list(v) for k, v in self.by_key.items()}
        gaps = retry_after_gaps(by_key)
        per_key = Counter(len(v) for v in by_key.values())
        return {
            "requests": len(attempts),
            "distinct": len(by_key),
            "by_fault": dict(Counter(a.fault for a in attempts)),
            "attempts_per_distinct": dict(sorted(per_key.items())),
            "retry_after_gaps": gaps,
            "prompt_tokens": sum(a.prompt_tokens for a in attempts),
            "completion_tokens": sum(a.completion_tokens for a in attempts),
            "handler_errors": self.errors,
        }


def retry_after_gaps(by_key: dict[str, list[Attempt]]) -> list[tuple[float, float]]:
    """(Retry-After asked, seconds from the end of the 429 to the arrival of the next attempt) per retried 429."""
    out = []
    for attempts in by_key.values():
        for a, nxt in zip(attempts, attempts[1:], strict=False):
            if a.fault == "rate_limit" and a.retry_after is not None:
                out.append((a.retry_after, nxt.arrived - a.ended))
    return out


# ---- helpers for tests that run the CLI against the server ------------------------------------------------------

KEY_ENV = "SC_FAULT_TEACHER_KEY"


def run_config(
    tmp_path: Any, url: str, *, n: int, name: str = "faulty", teacher: dict[str, Any] | None = None
) -> Any:
    """A run config (YAML file) whose templates stage uses the openai teacher at `url` on `n` synthetic problems,
    with small timeouts and backoff so that faults cost little time."""
    from pathlib import Path

    import yaml

    cfg = {
        "name": name,
        "run_root": str(Path(tmp_path) / "runs"),
        "teacher": {
            "kind": "openai", "model": "fault-teacher", "base_url": url, "api_key_env": KEY_ENV,
            "max_concurrency": 16, "max_retries": 3, "timeout_s": CLIENT_TIMEOUT_S, "backoff_base_s": 0.01,
            "backoff_max_s": 5.0, "max_tokens": 512, **(teacher or {}),
        },
        "data": {"train": {"kind": "synthetic", "split": "train", "n": n, "max_steps": 4}},
        "stages": ["templates"],
    }  # fmt: skip
    path = Path(tmp_path) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run_cli(*args: str, key: str = "sk-test-not-secret", timeout: float = 600) -> Any:
    """`python -m supercorrect.cli ARGS` with the teacher key in the environment; returns the CompletedProcess."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENAI_BASE_URL"}
    env[KEY_ENV] = key
    env["TQDM_DISABLE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "supercorrect.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def template_keys(config_path: Any) -> dict[str, str]:
    """problem id -> the server's key of the templates request for that problem (as the teacher sends it)."""
    from supercorrect import prompts
    from supercorrect.config import load_config
    from supercorrect.data import load_problems

    cfg = load_config(config_path)
    problems = load_problems(cfg.data[cfg.templates.data], cfg.base_dir)
    return {
        p.id: messages_key(
            [{"role": "user", "content": prompts.render("template_extraction", problem=p.question, solution=p.solution)}]
        )
        for p in problems
    }
