"""`report/report.html`: the run report as one self-contained page, with a browser of the stage-2 data.

Why a second format: report.md is for reading the numbers; what a user of the method wants next is to *look* at
what the teacher blamed and how it corrected it, and to share that page. So the page is one file that opens from
disk or an e-mail attachment with no network: inline CSS and JS, plots as data URIs, no external asset.

What it holds:
- report.md itself, converted (the subset our report writes: headings, paragraphs, bullet lists, pipe tables,
  code fences, images), so the two formats never disagree and whatever other stages add to report.md shows here;
- one card per located wrong solution of stage `correct`: the problem, the student's steps with the blamed step k
  marked, the teacher's <Cause>/<Correction> beside the student's own analysis of step k, and two word-level diffs
  (difflib, rendered as <del>/<ins>): the student's step k -> the teacher's correction, and the student's own
  correction -> the teacher's;
- filters by k, by the locator's reason (a row's `reason` field when the correct stage writes one), by whether the
  Cross-DPO model later got the problem right (its eval stage's greedy result for the same problem id, when that
  problem was evaluated), and by whether a preference pair was built. The filter state lives in the URL hash
  (`report.html#k=2&later=wrong`), so a filtered view can be linked to and tested in a headless browser.

All model and teacher text is untrusted: every piece of it goes through `html.escape`; the data the script needs are
only the filter attributes on each card (escaped too). The script never builds HTML from data.
"""

from __future__ import annotations

import base64
import difflib
import html
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from . import xmlformat
from .io import atomic_write_text, read_json, read_jsonl

MAX_ITEMS = 2000  # cards in the browser; a bigger run shows the first ones and says how many there are

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def esc(text: object) -> str:
    return html.escape("" if text is None else str(text), quote=True)


# ---------------------------------------------------------------------------------------------------- word diff


def word_diff(old: str, new: str) -> str:
    """HTML of a word-level diff from `old` to `new`: removed words in <del>, added ones in <ins>, all escaped."""
    a, b = _TOKEN.findall(old or ""), _TOKEN.findall(new or "")
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(esc("".join(a[i1:i2])))
            continue
        if i2 > i1:
            out.append(f"<del>{esc(''.join(a[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{esc(''.join(b[j1:j2]))}</ins>")
    return "".join(out)


# --------------------------------------------------------------------------------------- markdown subset -> HTML

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*]+)\*")


