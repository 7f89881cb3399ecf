"""Rule-based grading of model answers against reference answers.

Extraction (``extract_boxed``, ``extract_answer``) is plain linear-time string work in the calling process.
Equivalence is decided by Math-Verify in a small pool of worker processes: Math-Verify's own timeouts use
``signal.alarm`` (main thread only), so they are switched off and a worker that runs past ``timeout_s`` is
killed and replaced instead. Cheap cases (identical strings, equal plain numbers) never leave the caller.
Workers are started with the ``spawn`` method, so a script that grades must guard its entry point with
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import atexit
import json
import logging
import multiprocessing
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from .extract_qwen import extract_answer_qwen
from .extraction import Extraction

__all__ = [
    "Extraction",
    "Grade",
    "GradeReason",
    "Grader",
    "answers_match",
    "check_reference_answers",
    "extract_answer",
    "extract_boxed",
    "get_extractor",
]

log = logging.getLogger(__name__)

GradeReason = Literal["correct", "no_answer", "unparsable", "wrong", "timeout"]
ExtractorName = Literal["default", "qwen"]  # `grading.extractor`: ours, or Qwen2.5-Math's harness (extract_qwen)

# --------------------------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------------------------

# One token per match: a \boxed / \fbox command (with the whitespace after it), an escaped character, or a brace.
_BOX_TOKENS = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*|\\.|[{}]", re.DOTALL)
_BARE_ARG = re.compile(r"\\?[^\s${}\\]+")  # "\boxed 5", "\boxed \pi": one word, at most one command
_ANSWER_OPEN = re.compile(r"<\s*answer\s*>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"<\s*/\s*answer\s*>", re.IGNORECASE)
_LAST_NUMBER = re.compile(
    r"-?\\[dt]?frac\{\s*\d+\s*\}\{\s*\d+\s*\}"  # \frac{3}{4}
    r"|(?:(?<![\w)\]}])-)?(?:\d{1,3}(?:(?:,\d{3})+|(?: \d{3})+)(?!\d)|\d+)(?:\.\d+)?(?:/\d+(?!\.\d))?"  # -1,234.5 3/4
)


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (or ``\\boxed 5``) in ``text``.

    Braces are balanced (escaped ``\\{``/``\\}`` do not count); an unclosed box (truncated output) is skipped.
    One linear pass; never raises. Returns None when there is no complete box.
    """
    try:
        return _extract_boxed(text)
    except Exception:  # untrusted input must never crash the caller
        return None


def _extract_boxed(text: str) -> str | None:
    best: tuple[int, int, int] | None = None  # (command start, content start, content end)
    stack: list[int] = []  # per open brace: start of the \boxed command it opens, or -1 for an ordinary brace
    box_brace = -1  # position of the "{" right after the latest \boxed command
    box_start = -1
    for m in _BOX_TOKENS.finditer(text):
        token = m.group()
        if token == "{":
            stack.append(box_start if m.start() == box_brace else -1)
        elif token == "}":
            if stack:
                start = stack.pop()
                if start >= 0 and (best is None or start > best[0]):
                    best = (start, text.index("{", start) + 1, m.start())
        elif len(token) > 2:  # \boxed or \fbox
            if text.startswith("{", m.end()):
                box_start, box_brace = m.start(), m.end()
            else:
                arg = _BARE_ARG.match(text, m.end())
                if arg and (best is None or m.start() > best[0]):
                    best = (m.start(), arg.start(), arg.end())
    if best is None:
        return None
    content = text[best[1] : best[2]]
    if text[best[1] - 1] != "{":  # bare form "\boxed 5." : drop trailing punctuation
        content = content.rstrip(".,;:")
    return content.strip()


def extract_answer(text: str) -> Extraction:
    """Final answer of a model output: last ``<Answer>`` block, else last ``\\boxed{}``, else last number.

    Inside an ``<Answer>`` block a ``\\boxed{}`` wins over the surrounding words. Linear time; never raises.
    """
    try:
        return _extract_answer(text)
    except Exception:  # untrusted input must never crash the caller
        return Extraction(None, None)


