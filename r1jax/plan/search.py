"""The smallest slice of a TPU generation a run fits: ``r1jax plan --topology=v5p``.

Slices are tried from the smallest up. A slice is passed over without compiling when the run's
mesh cannot be laid on it (an axis the config fixes does not divide its chips, or the batch
does not divide the mesh) or when the programs' arguments alone (params, optimizer state,
reference, batch; the sampler's cache) exceed a chip's HBM; every other slice is compiled and
analysed like a single ``r1jax plan``, and the first where every program fits ends the search.

    result = smallest_slice(stage, "v5p")
    result["topology"]   # "v5p-1024", or None when no slice of the generation fits
    result["search"]     # per slice tried: {"topology", "fits", "why"}
"""

from __future__ import annotations

from collections.abc import Callable

from r1jax.plan.targets import CORES_PER_CHIP, GIB, TOPOLOGY_2D, TOPOLOGY_3D


def slice_names(generation: str) -> list[str]:
    """A generation's slice names, smallest first (``v5p`` -> ``v5p-8, v5p-16, ...``)."""
    if generation not in CORES_PER_CHIP:
        raise ValueError(
            f"unknown TPU generation {generation!r}; known: {', '.join(CORES_PER_CHIP)}"
        )
    per_chip = CORES_PER_CHIP[generation]
    table = TOPOLOGY_3D if per_chip == 2 else TOPOLOGY_2D
    return [f"{generation}-{chips * per_chip}" for chips in sorted(table)]


def _arguments_alone(programs, hbm: int) -> str | None:
    """Why a slice cannot fit before compiling: a program whose arguments exceed ``hbm``."""
    from r1jax.plan.analysis import argument_groups

    for program in programs:
        args = sum(argument_groups(program).values())
        if args > hbm:
            return (
                f"{program.name}'s arguments alone need {args / GIB:.2f} GiB per chip "
                f"(HBM {hbm / GIB:.2f})"
            )
    return None


def smallest_slice(
    stage, generation: str, plan_on: Callable | None = None, log: Callable = print
) -> dict:
    """Searches ``generation``'s slices (module docstring). ``plan_on(stage, name, target,
    mesh, programs)`` returns one slice's plan (``r1jax.plan.analysis.analyse_run``); ``log``
    is told each slice's outcome as it is known (a 671B search compiles for tens of minutes)."""
    from r1jax.plan.analysis import analyse_run
    from r1jax.plan.programs import programs_for
    from r1jax.plan.targets import resolve_target
    from r1jax.sharding import make_mesh

    plan_on = plan_on or analyse_run
    search = []
    for name in slice_names(generation):
        target = resolve_target(name)
        try:
            mesh = make_mesh(stage.mesh, devices=target.devices)
            programs = programs_for(stage, mesh)
            why = _arguments_alone(programs, target.chip.hbm_bytes)
        except ValueError as e:  # the config's mesh or an array does not divide this slice
            search.append({"topology": name, "fits": False, "why": f"no layout: {e}"})
            log(f"{name}: passed over, {search[-1]['why']}")
            continue
        if why is None:
            result = plan_on(stage, name, target, mesh, programs)
            if result["fits"]:
                search.append({"topology": name, "fits": True, "why": "every program fits"})
                log(f"{name}: fits")
                return {**result, "search": search}
            why = ", ".join(
                f"{k} {p['peak_bytes_per_chip'] / GIB:.2f} GiB"
                for k, p in result["programs"].items()
                if not p["fits"]
            )
            why = f"compiled: {why} per chip (HBM {target.chip.hbm_bytes / GIB:.2f})"
        search.append({"topology": name, "fits": False, "why": why})
        log(f"{name}: does not fit, {why}")
    return {"topology": None, "fits": False, "search": search}
