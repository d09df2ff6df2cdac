"""What a compiled program costs per chip: memory (XLA's ``memory_analysis``), FLOPs, the
collectives in its HLO, a roofline step time and the MFU it implies.

Memory is exact (the compiler's buffer assignment for one device of the SPMD program). FLOPs
are reported twice: ``flops_hlo`` from ``cost_analysis()``, which counts a ``scan`` or
``while_loop`` body once (a 28-layer scan reports about one layer), and ``model_flops``, the
analytic count of the work (``programs.Program``). The roofline time is the larger of
``model_flops`` per chip at the chip's peak and the bytes that must cross HBM at least once
(arguments read, outputs written) at its bandwidth: a lower bound, so the MFU it implies is an
upper bound.
"""

from __future__ import annotations

import math
import re
from collections import Counter

import jax
import numpy as np

from r1jax.plan.programs import Program
from r1jax.plan.targets import Target

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_OP = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|bf16|f16|f32|f64)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}  # fmt: skip


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """Collective ops in optimized HLO: kind -> {"count", "bytes"} (result bytes per device;
    an op inside a loop body counts once)."""
    out: dict[str, Counter] = {}
    for line in hlo_text.splitlines():
        match = _OP.search(line)
        if not match:
            continue
        size = 0
        for dtype, dims in _SHAPE.findall(match.group(1)):
            size += _BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
        counter = out.setdefault(match.group(2), Counter())
        counter["count"] += 1
        counter["bytes"] += size
    return {k: dict(v) for k, v in sorted(out.items())}


def _leaf_bytes(leaf) -> int:
    """Bytes one device holds of an abstract array with a sharding."""
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    return math.prod(shape) * np.dtype(leaf.dtype).itemsize


def argument_groups(program: Program) -> dict[str, int]:
    """Per-device bytes of each argument (a train or sampling state's fields separately)."""
    groups: Counter = Counter()
    for name, arg in zip(program.arg_names, program.args, strict=True):
        for path, leaf in jax.tree_util.tree_flatten_with_path(arg)[0]:
            if not hasattr(leaf, "sharding") or not jax.dtypes.issubdtype(leaf.dtype, np.number):
                continue  # PRNG keys
            field = getattr(path[0], "name", None) if path else None
            groups[f"{name}.{field}" if field else name] += _leaf_bytes(leaf)
    return dict(groups)


def analyse(program: Program, target: Target) -> dict:
    """Compiles ``program`` for ``target`` and reports its per-chip figures (module docstring)."""
    compiled = program.fn.lower(*program.args).compile()
    memory = compiled.memory_analysis()
    args = int(memory.argument_size_in_bytes)
    outputs = int(memory.output_size_in_bytes)
    alias = int(memory.alias_size_in_bytes)
    temp = int(memory.temp_size_in_bytes)
    peak = args + outputs - alias + temp
    cost = compiled.cost_analysis() or {}
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    chip, chips = target.chip, target.chips
    flops_per_chip = program.model_flops / chips
    compute_s = flops_per_chip / chip.peak_flops if chip.peak_flops else None
    memory_s = (args + outputs) / chip.hbm_bandwidth if chip.hbm_bandwidth else None
    roofline = max(compute_s, memory_s) if compute_s is not None else None
    parts = {f"argument {k}": v for k, v in argument_groups(program).items()}
    parts["temporaries"] = temp
    parts["outputs (not aliased)"] = max(outputs - alias, 0)
    dominant = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
    return {
        "argument_bytes_per_chip": args,
        "output_bytes_per_chip": outputs,
        "alias_bytes_per_chip": alias,
        "temp_bytes_per_chip": temp,
        "peak_bytes_per_chip": peak,
        "fits": peak <= chip.hbm_bytes,
        "flops": program.model_flops,
        "flops_per_chip": flops_per_chip,
        "flops_hlo_per_chip": float(cost.get("flops", 0.0)),
        "tokens": program.tokens,
        "collectives": collectives(compiled.as_text()),
        "roofline_s": roofline,
        "roofline_bound": None
        if roofline is None
        else "compute"
        if roofline == compute_s
        else "memory",
        "mfu_at_roofline": None if roofline is None else compute_s / roofline,
        "dominant": [{"what": k, "bytes_per_chip": v} for k, v in dominant],
    }
