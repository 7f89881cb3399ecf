"""Generation backends and resumable generation; the local-model teacher built on them."""

from __future__ import annotations

import pytest

from supercorrect.generation import SamplingSettings, TransformersBackend, generate_resumable
from supercorrect.io import JsonlAppender, iter_jsonl_tolerant


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return TransformersBackend(str(tiny_model_dir), batch_size=4)


def test_batched_generation_shapes_and_stop(backend):
    prompts = ["Hello there", "What is 2 + 3?", "A much longer prompt " * 5]
    out = backend.generate(prompts, SamplingSettings(n=3, temperature=1.0, max_new_tokens=8, seed=1))
    assert [len(o) for o in out] == [3, 3, 3]
    for comps in out:
        for c in comps:
            assert 0 <= c.n_tokens <= 8 and c.finish in ("stop", "length")
    again = backend.generate(prompts, SamplingSettings(n=3, temperature=1.0, max_new_tokens=8, seed=1))
    assert [[c.text for c in o] for o in out] == [[c.text for c in o] for o in again]  # seeded
    greedy = backend.generate(prompts, SamplingSettings(max_new_tokens=6))
    assert all(len(o) == 1 for o in greedy)


def test_resume_gives_the_same_samples(backend, tmp_path):
    items = [(f"p{i}", f"Problem {i}: what is {i} + {i}?") for i in range(10)]
    s = SamplingSettings(n=2, temperature=1.0, max_new_tokens=6, seed=3)
    full, stats = generate_resumable(backend, items, s, tmp_path / "full.jsonl", chunk=4)
    assert stats["resumed"] == 0 and len(full) == 10
    # A run killed after its first chunk and a torn half-written row: the resumed run regenerates the rest
    # (and the torn chunk) with the same per-chunk seeds.
    rows = list(iter_jsonl_tolerant(tmp_path / "full.jsonl"))
    with JsonlAppender(tmp_path / "part.jsonl") as a:
        a.append_many(rows[:5])
    with (tmp_path / "part.jsonl").open("a") as f:
        f.write('{"key": "p5", "compl')
    resumed, stats = generate_resumable(backend, items, s, tmp_path / "part.jsonl", chunk=4)
    assert stats["resumed"] == 4  # only the first complete chunk was reused
    assert resumed == full


def test_local_teacher(tiny_model_dir, tmp_path):
    from supercorrect.config import RunConfig
    from supercorrect.schema import Problem
    from supercorrect.teachers import make_teacher

    cfg = RunConfig.model_validate(
        {
            "name": "t",
            "teacher": {"kind": "local", "model": str(tiny_model_dir), "max_tokens": 8},
            "data": {"train": {"kind": "synthetic", "n": 2}},
        }
    )
    teacher = make_teacher(cfg, tmp_path)
    p = Problem(id="a", question="What is 2+2?", solution="2+2=4", answer="4", source="synthetic")
    outs = teacher.templates([p, p])
    # A random model may say nothing: then the item fails with a reason instead of an empty template.
    assert len(outs) == 2
    assert all((o.text is not None or o.error.startswith("empty")) and o.completion_tokens <= 8 for o in outs)
    assert teacher.describe()["name"].startswith("local:")
    assert teacher.usage()["completion_tokens"] > 0


@pytest.fixture(scope="module")
def fp32_engines(tiny_model_dir):
    """Both engines, fp32 (pinned: greedy identity is an fp32 property)."""
    stock = TransformersBackend(str(tiny_model_dir), dtype="float32", batch_size=4, engine="generate", device="cpu")
    ours = TransformersBackend(str(tiny_model_dir), dtype="float32", batch_size=4, engine="decode", device="cpu")
    return stock, ours


PROMPTS = [f"Problem {i}: what is {i} plus {i * i}? " * (1 + i % 3) for i in range(7)]


