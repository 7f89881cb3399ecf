r"""Arithmetic in model text, checked by a small parser: never eval/exec.

`evaluate` is a recursive-descent parser over exact fractions with hard limits (length, nesting, size of numbers,
exponents), so untrusted text cannot hang it or build huge integers. `find_equations` finds claims like
"3 * 4 = 12", "$3 x 4 = $12", chains "a = b = c" and GSM8K's "<<48/2=24>>" in free text; it is a heuristic that
prefers saying "not checkable" (value None) over a false "wrong".

LaTeX is masked before equations are looked for (`_mask`, same length so offsets hold): `\text{...}` and its kin
are words, not arithmetic (`\[ \text{Total cost} = \$12 \]` states a value, it computes nothing), `\boxed{...}`
keeps only its content, display delimiters are spaces. A side that touches a variable (`1.5x`, `x^{14}`, `2x+3`) is
algebra, not arithmetic: its value is None, so the equation is skipped rather than called wrong.

Percent signs are ignored by default ("50%" reads as 50), so a caller decides what a percent means; `evaluate(...,
percent=True)` reads "50%" as 1/2, and `find_equations` accepts an equation under either reading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

MAX_LEN = 1000  # characters in one expression
MAX_DEPTH = 100  # nesting of parentheses and exponents
MAX_EXP = 64  # |exponent|
LIMIT = 10**100  # numerators and denominators, of literals and of every intermediate result


class ArithError(ValueError):
    """The text is not an arithmetic expression this module accepts (or exceeds a limit)."""


# A number literal: digits with optional thousands commas and decimals, or ".5". No nested quantifiers that
# can overlap, so matching is linear.
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?|\.\d+"
_NUMBER = re.compile(_NUM)
_PLAIN = re.compile(
    rf"(?P<s1>[-+−])?\s?\$?\s?(?P<s2>[-+−])?\s?(?P<a>{_NUM})(?:\s?/\s?(?P<b>{_NUM}))?\s?%?\.?"
)
_DECIMALS = re.compile(r"[-+−]?\s?\$?\s?(?:\d+(?:,\d{3})*)?\.(\d+)")  # a plain decimal literal, for rounding
_CMD = re.compile(r"\\([a-zA-Z]+|.)", re.DOTALL)  # a LaTeX command
_RUN_CMD = re.compile(r"\\(?:times|cdot|div|dfrac|tfrac|frac|left|right|[,;! $%])")

_OPS = {"+": "+", "-": "-", "−": "-", "–": "-", "*": "*", "×": "*", "·": "*", "⋅": "*", "∗": "*", "x": "*",
        "X": "*", "/": "/", "÷": "/", "∕": "/", "^": "^"}  # fmt: skip
_OPEN = {"(": ")", "[": "]", "{": "}"}
_LATEX = {"times": "*", "cdot": "*", "div": "/", "frac": "frac", "dfrac": "frac", "tfrac": "frac"}
_LATEX_SKIP = {"left", "right", ",", ";", "!", " ", ":", "(", ")", "[", "]"}  # spacing and math delimiters


def _literal(s: str) -> Fraction:
    digits = s.replace(",", "")
    if len(digits) > 120:
        raise ArithError("number too long")
    return _check(Fraction(digits))


def _check(v: Fraction) -> Fraction:
    if abs(v.numerator) > LIMIT or v.denominator > LIMIT:
        raise ArithError("number too large")
    return v


def _tokenize(expr: str, percent: bool) -> list[tuple[str, object]]:
    """Tokens (kind, value): ("num", Fraction), ("(", closer), (")", char), ("+" | "-" | "*" | "/" | "^" |
    "frac" | "%", None). '$' and, unless `percent`, '%' are dropped."""
    toks: list[tuple[str, object]] = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c.isspace() or c == "$" or (c == "%" and not percent):
            i += 1
        elif c.isdecimal() or c == ".":
            m = _NUMBER.match(expr, i)
            if m is None:
                raise ArithError(f"stray '.' at {i}")
            toks.append(("num", _literal(m.group(0))))
            i = m.end()
        elif expr.startswith("**", i):
            toks.append(("^", None))
            i += 2
        elif c in _OPS:
            toks.append((_OPS[c], None))
            i += 1
        elif c in _OPEN:
            toks.append(("(", _OPEN[c]))
            i += 1
        elif c in ")]}":
            toks.append((")", c))
            i += 1
        elif c == "%":
            toks.append(("%", None))
            i += 1
        elif c == "\\":
            m = _CMD.match(expr, i)
            cmd = m.group(1) if m else ""
            if cmd in _LATEX:
                toks.append((_LATEX[cmd], None))
            elif cmd in ("$", "%"):
                if cmd == "%" and percent:
                    toks.append(("%", None))
            elif cmd not in _LATEX_SKIP:
                raise ArithError(f"unsupported command \\{cmd}")
            i = m.end() if m else i + 1
        else:
            raise ArithError(f"unexpected {c!r} at {i}")
    return toks


class _Parser:
    """expr := term (('+'|'-') term)*;  term := unary (('*'|'/') unary)*;  unary := ('+'|'-')* power;
    power := postfix ('^' unary)?  (right-assoc, so -2^2 = -4 and 2^3^2 = 2^9);  postfix := atom '%'*;
    atom := number | '(' expr ')' | frac '{' expr '}' '{' expr '}'."""

    def __init__(self, toks: list[tuple[str, object]]) -> None:
        self.toks = toks
        self.i = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.toks[self.i][0] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, object]:
        if self.i >= len(self.toks):
            raise ArithError("unexpected end of expression")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ArithError(f"nesting deeper than {MAX_DEPTH}")

    def parse(self) -> Fraction:
        if not self.toks:
            raise ArithError("empty expression")
        v = self.expr()
        if self.i != len(self.toks):
            raise ArithError(f"unexpected {self.toks[self.i][0]!r} after a complete expression")
        return v

    def expr(self) -> Fraction:
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()[0]
            r = self.term()
            v = _check(v + r if op == "+" else v - r)
        return v

    def term(self) -> Fraction:
        v = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()[0]
            r = self.unary()
            if op == "/" and r == 0:
                raise ArithError("division by zero")
            v = _check(v * r if op == "*" else v / r)
        return v

    def unary(self) -> Fraction:
        sign = 1
        while self.peek() in ("+", "-"):
            if self.take()[0] == "-":
                sign = -sign
        v = self.power()
        return -v if sign < 0 else v

    def power(self) -> Fraction:
        base = self.postfix()
        if self.peek() != "^":
            return base
        self.take()
        self.enter()
        exp = self.unary()
        self.depth -= 1
        if exp.denominator != 1 or abs(exp) > MAX_EXP:
            raise ArithError(f"exponent must be an integer with |exponent| <= {MAX_EXP}")
        if base == 0 and exp < 0:
            raise ArithError("division by zero")
        return _check(base ** int(exp))

    def postfix(self) -> Fraction:
        v = self.atom()
        while self.peek() == "%":
            self.take()
            v = v / 100
        return v

    def atom(self) -> Fraction:
        kind, val = self.take()
        if kind == "num":
            assert isinstance(val, Fraction)
            return val
        if kind == "(":
            return self.group(val)
        if kind == "frac":
            num = self.group(self.take_open())
            den = self.group(self.take_open())
            if den == 0:
                raise ArithError("division by zero")
            return _check(num / den)
        raise ArithError(f"unexpected {kind!r}")

    def take_open(self) -> object:
        kind, val = self.take()
        if kind != "(":
            raise ArithError("\\frac needs two braced groups")
        return val

    def group(self, closer: object) -> Fraction:
        self.enter()
        v = self.expr()
        kind, val = self.take()
        if kind != ")" or val != closer:
            raise ArithError(f"expected {closer!r}")
        self.depth -= 1
        return v


def evaluate(expr: str, percent: bool = False) -> Fraction:
    """Exact value of an arithmetic expression: numbers (commas, decimals, '$'), + - * / × ÷ · x, ^ and **
    (integer exponent), parentheses, unary minus, LaTeX \\times \\cdot \\div \\frac{}{}. '%' is ignored unless
    `percent`, then it divides by 100. Raises ArithError on anything else or when a limit is exceeded."""
    if not isinstance(expr, str):
        raise ArithError(f"not a string: {type(expr).__name__}")
    if len(expr) > MAX_LEN:
        raise ArithError(f"expression longer than {MAX_LEN} characters")
    try:
        return _Parser(_tokenize(expr, percent)).parse()
    except ArithError:
        raise
    except (
        ZeroDivisionError,
        ValueError,
        OverflowError,
        RecursionError,
    ) as e:  # defensive: should not happen
        raise ArithError(str(e)) from e


def parse_number(s: str) -> Fraction | None:
    """A single number as written: "12", "-3", "1,234", "3.50", "$12", ".5", "1/2", "12." (end of a sentence).
    "50%" gives 50: the caller decides what a percent means. None if `s` is not one number."""
    if not isinstance(s, str) or len(s) > 300:
        return None
    m = _PLAIN.fullmatch(s.strip())
    if m is None or (m["s1"] and m["s2"]):
        return None
    try:
        v = _literal(m["a"])
        if m["b"] is not None:
            den = _literal(m["b"])
            if den == 0:
                return None
            v = _check(v / den)
    except ArithError:
        return None
    return -v if (m["s1"] or m["s2"]) in ("-", "−") else v


def numbers_in(text: str) -> list[Fraction]:
    """Every number in `text`, in order. A '-' is a sign only where it cannot be a minus ("3-2" gives 3, 2);
    "1/2" gives 1 and 2; numbers beyond the size limit are skipped."""
    if not isinstance(text, str):
        return []
    out = []
    for m in _NUMBER.finditer(text):
        try:
            v = _literal(m.group(0))
        except ArithError:
            continue
        i = m.start()
        if i > 0 and text[i - 1] in "-−" and (i < 2 or not (text[i - 2].isalnum() or text[i - 2] in ")]}")):
            v = -v
        out.append(v)
    return out


def format_number(x: Fraction | int) -> str:
    """12 -> "12", 5/2 -> "2.5", 1/3 -> "1/3": decimals when they terminate within 6 places, else a/b."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    scaled = x * 10**6
    if scaled.denominator != 1:
        return f"{x.numerator}/{x.denominator}"
    whole, frac = divmod(abs(scaled.numerator), 10**6)
    return f"{'-' if x < 0 else ''}{whole}.{frac:06d}".rstrip("0")


