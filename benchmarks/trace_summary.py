"""Where a device's time goes, from a ``jax.profiler`` trace: total time per kernel name.

    python benchmarks/trace_summary.py DIR [--top 25]

DIR is what ``jax.profiler.trace(DIR, create_perfetto_trace=True)`` wrote; the newest
``perfetto_trace.json.gz`` under it is read. Prints, per device process of the trace (every
process where none is a device), its busy time and the kernels that took most of it (share,
count, mean us), so that a decode step's copies, GEMMs and attention can be told apart without
a trace viewer.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import pathlib


def summarize(trace: dict, top: int = 25) -> dict[str, dict]:
    """``{device process name: {"busy_us", "kernels": [(name, us, count), ...]}}``."""
    names = {
        e["pid"]: e["args"]["name"]
        for e in trace["traceEvents"]
        if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    per_device: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    devices = {pid for pid, name in names.items() if "/device:" in name} or set(names)
    for e in trace["traceEvents"]:
        process = names.get(e.get("pid"), "")
        if e.get("ph") != "X" or e.get("pid") not in devices:
            continue
        per_device[process][e["name"]] += float(e.get("dur", 0))
        counts[process][e["name"]] += 1
    out = {}
    for process, times in per_device.items():
        kernels = [(n, us, counts[process][n]) for n, us in times.most_common(top)]
        out[process] = {"busy_us": sum(times.values()), "kernels": kernels}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    traces = pathlib.Path(args.dir).rglob("perfetto_trace.json.gz")
    path = max(traces, key=lambda p: p.stat().st_mtime)
    with gzip.open(path) as f:
        trace = json.load(f)
    for process, summary in summarize(trace, args.top).items():
        busy = summary["busy_us"]
        print(f"{process}: busy {busy / 1e3:.1f} ms")
        for name, us, count in summary["kernels"]:
            print(f"  {100 * us / busy:5.1f}%  {count:6d} x {us / count:9.1f} us  {name[:110]}")


if __name__ == "__main__":
    main()
