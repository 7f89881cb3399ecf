"""A batched, cached, rate-limit-aware client for any OpenAI-compatible chat endpoint.

`OpenAIChat.chat_many(conversations)` sends one chat completion per conversation and returns one `ChatResult`
per conversation, in order. It never raises for one bad item: a failed item has `text=None` and `error`
set to `"<kind>: <reason>"`, with kind one of

- `rate_limit` (HTTP 429), `server_error` (5xx), `timeout` (client timeout or HTTP 408), `connection`,
  `bad_response` (body is not the JSON of a chat completion): retried with exponential backoff and jitter,
  honouring the server's Retry-After / retry-after-ms header, up to `max_retries` retries;
- `client_error` (any other 4xx, or a Retry-After longer than `backoff_max_s`): fails at once;
- `empty` (a completion with no text): fails at once, not cached, so a re-run asks again;
- `budget` (sending the request could exceed `max_spend_usd` or `max_total_tokens`): not sent, not cached;
- `length` (the completion hit `max_tokens`): NOT a failure of the request. The truncated text is returned
  and cached (the same request would be truncated the same way; raising `max_tokens` changes the cache key)
  and `error` notes the truncation, so callers can parse what there is and know it is incomplete.

Cache: every successful completion (including `length`) is stored under `cache_dir/ab/<sha256>.json`, keyed
by the model name, the messages and the generation parameters. The key never includes the API key or the
base URL: the model name is the identity of the model, so give different local models different names.
Lookups happen before anything is sent, so a re-run of finished work sends zero requests. Identical
conversations within one batch are sent once.

Spend caps: `max_total_tokens` (prompt + completion) and `max_spend_usd` (needs both prices) bound what the
server reports in `usage`. A request is sent only if its worst case (every byte of the messages a token, plus
`max_tokens`) fits under each cap together with the requests already in flight, so the caps are never
exceeded. With `spend_ledger` (a JSONL file; the run's stages pass `<run_dir>/teacher_spend.jsonl`) every
response's tokens are appended there and the caps cover all earlier invocations too; cached answers are free.

Batch API: `teachers.openai_batch` sends the same requests through OpenAI's Batch API at its lower price. It
reuses this client's cache, request body (`request_body`), answer handling (`finish`) and ledger; the ledger
marks its rows `"tier": "batch"`, and costs and caps price them with the batch prices (`batch_price_*_per_1m`,
default half the live prices), so mixed live and batch spending is accounted at what each really cost.

Secrets: the API key is read from the environment variable named by `api_key_env`. It is held in memory only,
never written to the cache, never logged, and scrubbed from every error message.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import UserError
from ..io import JsonlAppender, iter_jsonl_tolerant, sha256_json, write_json

log = logging.getLogger(__name__)

CACHE_VERSION = 1
RETRYABLE = frozenset({"rate_limit", "server_error", "timeout", "connection", "bad_response"})
FAILURE_KINDS = ("rate_limit", "server_error", "timeout", "connection", "bad_response", "client_error", "empty",
                 "budget")  # fmt: skip
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_SECRET_RE = re.compile(r"\b(sk-|Bearer\s+)[A-Za-z0-9_\-*.]{3,}")


@dataclass
class ChatResult:
    """One conversation's answer. `error` is `"<kind>: <reason>"` (see the module docstring) or None."""

    text: str | None
    finish_reason: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False  # answered from the on-disk cache (or a duplicate in the same batch): nothing sent
    error: str | None = None

    @property
    def error_kind(self) -> str | None:
        return self.error.split(":", 1)[0] if self.error else None