# ---------------------------------------------------------------------------------------------------------------
# equations in free text


@dataclass
class Equation:
    """One claimed equality `lhs = rhs` in a text; values are None where a side is not checkable arithmetic."""

    lhs: str
    rhs: str
    lhs_value: Fraction | None
    rhs_value: Fraction | None
    start: int  # offset of lhs in the text
    end: int  # offset just after rhs
    algebra: bool = False  # a side touches a variable ("1.5x", "x^{14}"): not arithmetic, never checked
    approx: bool = False  # written with ≈ (or \approx): rounding to an integer or within 1% is fine

    @property
    def ok(self) -> bool | None:
        """None when a side is not evaluable; else whether the sides are equal, allowing a side written as a
        decimal literal to be rounded to the places written (10/3 = 3.33 is ok, 10/3 = 3.3 too, 10/3 = 3 not)."""
        if self.lhs_value is None or self.rhs_value is None:
            return None
        if self.approx and _close(self.lhs_value, self.rhs_value):
            return True
        return _equal(self.lhs, self.lhs_value, self.rhs, self.rhs_value)


_ROUNDED = re.compile(r"(?<![\d.])(\d+)\.(\d{2,4})(?![\d.])")


def _simplest(v: Fraction, places: int) -> Fraction | None:
    """The fraction with the smallest denominator up to 12 that rounds to `v` at `places` decimals, if it is not
    `v` itself (3.33 -> 10/3, 0.67 -> 2/3, 0.83 -> 5/6; 0.25 -> None, it is exact)."""
    half = Fraction(1, 2 * 10**places)
    for q in range(1, 13):
        p = round(v * q)
        if abs(Fraction(p, q) - v) <= half:
            return None if Fraction(p, q) == v else Fraction(p, q)
    return None