def assert_greedy_is_stock(stock, ours, prompts, stop) -> None:
    """Greedy on `prompts`: the decode engine's completions equal `model.generate`'s; with stop strings taken
    from the middle of two outputs ("from the outputs"), those rows really stopped early."""
    if stop == "from the outputs":
        texts = [c[0].text for c in ours.generate(prompts, SamplingSettings(max_new_tokens=24))]
        stop = tuple(t[len(t) // 2 : len(t) // 2 + 3] for t in (texts[1], texts[4]) if len(t) > 6)
    s = SamplingSettings(max_new_tokens=24, stop=stop)
    a, b = stock.generate(prompts, s), ours.generate(prompts, s)
    assert a == b
    if len(stop) == 2:
        assert sum(c[0].finish == "stop" for c in b) >= 2  # the early-stop path really ran


@pytest.mark.parametrize("stop", [(), "from the outputs", ("</Answer>",)])
def test_decode_engine_greedy_is_stock_generate(fp32_engines, stop):
    """Greedy: same text, token count and finish as `model.generate`, also when sequences stop early (stop
    strings taken from the middle of some outputs fire at different steps: those rows leave the batch, and
    padding columns are cut)."""
    stock, ours = fp32_engines
    assert_greedy_is_stock(stock, ours, PROMPTS, stop)


def test_decode_engine_eos_ends_a_sequence(fp32_engines):
    """Make a token the tiny model produces often the EOS: both engines end there and agree."""
    stock, ours = fp32_engines
    first = ours.generate(PROMPTS[:1], SamplingSettings(max_new_tokens=8))[0][0]
    ids = ours.tokenizer(first.text, add_special_tokens=False)["input_ids"]
    saved = [b.tokenizer.eos_token for b in (stock, ours)]
    try:
        for engine in (stock, ours):
            engine.tokenizer.eos_token = engine.tokenizer.convert_ids_to_tokens(ids[len(ids) // 2])
        s = SamplingSettings(max_new_tokens=12)
        a, b = stock.generate(PROMPTS, s), ours.generate(PROMPTS, s)
    finally:
        for engine, e in zip((stock, ours), saved, strict=True):
            engine.tokenizer.eos_token = e
    assert a == b and any(c[0].finish == "stop" for c in b)


@pytest.mark.parametrize("n", [1, 3])
def test_decode_engine_samples_like_stock_generate(fp32_engines, n):
    """Sampling (temperature, top-k 50 as generate sets it, top-p, seeded per batch): while no sequence leaves the
    batch the random stream is the same, so the samples are identical to `model.generate`'s; the prompt is
    prefilled once for its n samples."""
    stock, ours = fp32_engines
    s = SamplingSettings(n=n, temperature=0.8, top_p=0.9, max_new_tokens=10, seed=5)
    a, b = stock.generate(PROMPTS, s), ours.generate(PROMPTS, s)
    assert a == b and all(len(c) == n for c in b)


def test_batches_follow_the_memory_budget(tiny_model_dir):
    b = TransformersBackend(str(tiny_model_dir), dtype="float32", batch_size=64, device="cpu")
    per_token = b._kv_bytes_per_token()
    b.memory_budget_gb = (4 * (100 + 20) * per_token + 1) / 2**30  # room for 4 sequences of 100 + 20 tokens
    lengths = [30, 100, 90, 10, 95, 20, 99, 50]
    batches = b.batches(lengths, n=1, max_new_tokens=20)
    assert sorted(i for x in batches for i in x) == list(range(8))
    assert batches == [[1, 6, 4, 2], [7, 0, 5, 3]]  # longest first; 4 of 100+20 fit, then the rest
    assert all(len(x) * (lengths[x[0]] + 20) * per_token <= b.memory_budget_gb * 2**30 for x in batches)
    b.memory_budget_gb /= 2
    assert [len(x) for x in b.batches(lengths, n=1, max_new_tokens=20)] == [2, 2, 3, 1]  # short ones: more fit
    b.batch_size = 2
    assert max(len(x) for x in b.batches(lengths, n=1, max_new_tokens=20)) == 2  # batch_size caps the rows
    assert max(len(x) for x in b.batches(lengths, n=3, max_new_tokens=20)) == 1  # n samples count as rows


SHARED = "You are a careful solver. Read the problem, think step by step, and give the answer in tags. " * 2
SHARED_PROMPTS = [SHARED + f"Problem {i}: what is {i} plus {i * i}? " * (1 + i % 3) for i in range(7)]


def test_batch_layout_puts_the_shared_prefix_first():
    from supercorrect.generation import MIN_SHARED_PREFIX, _batch_layout, _shared_prefix_len

    p = list(range(100, 100 + MIN_SHARED_PREFIX))
    ids, mask = _batch_layout([p + [1, 2, 3], p + [4], p + [5, 6]], pad=0, device="cpu")
    assert ids[1].tolist() == p + [0, 0, 4] and mask[1].tolist() == [1] * len(p) + [0, 0, 1]
    assert ids[2].tolist() == p + [0, 5, 6] and _shared_prefix_len(ids, mask) == len(p)
    short = p[:-1]  # below the minimum: plain left padding, nothing shared
    ids, mask = _batch_layout([short + [1, 2], short + [3]], pad=0, device="cpu")
    assert ids[1].tolist() == [0] + short + [3] and _shared_prefix_len(ids, mask) == 0
    ids, mask = _batch_layout([p + p, p + p], pad=0, device="cpu")  # identical: the last token stays per row
    assert _shared_prefix_len(ids, mask) == 2 * len(p) - 1


@pytest.mark.parametrize("stop", [(), ("</Answer>",), "from the outputs"])
def test_decode_engine_shared_prefix_greedy_is_stock_generate(fp32_engines, stop):
    """Prompts with a common opening: it is prefilled once and its cache copied, the rest of each prompt sits
    after a padding gap; greedy output stays generate's, also when rows leave and gap columns are cut."""
    from supercorrect.generation import _batch_layout

    stock, ours = fp32_engines
    ids = ours.tokenizer(SHARED_PROMPTS[:4], add_special_tokens=False)["input_ids"]
    _, mask = _batch_layout(ids, 0, "cpu")
    assert mask[:, 0].all() and not mask.all()  # the layout really shares a prefix here, with a gap
    assert_greedy_is_stock(stock, ours, SHARED_PROMPTS, stop)


@pytest.mark.parametrize("n", [1, 3])
def test_decode_engine_shared_prefix_samples_like_stock_generate(fp32_engines, n):
    stock, ours = fp32_engines
    s = SamplingSettings(n=n, temperature=0.8, top_p=0.9, max_new_tokens=10, seed=5)
    a, b = stock.generate(SHARED_PROMPTS, s), ours.generate(SHARED_PROMPTS, s)
    assert a == b and all(len(c) == n for c in b)


def test_growable_cache_layer_matches_dynamic_layer():
    """Same keys/values as transformers' DynamicLayer through appends, rows leaving, columns cut and repeats."""
    import torch
    from transformers.cache_utils import DynamicLayer

    from supercorrect.generation import GROW_HEADROOM, _growable_layer_class

    g, d = _growable_layer_class()(), DynamicLayer()
    torch.manual_seed(0)
    steps = [torch.randn(4, 2, 5, 3)] + [torch.randn(4, 2, 1, 3) for _ in range(GROW_HEADROOM + 3)]
    for i, x in enumerate(steps):
        rows = 4 if i < 10 else 2
        if i == 10:
            for layer in (g, d):
                layer.batch_select_indices(torch.tensor([0, 3]))
        if i == 20:
            for layer in (g, d):
                layer.keys, layer.values = layer.keys[:, :, 2:], layer.values[:, :, 2:]
        if i == 30:
            for layer in (g, d):
                layer.batch_repeat_interleave(2)
        rows = 4 if i >= 30 else rows
        x = x[:rows] if x.shape[0] >= rows else x.repeat(2, 1, 1, 1)[:rows]
        kg, vg = g.update(x, x + 1)
        kd, vd = d.update(x, x + 1)
        assert torch.equal(kg, kd) and torch.equal(vg, vd)
    assert g._kbuf.shape[-2] > g.keys.shape[-2]  # spare capacity, written in place


def test_decode_engine_uses_the_growable_cache(tiny_model_dir):
    from transformers import DynamicCache

    from supercorrect.generation import _growable, _growable_layer_class
    from supercorrect.models import load_model

    model = load_model(str(tiny_model_dir), dtype="float32", device="cpu")
    cache = _growable(DynamicCache(config=model.config))
    assert len(cache.layers) == model.config.num_hidden_layers
    assert all(type(x) is _growable_layer_class() for x in cache.layers)