@dataclass
class Usage:
    """What this client spent in this process. Cached answers cost nothing: their tokens are not counted."""

    requests_sent: int = 0  # HTTP requests, retries included
    cache_hits: int = 0  # conversations answered without a request
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: dict[str, int] = field(default_factory=dict)  # final failures by kind (length included)
    cost_usd: float | None = None  # None unless both prices are given
    # Of the above, what was answered inside Batch API batches (priced at the batch prices).
    batch_requests: int = 0
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0
    # With a spend ledger: tokens and cost over every invocation that used it, this one included.
    cumulative_tokens: int | None = None
    cumulative_cost_usd: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChatCache:
    """Content-addressed on-disk cache: one JSON file per request, written atomically."""

    def __init__(self, cache_dir: str | os.PathLike[str]):
        self.dir = Path(cache_dir)

    @staticmethod
    def key(model: str, messages: list[dict[str, Any]], params: Mapping[str, Any]) -> str:
        """sha256 of the canonical JSON of model, messages and generation parameters (never the API key)."""
        return sha256_json({"v": CACHE_VERSION, "model": model, "messages": messages, "params": dict(params)})

    def path(self, key: str) -> Path:
        if not _KEY_RE.match(key):
            raise ValueError(f"not a cache key: {key[:80]!r}")
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record, or None when absent or unreadable (a damaged entry is a miss)."""
        try:
            record = json.loads(self.path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            return None
        return record

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        write_json(self.path(key), dict(record))


class SpendLedger:
    """Append-only record of the tokens a teacher spent, one JSON line per response, kept across invocations."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def totals(self, tier: str | None = None) -> tuple[int, int]:
        """(prompt tokens, completion tokens) recorded so far, of one tier ("live", "batch") or all; a torn or
        bad line is skipped."""
        prompt = completion = 0
        for row in iter_jsonl_tolerant(self.path):
            if tier is not None and row.get("tier", "live") != tier:
                continue
            try:
                prompt += int(row.get("prompt_tokens") or 0)
                completion += int(row.get("completion_tokens") or 0)
            except (TypeError, ValueError):
                continue
        return prompt, completion

    def batch_ids(self) -> set[str]:
        """Batches already recorded (a batch is recorded once, in one row)."""
        return {str(r["batch_id"]) for r in iter_jsonl_tolerant(self.path) if r.get("batch_id")}

    def add(self, model: str, prompt_tokens: int, completion_tokens: int, batch_id: str | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        row = {"model": model, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
               "t": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        if batch_id is not None:
            row.update(tier="batch", batch_id=batch_id)
        # JsonlAppender drops a torn last line left by a kill first, so this row is never glued onto it.
        with JsonlAppender(self.path) as f:
            f.append(row)


class _Budget:
    """In-flight worst cases of one batch: a request waits while its worst case fits only once the requests in
    flight have reported what they really cost, and is refused when it cannot fit at all."""

    def __init__(self, chat: OpenAIChat):
        self.chat = chat
        self.cond = asyncio.Condition()
        self.reserved = (0, 0)  # (prompt, completion) tokens reserved by requests in flight

    async def acquire(self, worst: tuple[int, int]) -> str | None:
        """Reserve `worst`; returns None when reserved, else why the request does not fit under a cap."""
        async with self.cond:
            while True:
                why = self.chat._over_cap(worst, self.reserved)
                if why is None:
                    self.reserved = (self.reserved[0] + worst[0], self.reserved[1] + worst[1])
                    return None
                if self.reserved == (0, 0):
                    return why
                await self.cond.wait()

    async def release(self, worst: tuple[int, int]) -> None:
        async with self.cond:
            self.reserved = (self.reserved[0] - worst[0], self.reserved[1] - worst[1])
            self.cond.notify_all()


class _Secret:
    """Holds the API key; its repr and str are masked, so dumping the client's attributes leaks nothing."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


class _Failed(Exception):
    """One attempt failed; `kind` decides whether it is retried."""

    def __init__(self, kind: str, reason: str, retry_after: float | None = None):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason
        self.retry_after = retry_after


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date; None if absent."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_loopback_url(url: str | None) -> bool:
    """True for http(s) URLs whose host is localhost or a loopback address."""
    if not url:
        return False
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_url(url: str | None) -> str | None:
    """The URL without user:password@ and query string, fit for logs and manifests."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class OpenAIChat:
    """Chat completions from an OpenAI-compatible endpoint, with our own retries, a disk cache and usage."""

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        cache_dir: str | os.PathLike[str],
        max_concurrency: int = 8,
        max_retries: int = 6,
        timeout_s: float = 120.0,
        temperature: float = 0.0,
        max_tokens: int = 2048,
        price_in_per_1m: float | None = None,
        price_out_per_1m: float | None = None,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_spend_usd: float | None = None,
        max_total_tokens: int | None = None,
        spend_ledger: str | os.PathLike[str] | None = None,
        progress: bool = True,
        batch_price_in_per_1m: float | None = None,
        batch_price_out_per_1m: float | None = None,
    ):
        if max_concurrency < 1:
            raise UserError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise UserError(f"max_retries must be >= 0, got {max_retries}")
        if max_spend_usd is not None and (price_in_per_1m is None or price_out_per_1m is None):
            raise UserError("max_spend_usd needs price_in_per_1m and price_out_per_1m")
        self.model = model
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.api_key_env = api_key_env
        self.cache = ChatCache(cache_dir)
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.price_in_per_1m = price_in_per_1m
        self.price_out_per_1m = price_out_per_1m
        # Batch API prices; default half the live ones (OpenAI's batch discount).
        self.batch_price_in_per_1m = _default_half(batch_price_in_per_1m, price_in_per_1m)
        self.batch_price_out_per_1m = _default_half(batch_price_out_per_1m, price_out_per_1m)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_spend_usd = max_spend_usd
        self.max_total_tokens = max_total_tokens
        self.ledger = SpendLedger(spend_ledger) if spend_ledger is not None else None
        self._before = self.ledger.totals() if self.ledger else (0, 0)  # spent by earlier invocations
        self._before_batch = self.ledger.totals("batch") if self.ledger else (0, 0)  # of which in batches
        self.progress = progress
        self.usage = Usage()
        self._lock = threading.Lock()
        if self.ledger:
            self._count()  # fill the cumulative figures
        self._api_key = _Secret(self._resolve_key())

    def _resolve_key(self) -> str:
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            return key
        if is_loopback_url(self.base_url):
            return "EMPTY"  # local servers (vLLM, llama.cpp, SGLang) accept any key
        raise UserError(
            f"the teacher's API key is missing: set the environment variable {self.api_key_env} "
            f"(or point teacher.base_url at a local server)"
        )

    def __repr__(self) -> str:
        return f"OpenAIChat(model={self.model!r}, base_url={safe_url(self.base_url)!r})"

    @property
    def params(self) -> dict[str, Any]:
        """The generation parameters that enter the cache key."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    def request_body(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """The chat-completion request for `messages` (live calls and Batch API lines send the same)."""
        return {"model": self.model, "messages": messages, "temperature": self.temperature,
                "max_tokens": self.max_tokens}  # fmt: skip

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "base_url": safe_url(self.base_url) or "default (api.openai.com)",
            **self.params,
        }

    # ---- public entry points -------------------------------------------------------------------------

    def chat_many(self, conversations: list[list[dict[str, Any]]], desc: str = "teacher") -> list[ChatResult]:
        """One result per conversation, in order. Runs its own event loop (in a worker thread if the calling
        thread already runs one)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.achat_many(conversations, desc))
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, self.achat_many(conversations, desc)).result()

    async def achat_many(
        self, conversations: list[list[dict[str, Any]]], desc: str = "teacher"
    ) -> list[ChatResult]:
        """The async form of `chat_many`."""
        from tqdm.auto import tqdm

        results: list[ChatResult | None] = [None] * len(conversations)
        todo: dict[str, list[int]] = {}  # cache key -> indices of identical conversations
        for i, messages in enumerate(conversations):
            key = self.cache.key(self.model, messages, self.params)
            record = self.cache.get(key)
            if record is not None:
                results[i] = self._from_record(record)
                self._count(cache_hits=1)
            else:
                todo.setdefault(key, []).append(i)

        with tqdm(total=len(conversations), desc=desc, disable=not self.progress, unit="req") as bar:
            bar.update(len(conversations) - sum(len(v) for v in todo.values()))
            if todo:
                import openai

                client = openai.AsyncOpenAI(
                    api_key=self._api_key.reveal(),
                    base_url=self.base_url,
                    max_retries=0,
                    timeout=self.timeout_s,
                )
                sem = asyncio.Semaphore(self.max_concurrency)
                budget = _Budget(self)

                async def one(key: str, indices: list[int]) -> None:
                    async with sem:  # backoff sleeps hold the slot: a rate-limited server sees fewer requests
                        res = await self._complete(client, conversations[indices[0]], key, budget)
                    results[indices[0]] = res
                    for j in indices[1:]:
                        results[j] = ChatResult(**{**asdict(res), "cached": True})
                        if res.text is not None:
                            self._count(cache_hits=1)
                    bar.update(len(indices))

                try:
                    await asyncio.gather(*(one(k, v) for k, v in todo.items()))
                finally:
                    await client.close()
        return [
            r if r is not None else ChatResult(None, None, error="client_error: not run") for r in results
        ]

    # ---- one conversation --------------------------------------------------------------------------------

    async def _complete(
        self, client: Any, messages: list[dict[str, Any]], key: str, budget: _Budget | None = None
    ) -> ChatResult:
        """Send with retries; cache and return the result. Never raises (except cancellation)."""
        attempt = 0
        while True:
            try:
                result = await self._attempt(client, messages, budget)
            except _Failed as f:
                if f.kind in RETRYABLE and attempt < self.max_retries:
                    delay = self._delay(attempt, f.retry_after)
                    if delay is not None:
                        attempt += 1
                        self._count(retries=1)
                        await asyncio.sleep(delay)
                        continue
                    return self._fail(
                        f.kind, f"{f.reason}; server asked to wait {f.retry_after:.0f} s (> backoff_max_s)"
                    )
                suffix = f" after {attempt} retries" if f.kind in RETRYABLE else ""
                return self._fail(f.kind, f.reason + suffix)
            except Exception as e:  # a bug or an exotic transport error: fail this item, not the batch
                log.warning("teacher request failed unexpectedly: %s", type(e).__name__)
                return self._fail(
                    "client_error", f"unexpected {type(e).__name__}: {self._redact(_short(str(e)))}"
                )
            return self.finish(key, messages, result)

    def finish(self, key: str, messages: list[dict[str, Any]], result: ChatResult) -> ChatResult:
        """An answer that came back (live or from a batch): cache it; empty is a failure, truncated a note."""
        if result.text is None:
            return self._fail("empty", f"no text in the completion (finish_reason={result.finish_reason})")
        try:
            self.cache.put(key, self._to_record(messages, result))
        except OSError as e:  # a full or read-only disk loses the cache entry, not the answer
            log.warning("could not write the teacher cache entry %s: %s", key[:12], e)
        if result.finish_reason == "length":
            result.error = _length_error(self.max_tokens)
            self._count(failure="length")
        return result

    async def _attempt(self, client: Any, messages: list[dict[str, Any]], budget: _Budget | None) -> ChatResult:
        """One HTTP request, within the spend caps; its tokens are counted before its reservation is freed."""
        worst = (_worst_prompt_tokens(messages), self.max_tokens)
        capped = budget is not None and self._capped
        if capped:
            assert budget is not None
            why = await budget.acquire(worst)
            if why is not None:
                raise _Failed("budget", f"not sent: {why}")
        try:
            self._count(requests_sent=1)
            result = await self._send_once(client, messages)
            self._count(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
            if self.ledger is not None and (result.prompt_tokens or result.completion_tokens):
                try:
                    self.ledger.add(self.model, result.prompt_tokens, result.completion_tokens)
                except OSError as e:
                    log.warning("could not append to the teacher spend ledger: %s", e)
            return result
        finally:
            if capped:
                assert budget is not None
                await budget.release(worst)

    @property
    def _capped(self) -> bool:
        return self.max_spend_usd is not None or self.max_total_tokens is not None

    def _over_cap(self, worst: tuple[int, int], reserved: tuple[int, int], batch: bool = False) -> str | None:
        """Why sending a request of worst case `worst` could break a cap, given what is spent and in flight
        (`reserved`, priced like `worst`: at batch prices when `batch`)."""
        with self._lock:
            spent = (self._before[0] + self.usage.prompt_tokens, self._before[1] + self.usage.completion_tokens)
            spent_usd = self._spent_usd()
        upto = (spent[0] + reserved[0] + worst[0], spent[1] + reserved[1] + worst[1])
        if self.max_total_tokens is not None and sum(upto) > self.max_total_tokens:
            return (
                f"max_total_tokens={self.max_total_tokens} reached ({sum(spent)} tokens spent, "
                f"this request could take up to {sum(worst)})"
            )
        if self.max_spend_usd is not None:
            more = (self._cost(reserved[0] + worst[0], reserved[1] + worst[1], batch) or 0.0)
            if (spent_usd or 0.0) + more > self.max_spend_usd:
                return (
                    f"max_spend_usd={self.max_spend_usd:g} reached ({spent_usd or 0.0:.4f} USD spent, "
                    f"this request could cost up to {self._cost(*worst, batch) or 0.0:.4f})"
                )
        return None

    def _cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float | None:
        p_in, p_out = (
            (self.batch_price_in_per_1m, self.batch_price_out_per_1m) if batch
            else (self.price_in_per_1m, self.price_out_per_1m)
        )  # fmt: skip
        if p_in is None or p_out is None:
            return None
        return (prompt_tokens * p_in + completion_tokens * p_out) / 1e6

    def _spent_usd(self, earlier: bool = True) -> float | None:
        """USD spent by this process (and by earlier invocations when `earlier`): live tokens at live prices,
        batch tokens at batch prices. Call with the lock held."""
        u = self.usage
        b0 = self._before_batch if earlier else (0, 0)
        a0 = (self._before[0] - b0[0], self._before[1] - b0[1]) if earlier else (0, 0)
        live = self._cost(a0[0] + u.prompt_tokens - u.batch_prompt_tokens,
                          a0[1] + u.completion_tokens - u.batch_completion_tokens)  # fmt: skip
        batch = self._cost(b0[0] + u.batch_prompt_tokens, b0[1] + u.batch_completion_tokens, batch=True)
        return None if live is None or batch is None else live + batch

    def _delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds before retry number `attempt + 1`; None when the server asks for more than backoff_max_s."""
        if retry_after is not None:
            if retry_after > self.backoff_max_s:
                return None
            return retry_after + random.uniform(0, 0.1 * max(retry_after, self.backoff_base_s))
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0**attempt)
        return random.uniform(0.5 * ceiling, ceiling)

    async def _send_once(self, client: Any, messages: list[dict[str, Any]]) -> ChatResult:
        import openai

        try:
            raw = await client.chat.completions.with_raw_response.create(**self.request_body(messages))
            body = raw.text
        except openai.APITimeoutError:
            raise _Failed("timeout", f"no response within {self.timeout_s:g} s") from None
        except openai.APIConnectionError as e:
            raise _Failed("connection", self._redact(str(e) or type(e).__name__)) from None
        except openai.APIStatusError as e:
            status = e.status_code
            kind = _status_kind(status)
            retry_after = parse_retry_after(e.response.headers) if kind in RETRYABLE else None
            raise _Failed(kind, f"HTTP {status}: {self._redact(_short(e.message))}", retry_after) from None
        except openai.APIResponseValidationError as e:
            raise _Failed("bad_response", self._redact(_short(str(e)))) from None
        except (openai.OpenAIError, ValueError, TypeError) as e:
            raise _Failed("client_error", f"{type(e).__name__}: {self._redact(_short(str(e)))}") from None
        return _parse_completion(body)

    # ---- bookkeeping ---------------------------------------------------------------------------------

    def _fail(self, kind: str, reason: str) -> ChatResult:
        self._count(failure=kind)
        return ChatResult(text=None, finish_reason=None, error=f"{kind}: {reason}")

    def _count(
        self,
        *,
        requests_sent: int = 0,
        cache_hits: int = 0,
        retries: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        failure: str | None = None,
        batch: bool = False,
    ) -> None:
        """Add to the usage; `batch`: the tokens were answered inside a Batch API batch."""
        with self._lock:
            u = self.usage
            u.requests_sent += requests_sent
            u.cache_hits += cache_hits
            u.retries += retries
            u.prompt_tokens += prompt_tokens
            u.completion_tokens += completion_tokens
            if batch:
                u.batch_requests += 1
                u.batch_prompt_tokens += prompt_tokens
                u.batch_completion_tokens += completion_tokens
            if failure:
                u.failures[failure] = u.failures.get(failure, 0) + 1
            u.cost_usd = self._spent_usd(earlier=False)
            if self.ledger is not None:
                u.cumulative_tokens = self._before[0] + u.prompt_tokens + self._before[1] + u.completion_tokens
                u.cumulative_cost_usd = self._spent_usd()

    def _redact(self, text: str) -> str:
        key = self._api_key.reveal()
        if key and key != "EMPTY":
            text = text.replace(key, "***")
        return _SECRET_RE.sub(lambda m: m.group(1) + "***", text)

    def _to_record(self, messages: list[dict[str, Any]], r: ChatResult) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "model": self.model,
            "params": self.params,
            "messages": messages,
            "text": r.text,
            "finish_reason": r.finish_reason,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }

    def _from_record(self, record: Mapping[str, Any]) -> ChatResult:
        finish = record.get("finish_reason")
        return ChatResult(
            text=record["text"],
            finish_reason=finish,
            prompt_tokens=int(record.get("prompt_tokens") or 0),
            completion_tokens=int(record.get("completion_tokens") or 0),
            cached=True,
            error=_length_error(self.max_tokens) if finish == "length" else None,
        )


def _status_kind(status: int) -> str:
    if status == 429:
        return "rate_limit"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    return "client_error"


def _worst_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """An upper bound on the prompt tokens of `messages`: every token is at least one byte, plus the chat
    format's few tokens per message."""
    size = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else m
        size += len((content if isinstance(content, str) else json.dumps(content, default=str)).encode()) + 8
    return size + 8


def _default_half(price: float | None, live: float | None) -> float | None:
    return price if price is not None else (None if live is None else live / 2)


def _length_error(max_tokens: int) -> str:
    return f"length: truncated at max_tokens={max_tokens}"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_completion(body: str) -> ChatResult:
    """A ChatResult from a chat-completion JSON body; `_Failed("bad_response")` if it is not one."""
    try:
        data = json.loads(body)
    except ValueError:
        raise _Failed("bad_response", f"response body is not JSON: {_short(body, 80)!r}") from None
    try:
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content")
        finish = choice.get("finish_reason")
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise _Failed("bad_response", "JSON is not a chat completion (no choices[0].message)") from None
    if content is not None and not isinstance(content, str):
        raise _Failed("bad_response", f"message content is {type(content).__name__}, not text")
    text = content if content and content.strip() else None
    return ChatResult(
        text=text,
        finish_reason=finish if isinstance(finish, str) else None,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