def get_extractor(name: str) -> Callable[[str], Extraction]:
    """The answer extractor named by `grading.extractor`: `default` (`extract_answer`) or `qwen`
    (`extract_qwen.extract_answer_qwen`, Qwen2.5-Math's evaluation harness)."""
    if name == "default":
        return extract_answer
    if name == "qwen":
        return extract_answer_qwen
    raise ValueError(f"unknown answer extractor {name!r}; use 'default' or 'qwen'")


def _extract_answer(text: str) -> Extraction:
    tagged = _answer_tag_content(text)
    if tagged is not None:
        boxed = extract_boxed(tagged)
        answer = boxed if boxed else tagged.strip()
        if answer:
            return Extraction(answer, "answer_tag")
    boxed = extract_boxed(text)
    if boxed:
        return Extraction(boxed, "boxed")
    number = _last(_LAST_NUMBER.finditer(text))
    if number is not None:
        return Extraction(number.group(), "last_number")
    return Extraction(None, None)


def _answer_tag_content(text: str) -> str | None:
    """Content of the last complete ``<Answer>...</Answer>`` block, or None."""
    close = _last(_ANSWER_CLOSE.finditer(text))
    if close is None:
        return None
    opening = _last(_ANSWER_OPEN.finditer(text, 0, close.start()))
    if opening is None:
        return None
    return text[opening.end() : close.start()]


def _last(matches: Iterator[re.Match[str]]) -> re.Match[str] | None:
    tail = deque(matches, maxlen=1)
    return tail[0] if tail else None


# --------------------------------------------------------------------------------------------------------------
# Fast path: decided in the calling process, no worker needed
# --------------------------------------------------------------------------------------------------------------

_LATEX_NOISE = re.compile(r"\\left|\\right|\\[!,;: ]|\\displaystyle|\s+|\$")
_PLAIN_NUMBER = re.compile(r"(-?(?:\d{1,3}(?:(?:,\d{3})+|(?: \d{3})+)|\d+)(?:\.\d+)?)(?:/(\d+))?")
_MAX_FAST_NUMBER = 40  # longer "numbers" go to a worker, where the timeout applies


def _normalize(answer: str) -> str:
    """Light normalisation for exact matching: spacing, ``$``, ``\\left``/``\\right``, ``\\dfrac``, final dot."""
    text = _LATEX_NOISE.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".")


def _plain_number(answer: str) -> tuple[Fraction, bool] | None:
    """``(value, is_integer_literal)`` for answers like ``1,234``, ``-0.5``, ``$18.``, ``50%``, ``3/4``."""
    text = answer.strip().replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    text = text.strip().rstrip(".").strip()
    if len(text) > _MAX_FAST_NUMBER:
        return None
    m = _PLAIN_NUMBER.fullmatch(text)
    if m is None:
        return None
    value = Fraction(m.group(1).replace(",", "").replace(" ", ""))
    if m.group(2) is not None:
        if int(m.group(2)) == 0:
            return None
        value /= int(m.group(2))
    return value, m.group(2) is None and "." not in m.group(1)


def _fast_verdict(pred: str, gold: str) -> GradeReason | None:
    """Verdict when obvious without Math-Verify ("correct", "wrong", "no_answer" for a blank), else None."""
    if not pred.strip():
        return "no_answer"
    norm_pred = _normalize(pred)
    if norm_pred and norm_pred == _normalize(gold):
        return "correct"
    p, g = _plain_number(pred), _plain_number(gold)
    if p is None or g is None:
        return None
    if p[0] == g[0]:
        return "correct"
    both_integers = p[1] and g[1] and "%" not in pred + gold
    return "wrong" if both_integers else None


# --------------------------------------------------------------------------------------------------------------
# Math-Verify, run inside worker processes only
# --------------------------------------------------------------------------------------------------------------

_PROSE = re.compile(r"(?<![\\A-Za-z{])[A-Za-z]{2,}\s+[A-Za-z]{2,}\b")  # two words outside \commands{...}
_MATH_DELIMITER = re.compile(r"(?<!\\)\$|\\\(|\\\[")


