"""An OpenAI Batch API on 127.0.0.1 for tests (stdlib only): files and batches endpoints, plus live chat.

Endpoints (what `openai.OpenAI().files` / `.batches` / `.chat.completions` call):

    POST /v1/files                     multipart upload (purpose=batch) -> a file object
    GET  /v1/files/{id}/content        the file's bytes (input, output or error file)
    POST /v1/batches                   create a batch from an uploaded JSONL file -> status "validating"
    GET  /v1/batches/{id}              the batch; each poll moves it on (validating -> in_progress -> ...)
    GET  /v1/batches                   list, newest first
    POST /v1/batches/{id}/cancel       "cancelling", then "cancelled" at the next poll
    POST /v1/chat/completions          a live answer (for live retries)

Answers are `fault_server.expected_text(messages)`: for the template-extraction prompt a valid hierarchical
solution whose answer is the reference's, so a real `templates` stage keeps them. A batch ends by `plan`:

    completed      every line answered, except the lines `plan.fail_line` picks (per-line error / HTTP status)
    expired        only the first `plan.done_share` of its lines ran; the rest are in the error file as
                   `batch_expired`
    failed         validation failed: no output at all
    cancelled      by `POST .../cancel`: lines that ran before stay in the output file

`plan.hold` (a threading.Event): while it is not set, batches stay "in_progress" (a test kills its client
meanwhile). The server counts what a user would pay for: `paid` = answered lines and live completions per
request (`messages_key`), and `created` = batches created.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fault_server import expected_text, messages_key
from servers import completion


def usage_of(messages: list[dict[str, Any]], text: str) -> tuple[int, int]:
    prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
    return max(1, prompt_chars // 4), max(1, len(text) // 4)


@dataclass
class BatchPlan:
    end: str = "completed"  # completed | expired | failed: how a batch ends once released
    polls_in_progress: int = 2  # polls a batch stays in_progress before it ends (after `hold` is set)
    hold: threading.Event | None = None  # batches stay in_progress until this is set
    done_share: float = 0.5  # expired: the share of lines that ran
    # (batch number, line index, custom_id) -> None (answer) or a fault: "error" (an error object in the
    # error file), or an HTTP status (int) for a response line with that status.
    fail_line: Callable[[int, int, str], str | int | None] = lambda b, i, c: None
    first_batch_only: bool = True  # apply `end` and `fail_line` to the first batch only (retries succeed)


@dataclass
class Batch:
    id: str
    number: int
    input_file_id: str
    metadata: dict[str, str]
    created_at: int
    status: str = "validating"
    polls: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "object": "batch", "endpoint": "/v1/chat/completions", "errors":
            {"object": "list", "data": self.errors} if self.errors else None, "input_file_id": self.input_file_id,
            "completion_window": "24h", "status": self.status, "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id, "created_at": self.created_at, "metadata": self.metadata,
            "request_counts": self.counts,
        }  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BatchServer

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, obj: Any, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if raw is None else "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def _not_found(self) -> None:
        self._send(404, {"error": {"message": f"no such route {self.command} {self.path}"}})

    def do_GET(self) -> None:
        srv = self.server
        parts = self.path.split("?")[0].strip("/").split("/")  # v1, files|batches, id, ...
        with srv.lock:
            srv.calls[f"GET {parts[1] if len(parts) > 1 else ''}"] += 1
            if parts[1:2] == ["files"] and len(parts) == 4 and parts[3] == "content" and parts[2] in srv.files:
                self._send(200, None, raw=srv.files[parts[2]])
            elif parts[1:2] == ["batches"] and len(parts) == 3 and parts[2] in srv.batches:
                self._send(200, srv.advance(srv.batches[parts[2]]).to_json())
            elif parts[1:] == ["batches"]:
                data = [b.to_json() for b in sorted(srv.batches.values(), key=lambda b: -b.number)]
                self._send(200, {"object": "list", "data": data, "has_more": False,
                                 "first_id": data[0]["id"] if data else None,
                                 "last_id": data[-1]["id"] if data else None})  # fmt: skip
            else:
                self._not_found()

    def do_POST(self) -> None:
        srv = self.server
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = self.path.split("?")[0].strip("/").split("/")
        route = "/".join(parts[1:2] + parts[3:4])
        with srv.lock:
            srv.calls[f"POST {route}"] += 1
        if route == "files":
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw
            )
            data = next((p.get_payload(decode=True) for p in msg.iter_parts() if p.get_filename()), None)
            if data is None:
                self._send(400, {"error": {"message": "no file part"}})
                return
            with srv.lock:
                fid = srv.new_file(data)
            self._send(200, {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                             "filename": "input.jsonl", "purpose": "batch", "status": "processed"})  # fmt: skip
        elif route == "batches":
            req = json.loads(raw)
            with srv.lock:
                if req.get("input_file_id") not in srv.files:
                    self._send(400, {"error": {"message": "unknown input_file_id"}})
                    return
                n = len(srv.batches)
                b = Batch(f"batch_{n:04d}", n, req["input_file_id"], req.get("metadata") or {}, int(time.time()))
                srv.batches[b.id] = b
                srv.created += 1
            self._send(200, b.to_json())
        elif route == "batches/cancel" and parts[2] in srv.batches:
            with srv.lock:
                b = srv.batches[parts[2]]
                if b.status not in ("completed", "failed", "expired", "cancelled"):
                    b.status = "cancelling"
                self._send(200, b.to_json())
        elif route == "chat":  # /v1/chat/completions
            req = json.loads(raw)
            text = expected_text(req["messages"])
            p, c = usage_of(req["messages"], text)
            with srv.lock:
                srv.paid[messages_key(req["messages"])] += 1
                srv.live += 1
            self._send(200, completion(text, "stop", p, c))
        else:
            self._not_found()


class BatchServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, plan: BatchPlan | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.plan = plan or BatchPlan()
        self.lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, Batch] = {}
        self.created = 0  # batches created
        self.live = 0  # live chat completions answered
        self.paid: Counter[str] = Counter()  # request -> answers paid for (batch lines + live calls)
        self.calls: Counter[str] = Counter()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def __enter__(self) -> BatchServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.plan.hold is not None:
            self.plan.hold.set()
        self.shutdown()
        self.server_close()

    def new_file(self, data: bytes) -> str:
        fid = f"file-{len(self.files):04d}"
        self.files[fid] = data
        return fid

    def advance(self, b: Batch) -> Batch:
        """One poll's worth of progress (called with the lock held)."""
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return b
        lines = [json.loads(x) for x in self.files[b.input_file_id].decode().splitlines() if x.strip()]
        b.counts["total"] = len(lines)
        special = b.number == 0 or not self.plan.first_batch_only
        end = self.plan.end if special else "completed"
        if b.status == "validating":
            if end == "failed":
                b.status = "failed"
                b.errors = [{"code": "invalid_request", "message": "injected validation failure", "line": 1}]
            else:
                b.status = "in_progress"
            return b
        if b.status == "cancelling":
            self._finish(b, lines[: len(lines) // 2], lines[len(lines) // 2 :], "batch_cancelled", special)
            b.status = "cancelled"
            return b
        if self.plan.hold is not None and not self.plan.hold.is_set():
            return b
        b.polls += 1
        if b.polls < self.plan.polls_in_progress:
            return b
        if end == "expired":
            k = int(len(lines) * self.plan.done_share)
            self._finish(b, lines[:k], lines[k:], "batch_expired", special)
            b.status = "expired"
        else:
            self._finish(b, lines, [], "", special)
            b.status = "completed"
        return b

    def _finish(self, b: Batch, ran: list[dict], skipped: list[dict], code: str, special: bool) -> None:
        out, err = [], []
        for i, line in enumerate(ran):
            cid = line["custom_id"]
            fault = self.plan.fail_line(b.number, i, cid) if special else None
            if fault == "error":
                err.append({"id": f"req_{i}", "custom_id": cid, "response": None,
                            "error": {"code": "server_error", "message": "injected line error"}})  # fmt: skip
            elif isinstance(fault, int):
                err.append({"id": f"req_{i}", "custom_id": cid, "error": None, "response": {
                    "status_code": fault, "request_id": f"r{i}",
                    "body": {"error": {"message": f"injected HTTP {fault}"}}}})  # fmt: skip
            else:
                messages = line["body"]["messages"]
                text = expected_text(messages)
                p, c = usage_of(messages, text)
                self.paid[messages_key(messages)] += 1
                out.append({"id": f"req_{i}", "custom_id": cid, "error": None, "response": {
                    "status_code": 200, "request_id": f"r{i}", "body": completion(text, "stop", p, c)}})  # fmt: skip
        for i, line in enumerate(skipped):
            err.append({"id": f"req_s{i}", "custom_id": line["custom_id"], "response": None,
                        "error": {"code": code, "message": f"This request could not be executed ({code})."}})  # fmt: skip
        b.counts.update(completed=len(out), failed=len(err))
        if out:
            b.output_file_id = self.new_file("".join(json.dumps(r) + "\n" for r in out).encode())
        if err:
            b.error_file_id = self.new_file("".join(json.dumps(r) + "\n" for r in err).encode())
