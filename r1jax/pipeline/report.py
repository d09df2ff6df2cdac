"""Run report: PNG plots of training curves from metrics JSONL and a ``report.md`` with the
before/after evaluation table."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics JSONL file (one JSON object per line); missing file -> []."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
    return rows


def plot_curves(
    rows: Sequence[Mapping], panels: Mapping[str, Sequence[str]], path: str | Path, title: str
) -> Path | None:
    """One PNG with a panel per entry of ``panels`` (panel title -> metric keys, first found is
    plotted against ``step``). Returns the path, or None when no metric was found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found = {}
    for panel, keys in panels.items():
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
            if points:
                found[panel] = (key, points)
                break
    if not found:
        return None
    fig, axes = plt.subplots(1, len(found), figsize=(4 * len(found), 3.2), squeeze=False)
    for ax, (panel, (key, points)) in zip(axes[0], found.items(), strict=True):
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, lw=1.5)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_bars(table: Mapping[str, Mapping[str, float]], metrics: Sequence[str], path) -> Path:
    """Grouped bars: one group per metric, one bar per evaluated model (row of ``table``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(metrics), 3.2))
    width = 0.8 / max(len(table), 1)
    for i, (name, row) in enumerate(table.items()):
        xs = [m + i * width for m in range(len(metrics))]
        ax.bar(xs, [row.get(m, 0.0) for m in metrics], width, label=name)
    ax.set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))], metrics)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def markdown_table(table: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> str:
    lines = ["| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, row in table.items():
        cells = []
        for m in metrics:
            v = row.get(m)
            counts = "length" in m or abs(v or 0) >= 10  # token counts, not rates
            cells.append("–" if v is None else f"{v:.1f}" if counts else f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    run_dir: str | Path,
    *,
    title: str,
    evaluations: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
    figures: Sequence[tuple[str, Path | None]],
    notes: Sequence[str] = (),
    sections: Sequence[tuple[str, str]] = (),
) -> Path:
    """Writes ``report.md`` in ``run_dir`` with the evaluation table, ``sections`` (title,
    markdown) and embedded figures."""
    run_dir = Path(run_dir)
    parts = [f"# {title}", "", markdown_table(evaluations, metrics), ""]
    parts += [f"- {n}" for n in notes]
    for heading, body in sections:
        parts += ["", f"## {heading}", "", body]
    for caption, fig in figures:
        if fig is not None:
            parts += ["", f"## {caption}", "", f"![{caption}]({Path(fig).relative_to(run_dir)})"]
    path = run_dir / "report.md"
    path.write_text("\n".join(parts) + "\n")
    return path