def _unrounded(lhs: str) -> str | None:
    """`lhs` with its rounded decimals (a third, a sixth written as 3.33, 0.67) replaced by the fractions they
    round, or None when it has none: "3.33 × 60 = 200" is a correct step that carries the exact value."""
    found = False

    def sub(m: re.Match[str]) -> str:
        nonlocal found
        exact = _simplest(Fraction(f"{m.group(1)}.{m.group(2)}"), len(m.group(2)))
        if exact is None:
            return m.group(0)
        found = True
        return f"({exact.numerator}/{exact.denominator})"

    out = _ROUNDED.sub(sub, lhs[:MAX_LEN], count=4)
    return out if found else None


def _close(a: Fraction, b: Fraction) -> bool:
    """Approximately equal: b is a rounded to an integer, or within 1% of it ("33.33... ≈ 33", "≈ 0.67")."""
    return (b.denominator == 1 and abs(a - b) <= Fraction(1, 2)) or abs(a - b) <= abs(a) / 100


def _equal(lhs: str, lv: Fraction, rhs: str, rv: Fraction) -> bool:
    if lv == rv:
        return True
    for side in (rhs, lhs):
        m = _DECIMALS.fullmatch(side.strip())
        if m is not None and abs(lv - rv) <= Fraction(1, 2 * 10 ** len(m.group(1))):
            return True
    return False


