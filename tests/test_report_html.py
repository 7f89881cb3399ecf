"""report.html: self-contained, every piece of model text escaped, diffs word-level, and (in a real headless
Chromium, when installed) the filters work through the URL hash and the page renders to a non-blank screenshot."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from run_fixture import QUESTIONS, make_run_folder

from supercorrect.report_html import browser_items, markdown_to_html, word_diff, write_report_html


def _png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)


@pytest.fixture
def page(tmp_path) -> Path:
    run = make_run_folder(tmp_path)
    _png(run / "report" / "accuracy.png")
    (run / "report" / "report.md").write_text(
        "# supercorrect report: fixture\n\nTeacher: `reference` <b>bold?</b>\n\n## Held-out accuracy\n\n"
        "| model | test (greedy %) |\n|---|---|\n| HSFT <i>x</i> | 12.5 (n=8) |\n\n"
        "![accuracy per stage](accuracy.png)\n\n![remote](https://example.com/x.png)\n\n- `sample`: a: 1\n\n"
        "```json\n{\"a\": \"</pre><script>x</script>\"}\n```\n"
    )
    return write_report_html(run, "supercorrect report: fixture <script>", QUESTIONS)


def test_word_diff_marks_changes_and_escapes():
    d = word_diff("7 * 2 = 15 <b>", "7 * 2 = 14 <b>")
    assert d == "7 * 2 = <del>15</del><ins>14</ins> &lt;b&gt;"
    assert word_diff("", "<script>") == "<ins>&lt;script&gt;</ins>"
    assert word_diff("same words", "same words") == "same words"


def test_markdown_subset(tmp_path):
    _png(tmp_path / "a.png")
    out = markdown_to_html("## T <x>\n\n| a | b |\n|---|---|\n| `c` | <d> |\n\n![p](a.png)\n![q](../a.png)\n", tmp_path)
    assert "<h3>T &lt;x&gt;</h3>" in out
    assert "<td><code>c</code></td><td>&lt;d&gt;</td>" in out
    assert 'src="data:image/png;base64,' in out
    assert "[image not embedded: ../a.png]" in out  # nothing outside the report folder is read


def test_page_is_self_contained_and_escaped(page):
    text = page.read_text()
    # Our one script; every hostile tag arrives as text.
    assert text.count("<script") == 1 and "<script>document.title" not in text
    assert "&lt;script&gt;document.title=&quot;pwned&quot;&lt;/script&gt;" in text
    assert "<img src=x" not in text and "&lt;/Step1&gt;" in text
    assert "<b>bold?</b>" not in text and "<i>x</i>" not in text
    # No network: no external URL is loaded (the remote image of report.md is shown as text, not fetched).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "[image not embedded: https://example.com/x.png]" in text
    assert text.count('src="data:image/png;base64,') == 1
    # The browser: 3 located solutions (the unlocated one is left out), each with its filter attributes.
    cards = re.findall(r'<article class="item" data-k="(\d)" data-reason="([^"]*)" data-later="(\w+)" data-pair="(\w+)"', text)
    assert cards == [("2", "arith", "right", "yes"), ("1", "value", "wrong", "yes"), ("2", "(none)", "unknown", "no")]
    assert "<del>15</del><ins>14</ins>" in text  # the student's step 2 -> the teacher's correction


def test_items_without_optional_stages(tmp_path):
    """No pairs stage, no Cross-DPO eval, no reason field: the browser still builds, with those marked unknown."""
    run = make_run_folder(tmp_path)
    shutil.rmtree(run / "pairs")
    shutil.rmtree(run / "eval-cross-dpo")
    items = browser_items(run)
    assert [(i["pair"], i["later"], i["question"]) for i in items] == [(False, None, None)] * 3
    assert not browser_items(tmp_path / "nothing")


# ------------------------------------------------------------------------------------------- real headless browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH (CI: apt-get install -y --no-install-recommends chromium fonts-dejavu-core)",
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--user-data-dir={profile}"]  # fmt: skip


def chromium(tmp_path: Path, *args: str) -> str:
    flags = [f.format(profile=tmp_path / "profile") for f in FLAGS]
    r = subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@needs_chromium
@pytest.mark.parametrize(
    ("fragment", "shown"),
    [("", 3), ("#k=2", 2), ("#k=1", 1), ("#reason=arith", 1), ("#reason=(none)", 1), ("#later=wrong", 1),
     ("#later=unknown", 1), ("#pair=no", 1), ("#k=2&later=right", 1), ("#k=1&later=right", 0)],
)  # fmt: skip
def test_filters_in_headless_chromium(page, tmp_path, fragment, shown):
    dom = chromium(tmp_path, "--dump-dom", page.as_uri() + fragment.replace("(", "%28").replace(")", "%29"))
    assert f'data-shown="{shown}"' in dom
    cards = re.findall(r"<article class=\"item\"[^>]*>", dom)
    assert len(cards) == 3 and sum("hidden" not in c for c in cards) == shown
    assert f"{shown} of 3 shown" in dom
    # The hostile text stayed text in the live DOM: our script is the only one, the title is ours.
    assert dom.count("<script") == 1
    assert "<title>supercorrect report: fixture &lt;script&gt;</title>" in dom


@needs_chromium
def test_screenshot_in_headless_chromium(page, tmp_path):
    from PIL import Image, ImageStat

    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars", page.as_uri())
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 1600)
    # Not blank: many colours (text, tables, the plot, diff highlights) and real contrast.
    assert len(img.getcolors(maxcolors=1 << 20) or []) > 50
    assert max(ImageStat.Stat(img).stddev) > 20