def _mv_candidates(answer: str) -> list[Any]:
    """Math-Verify parses of one answer: the first strategy that yields a SymPy object wins.

    A bare answer is wrapped in ``\\boxed{}`` (LaTeX); prose or text with math delimiters is searched with
    Math-Verify's LaTeX and plain-expression extraction. Returns string fallbacks when nothing parsed.
    """
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse
    from sympy import Basic, MatrixBase

    def boxed(text: str) -> list[Any]:
        config = [LatexExtractionConfig(boxed_match_priority=0)]
        return parse("\\boxed{" + text + "}", config, parsing_timeout=None)

    def plain(text: str) -> list[Any]:
        config = [LatexExtractionConfig(), ExprExtractionConfig()]
        return parse(text, config, parsing_timeout=None)

    strategies = [boxed, plain]
    if _MATH_DELIMITER.search(answer) or _PROSE.search(answer):
        strategies = [plain, boxed]
    fallback: list[Any] = []
    for strategy in strategies:
        parsed = strategy(answer)
        if any(isinstance(p, Basic | MatrixBase) for p in parsed):
            return parsed
        fallback = fallback or parsed
    if "**" in answer:  # Python-style power, e.g. "x**2+1"
        parsed = boxed(answer.replace("**", "^"))
        if any(isinstance(p, Basic | MatrixBase) for p in parsed):
            return parsed
    return [p for p in fallback if isinstance(p, str)]


def _verify_pair(pred: str, gold: str) -> GradeReason:
    """Decide one (prediction, gold) pair with Math-Verify: "correct", "wrong" or "unparsable"."""
    from math_verify import verify
    from sympy import Basic, MatrixBase

    pred_parsed = _mv_candidates(pred)
    if not pred_parsed:
        return "unparsable"
    if verify(_mv_candidates(gold), pred_parsed, timeout_seconds=None):
        return "correct"
    if not any(isinstance(p, Basic | MatrixBase) for p in pred_parsed):
        return "unparsable"
    return "wrong"


_READY = "ready"
_WORKER_MEMORY_LIMIT = 4 * 1024**3  # address space per worker; a runaway power fails with MemoryError instead


