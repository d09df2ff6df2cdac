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

from r1jax.model.quant import storage_bits
from r1jax.plan.programs import Program
from r1jax.plan.targets import Target

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_OP = re.compile(r"=\s*(\(?[^=]*?\)?)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
_SHAPE = re.compile(r"\b(pred|s8|u8|s16|u16|s32|u32|s64|u64|bf16|f16|f32|f64)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}  # fmt: skip


def _tuple_elements(shape: str) -> list[str]:
    """The top-level elements of an HLO tuple shape ``(a, (b, c), d)``; ``[shape]`` if none."""
    shape = shape.strip()
    if not shape.startswith("("):
        return [shape]
    parts, depth, start = [], 0, 1
    for i, ch in enumerate(shape):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if (ch == "," and depth == 1) or (ch == ")" and depth == 0):
            parts.append(shape[start:i].strip())
            start = i + 1
    return parts


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """Collective ops in optimized HLO: kind -> {"count", "bytes"} (result bytes per device;
    an op inside a loop body counts once)."""
    out: dict[str, Counter] = {}
    for line in hlo_text.splitlines():
        match = _OP.search(line)
        if not match:
            continue
        result = match.group(1)
        if match.group(3) and match.group(2) in ("collective-permute", "all-gather"):
            parts = _tuple_elements(result)  # async: (operand(s), result(s), [context])
            result = parts[1] if len(parts) > 1 else result
        size = 0
        for dtype, dims in _SHAPE.findall(result):
            size += _BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
        counter = out.setdefault(match.group(2), Counter())
        counter["count"] += 1
        counter["bytes"] += size
    return {k: dict(v) for k, v in sorted(out.items())}


def _leaf_bytes(leaf) -> int:
    """Bytes one device holds of an abstract array with a sharding."""
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    return math.prod(shape) * storage_bits(leaf.dtype) // 8


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


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_TOO_BIG = re.compile(r"HLO temporaries \(([\d.]+)([KMGT]?)\)")


def _too_big(error: Exception, program: Program) -> dict | None:
    """The figures of a program the TPU compiler refused for lack of HBM (it stops at buffer
    assignment and reports the temporaries it needed), or None for any other error."""
    if "RESOURCE_EXHAUSTED" not in str(error):
        return None
    match = _TOO_BIG.search(str(error))
    temp = int(float(match.group(1)) * _UNITS[match.group(2)]) if match else 0
    args = sum(argument_groups(program).values())
    return dict(args=args, outputs=0, alias=0, temp=temp, cost={}, hlo="",
                error=str(error).splitlines()[0][:300])  # fmt: skip


def compile_figures(program: Program) -> dict:
    """Memory (bytes per device), the HLO's cost analysis and text of the compiled program."""
    try:
        compiled = program.lower().compile()
    except Exception as e:  # jax's JaxRuntimeError; its module moves between versions
        figures = _too_big(e, program)
        if figures is None:
            raise
        return figures
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis() or {}
    return dict(
        args=int(memory.argument_size_in_bytes),
        outputs=int(memory.output_size_in_bytes),
        alias=int(memory.alias_size_in_bytes),
        temp=int(memory.temp_size_in_bytes),
        cost=cost[0] if isinstance(cost, list | tuple) else cost,
        hlo=compiled.as_text(),
        error=None,
    )


def resident_while_sampling(programs, lora) -> int:
    """Per-device bytes of the train state that stay on the chips while a GRPO sampler program
    runs without being its arguments: the optimizer state and the reference (frozen) params;
    with ``lora`` the frozen base is the sampler's own argument (the params it runs on)."""
    train = next((p for p in programs if p.name == "train_step"), None)
    if train is None:
        return 0
    kept = {"state.params"} | ({"state.frozen"} if lora is not None else set())
    groups = argument_groups(train)
    return sum(v for k, v in groups.items() if k.startswith("state.") and k not in kept)


def analyse(program: Program, target: Target, resident: int = 0) -> dict:
    """Compiles ``program`` for ``target`` and reports its per-chip figures (module docstring).
    A program the compiler refuses for lack of HBM is reported as not fitting, with the
    temporaries it asked for and its arguments' size. ``resident``: bytes per chip held while
    it runs that are not its arguments (``resident_while_sampling``), added to its peak."""
    figures = compile_figures(program)
    args, outputs, alias, temp = (figures[k] for k in ("args", "outputs", "alias", "temp"))
    peak = args + outputs - alias + temp + resident
    cost = figures["cost"]
    chip, chips = target.chip, target.chips
    flops_per_chip = program.model_flops / chips
    compute_s = flops_per_chip / chip.peak_flops if chip.peak_flops else None
    memory_s = (args + outputs) / chip.hbm_bandwidth if chip.hbm_bandwidth else None
    roofline = max(compute_s, memory_s) if compute_s is not None else None
    parts = {f"argument {k}": v for k, v in argument_groups(program).items()}
    parts["temporaries"] = temp
    parts["outputs (not aliased)"] = max(outputs - alias, 0)
    if resident:
        parts["train state kept (optimizer, reference)"] = resident
    dominant = sorted(parts.items(), key=lambda kv: -kv[1])[:3]
    return {
        "argument_bytes_per_chip": args,
        "output_bytes_per_chip": outputs,
        "alias_bytes_per_chip": alias,
        "temp_bytes_per_chip": temp,
        "resident_bytes_per_chip": resident,
        "peak_bytes_per_chip": peak,
        "fits": figures["error"] is None and peak <= chip.hbm_bytes,
        "compile_error": figures["error"],
        "flops": program.model_flops,
        "flops_per_chip": flops_per_chip,
        "flops_hlo_per_chip": float(cost.get("flops", 0.0)),
        "tokens": program.tokens,
        "collectives": collectives(figures["hlo"]),
        "roofline_s": roofline,
        "roofline_bound": None
        if roofline is None
        else "compute"
        if roofline == compute_s
        else "memory",
        "mfu_at_roofline": None if roofline is None else compute_s / roofline,
        "dominant": [{"what": k, "bytes_per_chip": v} for k, v in dominant],
    }


def analyse_run(stage, topology: str, target, mesh, programs) -> dict:
    """A run's plan (what ``r1jax plan`` prints): every one of its ``programs`` (built on
    ``mesh`` from ``target``'s devices) analysed, and whether all fit."""
    resident = resident_while_sampling(programs, stage.lora) if stage.kind == "grpo" else 0
    analysed = {p.name: analyse(p, target, 0 if p.name == "train_step" else resident)
                for p in programs}  # fmt: skip
    if stage.kind == "grpo":
        seq_len = max(stage.data.buckets) + stage.grpo.max_new_tokens
    else:
        seq_len = stage.train.seq_len
    return {
        "topology": topology,
        "chip": target.chip.kind,
        "chips": target.chips,
        "mesh": dict(mesh.shape),
        "hbm_bytes_per_chip": target.chip.hbm_bytes,
        "seq_len": seq_len,
        "fits": all(p["fits"] for p in analysed.values()),
        "programs": analysed,
    }
