"""Which floating-point precision to run in, decided once from what the hardware does natively.

Why: on a CPU with native bf16 instructions (x86 `avx512_bf16` or `amx_bf16`, Arm `bf16`) a bf16 matmul runs
several times faster than fp32 (issue 11: 4.3x with AMX; 5-6x measured on an avx512_bf16-only machine), and on a
GPU with bf16 support the same holds. Without native support bf16 is emulated (oneDNN still accepts it on plain
AVX-512) and is slower than fp32, so `auto` must then pick fp32. Everything that chooses a precision asks here:

- generation (`student.dtype: auto`): bf16 weights where supported, fp32 elsewhere;
- training (`hsft.bf16` / `cross_dpo.bf16: auto`): bf16 autocast over fp32 master weights where supported
  (pure bf16 weights cannot take lr-1e-6 updates), fp32 elsewhere; the weights are loaded in fp32 either way
  unless `student.dtype` names a precision explicitly.

Each decision comes with a one-line reason that the stages write into their manifest. Tests patch
`native_bf16` to pretend the machine has (or lacks) support.
"""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

DtypeSetting = Literal["auto", "float32", "bfloat16", "float16"]
Bf16Setting = bool | Literal["auto"]

# Flags in /proc/cpuinfo that mean bf16 arithmetic in hardware (x86: AVX512-BF16 dot products, AMX tiles;
# Arm: the BF16 extension, "bf16" in the Features line).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@dataclass(frozen=True)
class Precision:
    dtype: str  # "float32" | "bfloat16" | "float16": the dtype of the weights (generation) or of autocast
    reason: str

    @property
    def bf16(self) -> bool:
        return self.dtype == "bfloat16"

    def to_dict(self) -> dict:
        return asdict(self)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in {"flags", "features"}:
            flags.update(value.split())
    return frozenset(flags)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def native_bf16(device: str | None = None) -> tuple[bool, str]:
    """(supported, why) for bf16 arithmetic in hardware on `device` ("cpu", "cuda", "cuda:1"; None: the default)."""
    import torch

    device = device or default_device()
    if device.startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"GPU {torch.cuda.get_device_name(device)} supports bf16"
        return False, "GPU without native bf16 support"
    if device != "cpu":
        return False, f"device {device!r}: bf16 support unknown, fp32 is the safe choice"
    native = sorted(set(NATIVE_BF16_FLAGS) & cpu_flags())
    if platform.machine().lower() in {"x86_64", "amd64"}:
        native = [f for f in native if f != "bf16"]  # "bf16" means the Arm extension only
    if not native:
        return False, "CPU without native bf16 instructions (no avx512_bf16/amx_bf16/bf16 in /proc/cpuinfo)"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False, f"CPU flags {','.join(native)} but this torch build has no oneDNN bf16 kernels"
    return True, f"CPU with native bf16 ({', '.join(native)}) and oneDNN bf16 kernels"


def generation_precision(setting: str, device: str | None = None) -> Precision:
    """The weights' dtype for generation: an explicit setting is kept; `auto` is bf16 where native, else fp32."""
    if setting != "auto":
        return Precision(setting, "set explicitly in the config")
    ok, why = native_bf16(device)
    return Precision("bfloat16" if ok else "float32", why)


def training_precision(bf16: Bf16Setting, device: str | None = None) -> Precision:
    """Autocast precision for training (master weights stay fp32): `auto` is bf16 where native, else fp32."""
    if bf16 != "auto":
        return Precision("bfloat16" if bf16 else "float32", "set explicitly in the config")
    ok, why = native_bf16(device)
    return Precision("bfloat16" if ok else "float32", why)


def training_weights_dtype(student_dtype: str) -> str:
    """The dtype training loads the weights in: fp32 master weights unless the config names another dtype."""
    return "float32" if student_dtype == "auto" else student_dtype