def _inline(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(esc(text[pos : m.start()]))
        if m.group(1) is not None:
            out.append(f"<code>{esc(m.group(1))}</code>")
        elif m.group(2) is not None:
            out.append(f"<strong>{esc(m.group(2))}</strong>")
        else:
            out.append(f"<em>{esc(m.group(3))}</em>")
        pos = m.end()
    out.append(esc(text[pos:]))
    return "".join(out)


def _image(alt: str, src: str, base: Path) -> str:
    """An image of the report folder as a data URI; anything else (a URL, a path outside) is shown as text."""
    path = base / src
    if "/" in src or "\\" in src or not src.lower().endswith(".png") or not path.is_file():
        return f"<p>[image not embedded: {esc(src)}]</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}"><figcaption>{esc(alt)}</figcaption></figure>'


def markdown_to_html(md: str, base: Path) -> str:
    """The Markdown our report writes, as HTML; unknown constructs fall back to escaped paragraphs."""
    lines = md.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append(f"<pre>{esc(chr(10).join(lines[i + 1 : j]))}</pre>")
            i = j + 1
            continue
        m = re.fullmatch(r"(#{1,6})\s+(.*)", line)
        if m:
            level = min(len(m.group(1)) + 1, 6)  # the page's <h1> is its title
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
            continue
        m = re.fullmatch(r"\s*!\[([^\]]*)\]\(([^)]+)\)\s*", line)
        if m:
            out.append(_image(m.group(1), m.group(2).strip(), base))
            i += 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            trs = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            continue
        if re.match(r"\s*[-*] ", line):
            items = []
            while i < len(lines) and re.match(r"\s*[-*] ", lines[i]):
                items.append("<li>" + _inline(re.sub(r"^\s*[-*] ", "", lines[i])) + "</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        if line.strip():
            para = [line]
            i += 1
            while i < len(lines) and lines[i].strip() and not re.match(r"(#|\||```|\s*[-*] |\s*!\[)", lines[i]):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            continue
        i += 1
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- stage-2 browser data


def later_results(run_dir: Path, model: str = "cross-dpo") -> dict[str, bool]:
    """{problem id: greedy answer correct} from the model's eval stage, over all its evaluated sets."""
    out: dict[str, bool] = {}
    for path in sorted((run_dir / f"eval-{model}").glob("*/samples.jsonl")):
        for r in read_jsonl(path):
            if r.get("greedy") and isinstance(r.get("id"), str):
                out[r["id"]] = bool(r.get("correct"))
    return out


def _step_parts(block: str | None) -> tuple[str, str]:
    """(cause, correction) of one step block; a block without those tags is all 'correction' text."""
    if not block:
        return "", ""
    parsed = xmlformat.parse(block)
    if parsed.steps:
        s = parsed.steps[0]
        if s.cause or s.correction:
            return (s.cause or "").strip(), (s.correction or "").strip()
        body = s.body if isinstance(s.body, str) else ""
        return "", (s.evaluate or body or "").strip()
    return "", re.sub(r"</?Step\d+>", "", block).strip()


def browser_items(run_dir: Path, questions: Mapping[str, str] | None = None) -> list[dict]:
    """One dict per located wrong solution of stage `correct`, joined with pairs and the Cross-DPO eval."""
    path = run_dir / "correct" / "corrections.jsonl"
    if not path.exists():
        return []
    pair_keys = set()
    if (run_dir / "pairs" / "pairs.jsonl").exists():
        # a pair's `key` is its correction row's (ids carry a variant suffix with pairs.context/chosen options)
        pair_keys = {p.get("key", p.get("id")) for p in read_jsonl(run_dir / "pairs" / "pairs.jsonl")}
    later = later_results(run_dir)
    items = []
    for r in read_jsonl(path):
        k = r.get("k")
        if not isinstance(k, int):
            continue
        steps = [s if isinstance(s, str) else "" for s in (r.get("student_steps") or [])]
        trace = xmlformat.parse(r.get("teacher_trace") or "")
        t_step = trace.steps[k - 1] if 0 < k <= len(trace.steps) else None
        own_cause, own_corr = _step_parts(r.get("student_step_k"))
        pid = r.get("id")
        items.append(
            {
                "key": r.get("key"),
                "id": pid,
                "question": (questions or {}).get(pid),
                "steps": steps,
                "k": k,
                "reason": r.get("reason"),
                "teacher_cause": (t_step.cause or "").strip() if t_step else "",
                "teacher_correction": (t_step.correction or "").strip() if t_step else "",
                "own_cause": own_cause,
                "own_correction": own_corr,
                "teacher_answer_correct": r.get("teacher_answer_correct"),
                "pair": r.get("key") in pair_keys,
                "later": later.get(pid),  # None: the Cross-DPO model was not evaluated on this problem
            }
        )
    return items


def _later_label(v: bool | None) -> str:
    return "unknown" if v is None else ("right" if v else "wrong")


def _card(n: int, it: dict) -> str:
    k = it["k"]
    steps = []
    for i, s in enumerate(it["steps"], 1):
        cls = ' class="blamed"' if i == k else (' class="after"' if i > k else "")
        steps.append(f"<li{cls} value=\"{i}\">{esc(s)}</li>")
    original = it["steps"][k - 1] if 0 < k <= len(it["steps"]) else ""
    reason = it["reason"] if it["reason"] else "(none)"
    question = esc(it["question"]) if it["question"] else "<em>(problem text not available)</em>"
    later = _later_label(it["later"])
    return f"""<article class="item" data-k="{k}" data-reason="{esc(reason)}" data-later="{later}" \
data-pair="{'yes' if it['pair'] else 'no'}">
<h3>#{n} <code>{esc(it['key'])}</code> <span class="tag">step k = {k}</span> <span class="tag">reason: {esc(reason)}</span>
<span class="tag later-{later}">Cross-DPO later: {later}</span> <span class="tag">pair: {'yes' if it['pair'] else 'no'}</span></h3>
<div class="problem"><b>Problem.</b> {question}</div>
<details open><summary>Student's steps ({len(it['steps'])}; step {k} blamed)</summary><ol class="steps">{''.join(steps)}</ol></details>
<div class="cols">
<div class="col teacher"><h4>Teacher (chosen)</h4><p><b>Cause.</b> {esc(it['teacher_cause'])}</p>
<p><b>Correction.</b> {esc(it['teacher_correction'])}</p></div>
<div class="col student"><h4>Student's own (rejected)</h4><p><b>Cause.</b> {esc(it['own_cause'])}</p>
<p><b>Correction.</b> {esc(it['own_correction'])}</p></div>
</div>
<div class="diff"><b>Step {k}: student's step &rarr; teacher's correction</b><div class="d">{word_diff(original, it['teacher_correction'])}</div></div>
<div class="diff"><b>Student's own correction &rarr; teacher's</b><div class="d">{word_diff(it['own_correction'], it['teacher_correction'])}</div></div>
</article>"""


def _options(name: str, values: list[str], label: str) -> str:
    opts = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
    return f'<label>{esc(label)} <select id="f-{name}" data-filter="{name}"><option value="">all</option>{opts}</select></label>'


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:16px 24px}
h1{font-size:22px;margin:8px 0} h2{font-size:18px;border-bottom:1px solid #d5d9e0;padding-bottom:4px;margin-top:28px}
h3{font-size:14px;margin:0 0 6px}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-size:13px}
th,td{border:1px solid #d5d9e0;padding:4px 8px;text-align:left;vertical-align:top} th{background:#eef1f5}
pre{background:#fff;border:1px solid #d5d9e0;padding:8px;overflow:auto;max-height:360px;font-size:12px}
code{background:#eef1f5;padding:0 3px;border-radius:3px}
figure{margin:8px 0;background:#fff;border:1px solid #d5d9e0;display:inline-block;padding:6px}
figure img{max-width:100%} figcaption{font-size:12px;color:#5a6372}
.filters{position:sticky;top:0;background:#f6f7f9;padding:8px 0;border-bottom:1px solid #d5d9e0;z-index:1}
.filters label{margin-right:14px} #count{font-weight:600}
.item{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:10px 12px;margin:10px 0}
.item[hidden]{display:none}
.tag{font-weight:400;font-size:12px;background:#eef1f5;border-radius:10px;padding:1px 8px;margin-left:4px}
.later-right{background:#d8f3dc}.later-wrong{background:#fde2e1}
.problem{margin:4px 0 6px;white-space:pre-wrap}
.steps li{white-space:pre-wrap;margin:2px 0}.steps li.blamed{background:#fff3bf;font-weight:600}.steps li.after{color:#8a93a3}
.cols{display:flex;gap:12px}.col{flex:1;border-radius:4px;padding:4px 10px}.col p{white-space:pre-wrap;margin:4px 0}
.col h4{margin:4px 0}.teacher{background:#ebf5ff}.student{background:#fbf0ff}
.diff{margin-top:6px}.d{white-space:pre-wrap;background:#fafbfc;border:1px dashed #d5d9e0;padding:4px 8px}
ins{background:#c7f0d0;text-decoration:none}del{background:#f9c9c9}
"""

# Filters: each <select data-filter=NAME> matches the card attribute data-NAME; the state is the URL hash.
JS = """
(function(){
  var selects = Array.prototype.slice.call(document.querySelectorAll('select[data-filter]'));
  var items = Array.prototype.slice.call(document.querySelectorAll('article.item'));
  function state(){
    var s = {}; (location.hash || '').replace(/^#/, '').split('&').forEach(function(kv){
      if(!kv) return; var i = kv.indexOf('='); if(i < 0) return;
      s[decodeURIComponent(kv.slice(0, i))] = decodeURIComponent(kv.slice(i + 1));
    }); return s;
  }
  function apply(){
    var s = state(), shown = 0;
    selects.forEach(function(el){ el.value = s[el.dataset.filter] || ''; });
    items.forEach(function(it){
      var ok = selects.every(function(el){ var v = s[el.dataset.filter]; return !v || it.dataset[el.dataset.filter] === v; });
      it.hidden = !ok; if(ok) shown++;
    });
    var c = document.getElementById('count'); if(c) c.textContent = shown + ' of ' + items.length + ' shown';
    document.body.setAttribute('data-shown', String(shown));
  }
  selects.forEach(function(el){ el.addEventListener('change', function(){
    var parts = selects.filter(function(x){ return x.value; }).map(function(x){
      return encodeURIComponent(x.dataset.filter) + '=' + encodeURIComponent(x.value); });
    location.hash = parts.join('&'); if(!parts.length) apply();
  }); });
  window.addEventListener('hashchange', apply);
  apply();
})();
"""


def render(title: str, report_md: str, report_dir: Path, items: list[dict], note: str = "") -> str:
    """The page as a string."""
    shown = items[:MAX_ITEMS]
    browser = ""
    if items:
        ks = sorted({it["k"] for it in items})
        reasons = sorted({it["reason"] or "(none)" for it in items})
        counts = Counter(_later_label(it["later"]) for it in items)
        filters = " ".join(
            [
                _options("k", [str(k) for k in ks], "step k"),
                _options("reason", reasons, "locator reason"),
                _options("later", ["right", "wrong", "unknown"], "Cross-DPO later got it"),
                _options("pair", ["yes", "no"], "pair built"),
            ]
        )
        more = f" Showing the first {len(shown)} of {len(items)}." if len(items) > len(shown) else ""
        browser = (
            '<h2 id="browser">Stage-2 browser: what the teacher blamed and corrected</h2>'
            f"<p>{len(items)} located wrong solutions of stage <code>correct</code>.{more} <em>Cross-DPO later</em>: "
            f"the Cross-DPO model's greedy answer on the same problem in its evaluation (right {counts['right']}, "
            f"wrong {counts['wrong']}, unknown {counts['unknown']}: problems it was not evaluated on). "
            "Diffs are word-level: <del>removed</del> <ins>added</ins>.</p>"
            f'<div class="filters">{filters} <span id="count"></span></div>'
            + "\n".join(_card(n, it) for n, it in enumerate(shown, 1))
        )
    body = markdown_to_html(report_md, report_dir)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{esc(title)}</title><style>{CSS}</style></head>
<body><main><h1>{esc(title)}</h1>{f'<p>{esc(note)}</p>' if note else ''}
{body}
{browser}
</main><script>{JS}</script></body></html>
"""


def write_report_html(run_dir: Path, title: str, questions: Mapping[str, str] | None = None) -> Path:
    """Write `<run_dir>/report/report.html` from `report.md` (already written) and the stage-2 artifacts."""
    report_dir = run_dir / "report"
    md_path = report_dir / "report.md"
    md = md_path.read_text(encoding="utf-8") if md_path.exists() else ""
    # The report.md starts with its own title line; the page prints the title once.
    md = re.sub(r"\A# [^\n]*\n", "", md)
    items = browser_items(run_dir, questions)
    note = ""
    man = run_dir / "correct" / "manifest.json"
    if man.exists() and "Teacher:" not in md:  # report.md names the templates' teacher; else say it here
        teacher = read_json(man).get("teacher") or {}
        if teacher.get("name"):
            rule = teacher.get("rule_based") and "rule-based" not in str(teacher["name"])
            note = f"Stage-2 teacher: {teacher['name']}" + (" (rule-based, not an LLM)" if rule else "")
    path = report_dir / "report.html"
    atomic_write_text(path, render(title, md, report_dir, items, note))
    return path
