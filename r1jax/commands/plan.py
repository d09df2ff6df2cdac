"""``r1jax plan``: will a run fit? Compiles the exact programs it would execute (train step;
for GRPO also the sampler's prefill and decode loop) at its shapes, mesh and shardings for a
target it need not have, and reports per chip: memory against HBM, FLOPs, collectives, a
roofline step time and the MFU that implies, and what dominates memory.

  r1jax plan --config=configs/grpo_tiny.py --topology=local
  r1jax plan --config=configs/qwen2_5_7b.py --topology=v5p-64 --config.mesh.preset=v5p-64 --json
  r1jax plan --config=configs/r1_zero_deepseek_v3.py:8192 --topology=v5p   # smallest v5p slice

TPU slices (``v5e-8``, ``v5p-64``, ``v6e-256``, ...) compile on any host with the TPU compiler
(``pip install -e '.[tpu]'`` in its own venv); ``local`` uses this host's devices. Exit status 1
when a program does not fit.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from r1jax.config import TRAINING_KINDS, typed
from r1jax.config.flags import parse_config
from r1jax.plan.targets import CORES_PER_CHIP

GIB = 2**30


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "topology",
        "local",
        "A Cloud TPU slice (v5e-8, v5p-64, ...), local, or a generation (v5p): the smallest "
        "of its slices the run fits.",
        flag_values=fv,
    )
    flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.", flag_values=fv)


def plan(stage, topology: str) -> dict:
    """The plan of a training ``stage`` on ``topology`` (the JSON the command prints)."""
    from r1jax.plan.analysis import analyse_run
    from r1jax.plan.programs import programs_for
    from r1jax.plan.targets import resolve_target
    from r1jax.sharding import make_mesh

    _check_kind(stage)
    target = resolve_target(topology)
    mesh = make_mesh(stage.mesh, devices=target.devices)
    return analyse_run(stage, topology, target, mesh, programs_for(stage, mesh))


def _check_kind(stage) -> None:
    if stage.kind not in TRAINING_KINDS:
        raise ValueError(f"config.kind={stage.kind!r}: r1jax plan plans {TRAINING_KINDS}")


def _table(result: dict) -> str:
    hbm = result["hbm_bytes_per_chip"] / GIB
    lines = [
        f"{result['topology']}: {result['chips']} x {result['chip']} ({hbm:.2f} GiB HBM each), "
        f"mesh {result['mesh']}, {result['seq_len']} tokens per sequence",
        f"{'program':<18} {'peak GiB':>9} {'temp GiB':>9} {'fits':>5} {'TFLOP/chip':>11} "
        f"{'roofline s':>11} {'MFU':>5}  dominant",
    ]
    for name, p in result["programs"].items():
        roof = "-" if p["roofline_s"] is None else f"{p['roofline_s']:.4g}"
        mfu = "-" if p["mfu_at_roofline"] is None else f"{p['mfu_at_roofline']:.0%}"
        top = ", ".join(f"{d['what']} {d['bytes_per_chip'] / GIB:.2f}" for d in p["dominant"])
        peak, temp = p["peak_bytes_per_chip"] / GIB, p["temp_bytes_per_chip"] / GIB
        lines.append(
            f"{name:<18} {peak:>9.2f} {temp:>9.2f} {'yes' if p['fits'] else 'NO':>5}"
            f" {p['flops_per_chip'] / 1e12:>11.3f} {roof:>11} {mfu:>5}  {top}"
        )
        if p["compile_error"]:
            lines.append(f"{'':<18}   the compiler refused it: {p['compile_error']}")
        for kind, c in p["collectives"].items():
            lines.append(f"{'':<18}   {kind}: {c['count']} ops, {c['bytes'] / 2**20:.1f} MiB")
    lines.append("fits" if result["fits"] else "DOES NOT FIT")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv and not argv[0].startswith("-"):  # r1jax plan CONFIG ...
        argv = [f"--config={argv[0]}", *argv[1:]]
    config, fv = parse_config(
        argv,
        command="r1jax plan",
        default="configs/grpo_tiny.py",
        define_flags=_define,
        doc=__doc__,
    )
    stage = typed(config)
    if fv.topology in CORES_PER_CHIP:  # a generation: its smallest slice that fits
        from r1jax.plan.search import smallest_slice

        _check_kind(stage)
        log = (lambda line: print(line, file=sys.stderr)) if fv.json else print
        result = smallest_slice(stage, fv.topology, log=log)
        if result["topology"] is None:
            text = f"no {fv.topology} slice fits (tried {len(result['search'])})"
        else:
            found = f"the smallest {fv.topology} slice it fits: {result['topology']}"
            text = f"{_table(result)}\n{found}"
    else:
        result = plan(stage, fv.topology)
        text = _table(result)
    print(json.dumps(result, indent=1) if fv.json else text, file=sys.stdout)
    return 0 if result["fits"] else 1