def _worker_main(conn: Connection) -> None:
    """Worker process loop: receive ``(pred, gold)``, send back a GradeReason; ``None`` stops it."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (_WORKER_MEMORY_LIMIT, _WORKER_MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    _verify_pair("\\frac{1}{2}", "0.5")  # import and warm up before reporting ready
    conn.send(_READY)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        try:
            reason = _verify_pair(*task)
        except Exception:  # RecursionError, MemoryError, sympy bugs: a verdict, not a crash
            reason = "unparsable"
        conn.send(reason)


class _Worker:
    """One verification process and the parent's end of its pipe."""

    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(child,), name="supercorrect-grader", daemon=True
        )
        self.process.start()
        child.close()

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the worker has imported Math-Verify; raise RuntimeError if it cannot start."""
        try:
            if self.conn.poll(timeout_s) and self.conn.recv() == _READY:
                return
        except (EOFError, OSError):
            pass
        self.kill()
        raise RuntimeError("the grading worker process failed to start (is math-verify installed?)")

    def request_stop(self) -> None:
        """Ask the worker to exit after its current task (see ``stop``)."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass

    def stop(self, grace_s: float = 0.5) -> None:
        """Ask the worker to exit; kill it if it has not within ``grace_s``."""
        self.request_stop()
        self.process.join(grace_s)
        self.kill()

    def kill(self) -> None:
        """Kill the process now and release its resources."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


_STARTUP_TIMEOUT_S = 120.0


@dataclass
class Grade:
    """Verdict for one model output: ``correct`` is True only when ``reason == "correct"``."""

    correct: bool
    reason: GradeReason
    predicted: str | None
    source: str | None


class Grader:
    """Grades model outputs against gold answers; a context manager that owns a few worker processes.

    Workers start lazily (only when a case is not decided by the fast path) and are thread-safe to share.
    A verification that runs past ``timeout_s`` has its worker killed and replaced, and is graded "timeout".
    """

    def __init__(self, workers: int = 2, timeout_s: float = 5.0, extractor: ExtractorName = "default") -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        self.workers = workers
        self.timeout_s = timeout_s
        self.extract = get_extractor(extractor)
        self._ctx = multiprocessing.get_context("spawn")
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._live = 0
        self._closed = False

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def grade(self, text: str, gold: str) -> Grade:
        """Extract the final answer from a model output and compare it with ``gold``."""
        extraction = self.extract(text)
        if extraction.answer is None:
            return Grade(False, "no_answer", None, None)
        return self._compare(extraction.answer, gold, extraction.source)

    def grade_many(self, items: list[tuple[str, str]], desc: str | None = None) -> list[Grade]:
        """Grade ``(model_text, gold_answer)`` pairs in order, using all workers; tqdm bar when ``desc``."""
        extractions = [self.extract(text) for text, _ in items]
        return self._compare_many([(e, gold) for e, (_, gold) in zip(extractions, items, strict=True)], desc)

    def close(self) -> None:
        """Stop all worker processes; later grading calls raise RuntimeError."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._cond.notify_all()
        for worker in idle:  # all at once, then wait: interpreter shutdown takes a moment per worker
            worker.request_stop()
        for worker in idle:
            worker.stop()

    def _compare_many(self, pairs: list[tuple[Extraction, str]], desc: str | None = None) -> list[Grade]:
        """Grade already-extracted answers against gold answers, in order, over all workers."""
        results: list[Grade | None] = [None] * len(pairs)
        slow: list[int] = []
        for i, (extraction, gold) in enumerate(pairs):
            if extraction.answer is None:
                results[i] = Grade(False, "no_answer", None, None)
            elif (verdict := _fast_verdict(extraction.answer, gold)) is not None:
                results[i] = Grade(verdict == "correct", verdict, extraction.answer, extraction.source)
            else:
                slow.append(i)

        bar = None
        if desc is not None:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pairs), desc=desc, initial=len(pairs) - len(slow))
        try:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                futures = {}
                for i in slow:
                    extraction, gold = pairs[i]
                    future = pool.submit(self._compare, extraction.answer or "", gold, extraction.source)
                    futures[future] = i
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return [r for r in results if r is not None]

    def _compare(self, pred: str, gold: str, source: str | None, timeout_s: float | None = None) -> Grade:
        verdict = _fast_verdict(pred, gold)
        if verdict is None:
            verdict = self._verify_in_worker(pred, gold, self.timeout_s if timeout_s is None else timeout_s)
        return Grade(verdict == "correct", verdict, pred, source)

    def _verify_in_worker(self, pred: str, gold: str, timeout_s: float) -> GradeReason:
        worker = self._acquire()
        healthy = False
        try:
            worker.conn.send((pred, gold))
            if worker.conn.poll(timeout_s):
                reason: GradeReason = worker.conn.recv()
                healthy = True
            else:
                reason = "timeout"
        except (EOFError, OSError):  # the worker died on this input (e.g. a hard crash in a C extension)
            log.warning("grading worker died while verifying an answer; graded as unparsable")
            reason = "unparsable"
        finally:
            self._release(worker, healthy)
        return reason

    def _acquire(self) -> _Worker:
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("Grader is closed")
                if self._idle:
                    return self._idle.pop()
                if self._live < self.workers:
                    self._live += 1
                    break
                self._cond.wait()
        try:  # start a new worker outside the lock: other threads keep using the idle ones
            worker = _Worker(self._ctx)
            worker.wait_ready(_STARTUP_TIMEOUT_S)
        except BaseException:
            with self._cond:
                self._live -= 1
                self._cond.notify()
            raise
        return worker

    def _release(self, worker: _Worker, healthy: bool) -> None:
        with self._cond:
            keep = healthy and not self._closed
            if keep:
                self._idle.append(worker)
            else:
                self._live -= 1
            self._cond.notify()
        if not keep and healthy:
            worker.stop()
        elif not keep:
            worker.kill()


