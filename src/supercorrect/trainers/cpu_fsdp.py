"""FSDP on a machine without GPU: let accelerate take its FSDP path over gloo (CI, debugging, small runs).

Why this exists: accelerate 1.15 selects FSDP only when its processes found an accelerator (`AcceleratorState`
turns `ACCELERATE_USE_FSDP` into `DistributedType.FSDP` for MULTI_GPU / MULTI_XPU / ... only). On a CPU-only
machine the processes become MULTI_CPU (plain DDP over gloo) and the FSDP settings of the launch config are
dropped without a word: a run "under FSDP" would silently be DDP. PyTorch itself shards on CPU: `fully_shard`
(FSDP2) and `FullyShardedDataParallel` (FSDP1) work over gloo. So when the launcher asked for FSDP
(`ACCELERATE_USE_FSDP=true`, set by `accelerate launch` from a `distributed_type: FSDP` config) and there is no
accelerator, `enable_cpu_fsdp()` makes the one decision accelerate refused: the state becomes FSDP, with the
plugin accelerate built from the same config. Everything after that (wrapping, sharded optimizer state,
gradient reduce-scatter, FULL_STATE_DICT gathering at save, TRL's reference-model wrapping) is accelerate's,
transformers' and TRL's own code. With a GPU, or without FSDP asked for, it does nothing.

See accelerate/fsdp_cpu_2proc.yaml and docs/distributed.md.
"""

from __future__ import annotations

import functools
import os

from ..errors import UserError

_PATCHED = False


def fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_cpu_fsdp() -> bool:
    """Make accelerate honour an FSDP launch on CPU; True when it now will. Call before the Trainer is built."""
    global _PATCHED
    import torch

    if not fsdp_requested() or torch.accelerator.is_available():
        return False
    if _PATCHED:
        return True
    from accelerate.state import AcceleratorState, DistributedType, PartialState

    original_init = AcceleratorState.__init__

    @functools.wraps(original_init)
    def init(self, *args, fsdp_plugin=None, **kwargs):
        original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU and fsdp_plugin is not None:
            if fsdp_plugin.fsdp_version != 2:  # FSDP1 wants a device id: "Inconsistent compute device and
                # `device_id` on rank 1: cpu vs cpu:0" (and "no available devices" with sync_module_states)
                raise UserError("FSDP on CPU needs fsdp_version: 2 in the accelerate config (FSDP1 needs a GPU)")
            # As accelerate does for a GPU FSDP run: the shared PartialState records the type too, so a later
            # AcceleratorState() (transformers builds several) keeps FSDP instead of copying MULTI_CPU back.
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = init
    _PATCHED = True
    return True