def _is_times(text: str, i: int) -> bool:
    """Is the letter x at `i` a multiplication sign ("3 x 4", "3x4", "$3 x $4"), not a variable or a word?"""
    n = len(text)
    if (i > 0 and text[i - 1].isalpha()) or (i + 1 < n and text[i + 1].isalpha()):
        return False
    j = i - 1
    while j >= 0 and i - j <= 4 and text[j] in " \t":
        j -= 1
    k = i + 1
    while k < n and k - i <= 4 and text[k] in " \t":
        k += 1
    left_ok = j >= 0 and (text[j].isdigit() or text[j] in ")]}%")
    right_ok = k < n and (text[k].isdigit() or text[k] in "([{$.")
    return left_ok and right_ok


_RUN_CHARS = frozenset("0123456789+-*/^()[]{}$%=≈ \t×÷·⋅∗−–")


def _run_len(text: str, i: int) -> int:
    """Length of the arithmetic token at `i` (0 if the character is not arithmetic)."""
    c = text[i]
    if c in _RUN_CHARS:
        return 1
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if c == "." and nxt.isdigit():
        return 1
    if c == "," and nxt.isdigit() and i > 0 and text[i - 1].isdigit():
        return 1
    if c in "xX" and _is_times(text, i):
        return 1
    if c == "\\":
        m = _RUN_CMD.match(text, i)
        return m.end() - i if m else 0
    return 0


def _runs(text: str) -> list[tuple[int, int]]:
    """Maximal stretches of arithmetic characters that contain '=' or '≈'. A stretch continued on the next line
    ("9 \\times 60" then a line "= 540", or "3 + 4 =" then "7") is one stretch: only line breaks and spaces
    between, and '=' or '≈' at the seam."""
    found, start, i, n = [], -1, 0, len(text)
    while i < n:
        k = _run_len(text, i)
        if k:
            if start < 0:
                start = i
            i += k
        else:
            if start >= 0:
                found.append((start, i))
            start = -1
            i += 1
    if start >= 0:
        found.append((start, n))
    merged: list[tuple[int, int]] = []
    for a, b in found:
        if merged:
            pa, pb = merged[-1]
            gap, head, tail = text[pb:a], text[a:b].lstrip(), text[pa:pb].rstrip()
            if "\n" in gap and not gap.strip() and (head[:1] in ("=", "≈") or tail[-1:] in ("=", "≈")):
                merged[-1] = (pa, b)
                continue
        merged.append((a, b))
    return [(a, b) for a, b in merged if any(c in "=≈" for c in text[a:b])]


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    """Shrink [a, b) past spaces, markdown '*' and parentheses left unbalanced by the split."""
    while a < b and (text[a].isspace() or text[a] == "*"):
        a += 1
    while b > a and (text[b - 1].isspace() or text[b - 1] == "*"):
        b -= 1
    if b - a > MAX_LEN:
        return a, b
    depth = sum(1 if c in "([" else -1 if c in ")]" else 0 for c in text[a:b])
    while depth > 0 and a < b and text[a] in "([":
        a += 1
        depth -= 1
        while a < b and text[a].isspace():
            a += 1
    while depth < 0 and b > a and text[b - 1] in ")]":
        b -= 1
        depth += 1
        while b > a and text[b - 1].isspace():
            b -= 1
    return a, b


def _plain(s: str) -> bool:
    """A single number with at most a sign, '$' and '%': one side of "50% of 20 = 10" is no arithmetic claim."""
    return _PLAIN.fullmatch(s) is not None and "/" not in s


def _values(s: str) -> list[Fraction | None]:
    """The side's value with '%' ignored and, if it has one, with '%' as /100."""
    out: list[Fraction | None] = []
    for percent in (False, True) if "%" in s else (False,):
        try:
            out.append(evaluate(s, percent=percent))
        except ArithError:
            out.append(None)
    return out