_shared_lock = threading.Lock()
_shared_grader: Grader | None = None


def answers_match(pred: str, gold: str, timeout_s: float = 5.0) -> Grade:
    """Compare a bare predicted answer with a gold answer (no extraction); shares one lazily started worker."""
    global _shared_grader
    verdict = _fast_verdict(pred, gold)
    if verdict is not None:
        return Grade(verdict == "correct", verdict, pred, None)
    with _shared_lock:
        if _shared_grader is None:
            _shared_grader = Grader(workers=1, timeout_s=timeout_s)
            atexit.register(_shared_grader.close)
        grader = _shared_grader
    return grader._compare(pred, gold, None, timeout_s)


# --------------------------------------------------------------------------------------------------------------
# Sanity check of the grader on reference solutions
# --------------------------------------------------------------------------------------------------------------

_GSM8K_FINAL = re.compile(r"^####\s*(.+?)\s*$", re.MULTILINE)
_CALC_ANNOTATION = re.compile(r"<<[^<>]*=([^<>=]*)>>")
_CALC_ANNOTATION_FULL = re.compile(r"<<[^<>]*>>")


def check_reference_answers(
    dataset: Literal["gsm8k", "math500"],
    path: str | Path,
    grader: Grader | None = None,
) -> dict[str, Any]:
    """Extract each row's answer from its reference solution and verify it against the dataset's answer.

    GSM8K: the last number of the worked text before ``####`` (or the value of its last ``<<expr=value>>``,
    or the number right after the last "=" of its final line) against the number after ``####``. MATH-500: ``extract_boxed(solution)`` against ``answer``.
    Returns ``{"rows", "verified", "rate", "failures": [{"id", "extracted", "gold"}, ...]}``.
    """
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    own_grader = grader is None
    active = grader if grader is not None else Grader()
    try:
        checks = [_reference_candidates(dataset, i, row) for i, row in enumerate(rows)]
        pairs = [(Extraction(cand, None), gold) for _, cands, gold in checks for cand in cands]
        verdicts = iter(active._compare_many(pairs))
        failures = []
        for row_id, cands, gold in checks:
            ok = [next(verdicts).correct for _ in cands]
            if not any(ok):
                failures.append({"id": row_id, "extracted": cands[0] if cands else None, "gold": gold})
    finally:
        if own_grader:
            active.close()
    verified = len(rows) - len(failures)
    return {
        "rows": len(rows),
        "verified": verified,
        "rate": verified / len(rows) if rows else 0.0,
        "failures": failures,
    }


def _reference_candidates(dataset: str, index: int, row: dict[str, Any]) -> tuple[Any, list[str], str]:
    """``(row id, answers extracted from the reference solution, gold answer)`` for one dataset row."""
    if dataset == "gsm8k":
        final = _last(_GSM8K_FINAL.finditer(row["answer"]))
        gold = final.group(1) if final else ""
        worked = row["answer"][: final.start()] if final else row["answer"]
        candidates = []
        extraction = extract_answer(worked)
        if extraction.answer is not None:
            candidates.append(extraction.answer)
        annotation = _last(_CALC_ANNOTATION.finditer(worked))
        if annotation is not None and annotation.group(1).strip():
            candidates.append(annotation.group(1).strip())
        # "... = $6 for 2 tubs and 4 packets": the value right after the last "=" of the final line
        final_line = _CALC_ANNOTATION_FULL.sub("", worked.strip().rsplit("\n", 1)[-1])
        if "=" in final_line:
            after_equals = _LAST_NUMBER.search(final_line.rsplit("=", 1)[1])
            if after_equals is not None:
                candidates.append(after_equals.group())
        return index, candidates, gold
    if dataset == "math500":
        boxed = extract_boxed(row["solution"])
        return row.get("unique_id", index), [boxed] if boxed else [], row["answer"]
    raise ValueError(f"unknown dataset {dataset!r}; expected 'gsm8k' or 'math500'")
