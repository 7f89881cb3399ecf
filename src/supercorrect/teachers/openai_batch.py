"""Teacher requests through OpenAI's Batch API: the same answers as live calls, at the batch price (half).

`BatchChat(chat, state_dir=...)` has the `chat_many(conversations, desc)` of `OpenAIChat` and wraps one: it asks
the live client's cache first, and sends what is missing as one batch (a JSONL file uploaded through the files
endpoint, one `/v1/chat/completions` line per request, `custom_id` = the request's cache key, body =
`OpenAIChat.request_body`), polls it, downloads the output and error files, and stores every answer in the same
content-addressed cache through `OpenAIChat.finish`. So a batch answer and a live answer of the same request are
interchangeable, and a re-run sends nothing that is cached.

Why the bookkeeping: a batch is paid when it is created and answered hours later; a stage killed meanwhile
must not pay again. Every batch is recorded in `state_dir/<job>.json` BEFORE its file is uploaded and after
each step (`input_file_id`, then `batch_id`); a re-run finds the record of an unfinished batch holding its
requests and resumes polling that batch. A kill between "create" and writing the id is covered too: the
batch carries `metadata.supercorrect_job`, and a record with a file but no batch id is matched against the
server's batch list before anything is created. A record is marked done only after its answers are cached
and its tokens are in the spend ledger (one row per batch, `"tier": "batch"`, written once).

Failures inside a batch (a line with an error or a non-200 status, lines left undone by an `expired` or
`cancelled` batch, a batch that `failed` validation) get the live client's failure kinds (`rate_limit`,
`server_error` (also a failed batch), `timeout` (an expired one), `client_error` (HTTP 4xx lines, a
cancelled batch), `bad_response`). Retryable ones are retried per
`retry`: `"live"` (the live client, with its own retries, at live prices), `"batch"` (a new batch, at most
`max_rounds` more) or `"none"`. A batch cancelled by someone else is not resubmitted in this run (a re-run
does). Waiting longer than `max_wait_s` leaves the batch running and fails its requests with `timeout`: a
re-run resumes polling the same batch.

Spend caps: before a batch is created, each request's worst case is priced at the batch prices and must fit,
together with the requests already waiting in batches (`OpenAIChat._over_cap`); what does not fit fails with
`budget` and is not sent.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError
from ..io import atomic_write_text, iter_jsonl_tolerant, read_json, sha256_json, write_json
from .openai_chat import (
    RETRYABLE,
    ChatResult,
    OpenAIChat,
    _Failed,
    _parse_completion,
    _short,
    _status_kind,
    _worst_prompt_tokens,
)

log = logging.getLogger(__name__)

BatchRetry = Literal["live", "batch", "none"]
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
ENDPOINT = "/v1/chat/completions"
_LINE_ERROR_KIND = {  # error codes the Batch API writes for lines it did not run
    "batch_expired": "timeout",
    "batch_cancelled": "client_error",
    "rate_limit_exceeded": "rate_limit",
    "server_error": "server_error",
}


class BatchChat:
    """`chat_many` through the Batch API over an `OpenAIChat` (its cache, ledger, prices, key and usage)."""

    def __init__(
        self,
        chat: OpenAIChat,
        *,
        state_dir: str | os.PathLike[str],
        poll_s: float = 30.0,
        max_wait_s: float | None = None,
        retry: BatchRetry = "live",
        max_rounds: int = 2,
        max_requests: int = 50_000,
        completion_window: str = "24h",
    ):
        if retry not in ("live", "batch", "none"):
            raise UserError(f"batch retry must be 'live', 'batch' or 'none', got {retry!r}")
        self.chat = chat
        self.state_dir = Path(state_dir)
        self.poll_s = poll_s
        self.max_wait_s = max_wait_s
        self.retry = retry
        self.max_rounds = max_rounds
        self.max_requests = max_requests
        self.completion_window = completion_window
        self.batches_created = 0  # in this process
        self.batches_resumed = 0  # unfinished batches of an earlier invocation that this one polled

    @property
    def usage(self) -> Any:
        return self.chat.usage

    @property
    def model(self) -> str:
        return self.chat.model

    def describe(self) -> dict[str, Any]:
        return {**self.chat.describe(), "batch_api": True, "batch_retry": self.retry}

    # ---- public entry point ----------------------------------------------------------------------------------

    def chat_many(self, conversations: list[list[dict[str, Any]]], desc: str = "teacher") -> list[ChatResult]:
        """One result per conversation, in order (as `OpenAIChat.chat_many`). Blocks while batches run."""
        chat = self.chat
        results: list[ChatResult | None] = [None] * len(conversations)
        todo: dict[str, list[int]] = {}
        for i, messages in enumerate(conversations):
            key = chat.cache.key(chat.model, messages, chat.params)
            record = chat.cache.get(key)
            if record is not None:
                results[i] = chat._from_record(record)
                chat._count(cache_hits=1)
            else:
                todo.setdefault(key, []).append(i)
        messages_of = {k: conversations[v[0]] for k, v in todo.items()}

        def settle(key: str, res: ChatResult, count: bool = True) -> None:
            if count and res.text is None:
                chat._count(failure=res.error_kind or "client_error")
            first, *dups = todo.pop(key)
            results[first] = res
            for j in dups:
                results[j] = ChatResult(**{**asdict(res), "cached": True})
                if res.text is not None:
                    chat._count(cache_hits=1)

        if todo:
            log.info("%s: %d requests through the Batch API", desc, len(todo))
            client = self._client()
            try:
                rounds = 0
                while todo:
                    outcome, running = self._one_round(client, {k: messages_of[k] for k in todo})
                    retry = []
                    for key, res in outcome.items():
                        if res.text is None and res.error_kind in RETRYABLE and key not in running:
                            retry.append(key)
                        else:
                            settle(key, res)
                    if not retry:
                        break
                    if self.retry == "batch" and rounds < self.max_rounds:
                        rounds += 1
                        chat._count(retries=len(retry))
                        continue
                    if self.retry == "live":
                        live = chat.chat_many([messages_of[k] for k in retry], f"{desc} (live retry)")
                        for key, res in zip(retry, live, strict=True):
                            settle(key, res, count=False)  # the live client counted its own failures
                        break
                    why = "not retried: teacher.batch_retry=none" if self.retry == "none" else \
                        f"not retried: {self.max_rounds} new batches already"
                    for key in retry:
                        settle(key, ChatResult(None, None, error=f"{outcome[key].error} ({why})"))
                    break
            finally:
                client.close()
        return [r if r is not None else ChatResult(None, None, error="client_error: not run") for r in results]

    # ---- one round: resume or create batches, wait, collect -------------------------------------------------

    def _one_round(
        self, client: Any, wanted: dict[str, list[dict[str, Any]]]
    ) -> tuple[dict[str, ChatResult], set[str]]:
        """Results for `wanted` (cache key -> messages) from unfinished batches of earlier invocations that hold
        them and from new batches for the rest, and the keys whose batch is still running (never to be sent
        again while it runs). Failed lines come back failed; retrying them is the caller's choice."""
        out: dict[str, ChatResult] = {}
        running: set[str] = set()
        awaited: list[dict[str, Any]] = []
        covered: set[str] = set()
        for state in self._states():
            if state.get("done") or not set(state["keys"]) & wanted.keys():
                continue
            if not state.get("batch_id") and not self._adopt(client, state):
                continue  # never created: nothing was paid, its requests go into a new batch
            awaited.append(state)
            covered |= set(state["keys"])
        if awaited:
            self.batches_resumed += len(awaited)
            log.warning("resuming %d unfinished batch(es) of an earlier run: %s", len(awaited),
                        ", ".join(str(s["batch_id"]) for s in awaited))  # fmt: skip
        reserved = [0, 0]  # worst cases of the requests waiting in batches, priced at batch prices
        for state in awaited:
            for w in state.get("worst", {}).values():
                reserved[0] += w[0]
                reserved[1] += w[1]
        send: dict[str, list[dict[str, Any]]] = {}
        worst: dict[str, tuple[int, int]] = {}
        for k in (k for k in wanted if k not in covered):
            w = (_worst_prompt_tokens(wanted[k]), self.chat.max_tokens)
            why = self.chat._over_cap(w, (reserved[0], reserved[1]), batch=True) if self.chat._capped else None
            if why is not None:
                out[k] = ChatResult(None, None, error=f"budget: not sent: {why}")
                continue
            reserved[0] += w[0]
            reserved[1] += w[1]
            worst[k], send[k] = w, wanted[k]
        keys = list(send)
        new = [self._new_state({k: send[k] for k in keys[i : i + self.max_requests]}, worst)
               for i in range(0, len(keys), self.max_requests)]  # fmt: skip
        for state in [*awaited, *new]:
            try:
                batch = self._wait(client, state, self._create(client, state) if state in new else None)
            except _Failed as f:
                res = ChatResult(None, None, error=f"{f.kind}: {f.reason}")
                if state.get("batch_id"):  # created, then polling failed: it runs on, never resend it
                    running |= set(state["keys"])
                out.update({k: res for k in state["keys"] if k in wanted})
                continue
            if batch is None:  # still running after max_wait_s: leave it, a re-run resumes it
                reason = (f"timeout: batch {state['batch_id']} still {state['status']} after "
                          f"teacher.batch_max_wait_s={self.max_wait_s:g} s; run the same command again to "
                          f"resume polling it (it is not submitted again)")  # fmt: skip
                running |= set(state["keys"])
                out.update({k: ChatResult(None, None, error=reason) for k in state["keys"] if k in wanted})
                continue
            out.update({k: v for k, v in self._collect(client, state, batch, wanted).items() if k in wanted})
        return out, running

    # ---- the state records --------------------------------------------------------------------------------

    def _states(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                state = read_json(path)
            except (OSError, ValueError):
                log.warning("unreadable batch record %s: ignored", path)
                continue
            if isinstance(state, dict) and state.get("model") == self.chat.model and isinstance(state.get("keys"), list):
                out.append(state)
        return out

    def _save(self, state: dict[str, Any]) -> None:
        write_json(self.state_dir / f"{state['job']}.json", state)

    def _new_state(self, wanted: dict[str, list[dict[str, Any]]], worst: dict[str, tuple[int, int]]) -> dict[str, Any]:
        """Record a batch before anything is sent: its keys and (beside it) the exact input file."""
        keys = sorted(wanted)
        job = sha256_json({"model": self.chat.model, "params": self.chat.params, "keys": keys, "t": time.time()})[:24]
        lines = [json.dumps({"custom_id": k, "method": "POST", "url": ENDPOINT,
                             "body": self.chat.request_body(wanted[k])}, ensure_ascii=False)
                 for k in keys]  # fmt: skip
        atomic_write_text(self.state_dir / f"{job}.input.jsonl", "\n".join(lines) + "\n")
        state = {
            "job": job, "model": self.chat.model, "keys": keys, "worst": {k: list(worst[k]) for k in keys},
            "input_file_id": None, "batch_id": None, "status": "new", "done": False,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }  # fmt: skip
        self._save(state)
        return state

    def _input_messages(self, state: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """custom_id -> messages, from the input file kept beside the record."""
        out = {}
        for row in iter_jsonl_tolerant(self.state_dir / f"{state['job']}.input.jsonl"):
            body = row.get("body")
            if isinstance(body, dict) and isinstance(body.get("messages"), list):
                out[str(row.get("custom_id"))] = body["messages"]
        return out

    def _adopt(self, client: Any, state: dict[str, Any]) -> bool:
        """A record without a batch id (killed around "create"): adopt the batch if the server has it, else drop
        the record (nothing was paid). True when adopted."""
        found = None
        if state.get("input_file_id"):
            try:
                found = self._find(client, state)
            except _Failed as f:
                raise UserError(f"cannot tell whether batch job {state['job']} was created: {f}") from None
        if found is None:
            state.update(done=True, status="never created")
            self._save(state)
            return False
        state.update(batch_id=found.id, status=found.status)
        self._save(state)
        return True

    # ---- the API calls ------------------------------------------------------------------------------------

    def _client(self) -> Any:
        import openai

        return openai.OpenAI(
            api_key=self.chat._api_key.reveal(), base_url=self.chat.base_url, max_retries=0,
            timeout=self.chat.timeout_s,
        )  # fmt: skip

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One API call with the live client's retry rules (retryable kinds, backoff, Retry-After)."""
        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - classified below, never swallowed silently
                f = self._classify(e)
            if f.kind in RETRYABLE and attempt < self.chat.max_retries:
                delay = self.chat._delay(attempt, f.retry_after)
                if delay is not None:
                    attempt += 1
                    time.sleep(delay)
                    continue
            raise _Failed(f.kind, f"{what}: {f.reason}")

    def _classify(self, e: Exception) -> _Failed:
        import openai

        from .openai_chat import parse_retry_after

        redact = self.chat._redact
        if isinstance(e, openai.APITimeoutError):
            return _Failed("timeout", f"no response within {self.chat.timeout_s:g} s")
        if isinstance(e, openai.APIConnectionError):
            return _Failed("connection", redact(str(e) or type(e).__name__))
        if isinstance(e, openai.APIStatusError):
            kind = _status_kind(e.status_code)
            after = parse_retry_after(e.response.headers) if kind in RETRYABLE else None
            return _Failed(kind, f"HTTP {e.status_code}: {redact(_short(e.message))}", after)
        if isinstance(e, openai.APIResponseValidationError | ValueError | KeyError | TypeError):
            return _Failed("bad_response", redact(_short(f"{type(e).__name__}: {e}")))
        return _Failed("client_error", redact(_short(f"{type(e).__name__}: {e}")))

    def _create(self, client: Any, state: dict[str, Any]) -> Any:
        """Upload the input file and create the batch, recording each id as soon as it exists."""
        data = (self.state_dir / f"{state['job']}.input.jsonl").read_bytes()
        file = self._call("upload the batch file", client.files.create,
                          file=(f"supercorrect-{state['job']}.jsonl", data), purpose="batch")  # fmt: skip
        state.update(input_file_id=file.id, status="uploaded")
        self._save(state)
        batch = self._call(
            "create the batch", client.batches.create, input_file_id=file.id, endpoint=ENDPOINT,
            completion_window=self.completion_window, metadata={"supercorrect_job": state["job"]},
        )  # fmt: skip
        self.batches_created += 1
        state.update(batch_id=batch.id, status=batch.status)
        self._save(state)
        log.info("created batch %s with %d requests", batch.id, len(state["keys"]))
        return batch

    def _find(self, client: Any, state: dict[str, Any]) -> Any:
        page = self._call("list batches", client.batches.list, limit=100)
        for b in getattr(page, "data", None) or []:
            meta = getattr(b, "metadata", None) or {}
            if b.input_file_id == state["input_file_id"] or meta.get("supercorrect_job") == state["job"]:
                return b
        return None

    def _wait(self, client: Any, state: dict[str, Any], batch: Any) -> Any:
        """Poll until the batch ends; None when `max_wait_s` passes first."""
        t0 = time.monotonic()
        while batch is None or batch.status not in TERMINAL:
            if batch is not None:
                if self.max_wait_s is not None and time.monotonic() - t0 > self.max_wait_s:
                    state["status"] = batch.status
                    self._save(state)
                    return None
                time.sleep(self.poll_s * random.uniform(0.8, 1.2))
            batch = self._call("poll the batch", client.batches.retrieve, state["batch_id"])
        state["status"] = batch.status
        self._save(state)
        return batch

    def _download(self, client: Any, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        text = self._call("download a batch result file", lambda: client.files.content(file_id).text)
        rows = []
        for line in text.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn line: its request counts as not answered
            if isinstance(row, dict):
                rows.append(row)
        return rows

    # ---- results --------------------------------------------------------------------------------------------

    def _collect(self, client: Any, state: dict[str, Any], batch: Any, wanted: dict[str, list[dict[str, Any]]]) -> dict[str, ChatResult]:
        """Cache every answered line, record the batch's tokens once, mark the record done; per key a result."""
        chat = self.chat
        rows = self._download(client, batch.output_file_id) + self._download(client, batch.error_file_id)
        recorded = chat.ledger.batch_ids() if chat.ledger is not None else set()
        fresh = batch.id not in recorded  # killed after the ledger row: its tokens are counted already
        out: dict[str, ChatResult] = {}
        inputs: dict[str, list[dict[str, Any]]] | None = None
        tokens = [0, 0]
        keys = set(state["keys"])
        for row in rows:
            key = row.get("custom_id")
            if key not in keys or (key in out and out[key].text is not None):
                continue
            res = self._line(row)
            if res.text is None and res.error is None:
                res.error = f"empty: no text in the completion (finish_reason={res.finish_reason})"
            if res.text is not None:
                tokens[0] += res.prompt_tokens
                tokens[1] += res.completion_tokens
                if fresh:
                    chat._count(prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens, batch=True)
                if key not in wanted and inputs is None:
                    inputs = self._input_messages(state)  # a request this call did not ask: cache it too
                messages = wanted.get(key) or (inputs or {}).get(key)
                if messages is not None:
                    res = chat.finish(key, messages, res)
            out[key] = res
        if chat.ledger is not None and fresh and (tokens[0] or tokens[1]):
            try:
                chat.ledger.add(chat.model, tokens[0], tokens[1], batch_id=batch.id)
            except OSError as e:
                log.warning("could not append to the teacher spend ledger: %s", e)
        missing = _missing_reason(batch)
        for key in keys - out.keys():
            out[key] = ChatResult(None, None, error=missing)
        state.update(done=True, status=batch.status, answered=sum(1 for r in out.values() if r.text is not None))
        self._save(state)
        return out

    def _line(self, row: dict[str, Any]) -> ChatResult:
        """A ChatResult from one output/error line (never raises)."""
        err = row.get("error")
        resp = row.get("response") if isinstance(row.get("response"), dict) else None
        if resp is None or err:
            code = (err or {}).get("code") if isinstance(err, dict) else None
            message = (err or {}).get("message") if isinstance(err, dict) else err
            kind = _LINE_ERROR_KIND.get(str(code), "server_error" if code is None else "client_error")
            return ChatResult(None, None, error=f"{kind}: batch line {code or 'error'}: {_short(str(message or ''))}")
        status = resp.get("status_code")
        body = resp.get("body")
        if status != 200:
            kind = _status_kind(int(status)) if isinstance(status, int) else "bad_response"
            msg = body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else ""
            return ChatResult(None, None, error=f"{kind}: batch line HTTP {status}: {_short(str(msg or ''))}")
        try:
            return _parse_completion(json.dumps(body))
        except _Failed as f:
            return ChatResult(None, None, error=f"{f.kind}: batch line: {f.reason}")


def _missing_reason(batch: Any) -> str:
    """Why a request of `batch` has no line in its result files."""
    status = batch.status
    if status == "expired":
        return f"timeout: batch {batch.id} expired (completion window) before this request ran"
    if status == "cancelled":
        return f"client_error: batch {batch.id} was cancelled before this request ran"
    if status == "failed":
        errors = getattr(getattr(batch, "errors", None), "data", None) or []
        why = "; ".join(_short(f"{getattr(e, 'code', '')}: {getattr(e, 'message', '')}", 120) for e in errors[:3])
        # e.g. the organisation's enqueued-token limit: retryable (live, or a smaller batch later)
        return f"server_error: batch {batch.id} failed: {why or 'no reason given'}"
    return f"bad_response: batch {batch.id} {status} without a result line for this request"