_TEXT_CMD = re.compile(
    r"\\(?:text|textbf|textit|textrm|texttt|mathrm|mathbf|mathit|mbox|operatorname|emph|begin|end)\s{0,3}\{[^{}]{0,300}\}"
)
_SPACE_CMD = re.compile(r"\\(?:\[|\]|\(|\)|quad|qquad|displaystyle|;|,|!|:)")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s{0,3}\{")
_APPROX = re.compile(r"\\approx(?![a-zA-Z])")


def _mask(text: str) -> str:
    """`text` with LaTeX that is not arithmetic blanked, same length: `\\text{...}` and its kin become spaces
    (words, not numbers), `\\boxed{` and its closing brace become spaces (the content stays), `\\[ \\]
    \\( \\)`, spacing commands and alignment '&' become spaces, `\\approx` becomes '≈'. Linear: braces are matched in one
    pass."""
    if "\\" not in text:
        return text
    chars = list(text)

    def blank(a: int, b: int) -> None:
        chars[a:b] = " " * (b - a)

    for m in _TEXT_CMD.finditer(text):
        blank(m.start(), m.end())
    for m in _SPACE_CMD.finditer(text):
        blank(m.start(), m.end())
    for j, c in enumerate(text):  # alignment points of align/array environments ("3 \\times 3 &= 9")
        if c == "&":
            chars[j] = " "
    for m in _APPROX.finditer(text):
        blank(m.start(), m.end())
        chars[m.start()] = "≈"
    boxes = list(_BOXED.finditer(text))
    if boxes:
        close: dict[int, int] = {}  # position of "{" -> its matching "}", one pass with a stack
        stack: list[int] = []
        for j, c in enumerate(text):
            if c == "{":
                stack.append(j)
            elif c == "}" and stack:
                close[stack.pop()] = j
        for m in boxes:
            j = close.get(m.end() - 1)
            if j is not None:
                blank(m.start(), m.end())
                chars[j] = " "
    return "".join(chars)


_BINARY_START = frozenset("^*/×÷·⋅∗")


def _fragment(text: str, a: int) -> bool:
    """Does the side starting at `a` continue non-arithmetic text before it? A binary operator first ("x^{14}"),
    a minus or plus between words and numbers ("3 apples - 4 = ..."), or one attached to a letter ("2x+3 = 11");
    not a sign after a word ("is -3 / 2 = -1.5")."""
    c = text[a]
    if c in _BINARY_START:
        return True
    if c not in "+-−–" or a + 1 >= len(text):
        return False
    j = a - 1
    while j >= 0 and a - j <= 4 and text[j] in " \t":
        j -= 1
    if j < 0 or not (text[j].isalnum() or text[j] in ")}]"):
        return False
    return text[a + 1].isspace() or j == a - 1


def _attached(text: str, b: int) -> bool:
    """Does a single letter or a LaTeX command touch the end of the side ending at `b` ("1.5x", "2\\sqrt{3}",
    "6y")? Then the side is a term of algebra, not a number. A word ("6kg") is a unit."""
    if not (0 < b < len(text)) or text[b - 1].isspace():
        return False
    if text[b] == "\\":
        return True
    return text[b].isalpha() and not (b + 1 < len(text) and text[b + 1].isalpha())  # "6kg" is a unit


def find_equations(text: str) -> list[Equation]:
    """Arithmetic equalities claimed in `text`, in order: "3 * 4 = 12", "12 + 5 = 17 apples", "$3 x 4 = $12",
    "<<48/2=24>>", LaTeX "3 \\times 4 = 12"; a chain "a = b = c" gives (a, b) and (b, c). Sides with letters
    ("x = 5", "10 - 4 = 1.5x", "x^{14} = -2^{13}") are not evaluated (value None), so algebra is skipped; a pair
    of two plain numbers is skipped too; LaTeX text (`\\text{Total} = \\$12`) is masked first (`_mask`)."""
    if not isinstance(text, str):
        return []
    raw, text = text, _mask(text)
    out = []
    for start, end in _runs(text):
        cuts = [i for i in range(start, end) if text[i] in "=≈"]
        bounds = list(zip([start] + [c + 1 for c in cuts], cuts + [end], strict=True))
        sides = [_trim(text, a, b) for a, b in bounds]
        values: dict[int, list[Fraction | None]] = {}  # a middle side of a chain is evaluated once
        for n, ((la, lb), (ra, rb)) in enumerate(zip(sides, sides[1:], strict=False)):
            if la >= lb or ra >= rb:
                continue
            lhs, rhs = text[la:lb], text[ra:rb]
            if _plain(lhs) and _plain(rhs):
                continue
            lalg, ralg = _fragment(text, la), _attached(text, rb)
            lvals = [None] if lalg else values.get(la) or _values(lhs)
            rvals = values[ra] = [None] if ralg else _values(rhs)
            pick = (lvals[0], rvals[0])
            if not lalg and (exact := _unrounded(lhs)) is not None:  # 3.33 × 60 = 200: 10/3 × 60
                lvals = lvals + [v for v in _values(exact) if v is not None]
            for lv in lvals:
                for rv in rvals:
                    if lv is not None and rv is not None and _equal(lhs, lv, rhs, rv):
                        pick = (lv, rv)
            algebra = ralg or (lalg and text[la] in _BINARY_START) or (lalg and la > 0 and text[la - 1].isalpha())
            out.append(Equation(raw[la:lb], raw[ra:rb], pick[0], pick[1], la, rb, algebra, text[cuts[n]] == "≈"))
    return out
