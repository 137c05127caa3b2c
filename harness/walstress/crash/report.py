"""crash.md and the trace figure of an exploration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from walstress.crash.model import Trace

MIB = 1024 * 1024


def write_report(out: Path, report: dict[str, Any], trace: Trace) -> None:
    figure = out / "trace.png"
    cut_walls = [f["wall"] for f in report["failing"][:1]]
    draw_trace(trace, figure, cut_walls)
    (out / "crash.md").write_text(markdown(report, figure.name))


def markdown(report: dict[str, Any], figure: str) -> str:
    totals = report["totals"]
    lines = [f"# Crash states of {report['run_dir']}", "",
             f"Model **{report['model']}**, journal_mode {report['journal_mode']}, synchronous "
             f"{report['synchronous']}" + (f", after the cut: {report['after_cut']}" if report["after_cut"] != "none"
                                           else "") + ".",
             f"Trace: {report['trace']['ops']} operations over {report['trace']['seconds']} s, "
             f"{report['acknowledged_commits']} acknowledged commits, {report['cuts']} cuts.",
             f"**{totals['explored']} distinct crash states checked** of {totals['possible']} the model allows "
             f"(stopped by {report['stopped_by']}), in {report['check_seconds']} s with {report['jobs']} process(es): "
             f"{report['states_per_second']} states/s; they recovered to {report['recovered_databases']} distinct "
             "databases, each checked in full once.", "",
             "| class | possible | explored | clean | lost (synced) | lost (unsynced, allowed) | corrupt |",
             "|---|---|---|---|---|---|---|"]
    for cls, c in report["classes"].items():
        lines.append(f"| {cls} | {c['possible']} | {c['explored']} | {c['clean']} | {c['lost_synced']} | "
                     f"{c['lost_unsynced']} | {c['corrupt']} |")
    lines.append(f"| **all** | {totals['possible']} | {totals['explored']} | {totals['clean']} | "
                 f"{totals['lost_synced']} | {totals['lost_unsynced']} | {totals['corrupt']} |")
    lines.append("")
    if report["failing"]:
        lines.append("## Smallest failing states (replay with `walstress crash replay FILE`)")
        lines.append("")
        for state in report["failing"]:
            variant = state["variant"]
            what = [f"cut at operation {state['position']} ({state['reason']})", f"class {variant['cls']}"]
            if variant["dropped"]:
                what.append(f"dropped {variant['dropped']}")
            if variant["unsynced"]:
                what.append(f"unsynced files {variant['unsynced']}")
            if variant["torn"]:
                what.append(f"operation {variant['torn'][0]} torn after {variant['torn'][1]} bytes")
            if variant["zeros"] is not None:
                what.append(f"operation {variant['zeros']} zero-filled")
            if variant["lost_from"] is not None:
                what.append(f"everything from operation {variant['lost_from']} lost")
            lines.append(f"- **{state['verdict']}**: {state['why']} ({'; '.join(what)}): `{state.get('file', '')}`")
    else:
        lines.append("Every checked state is clean: SQLite kept its promise under this model.")
    lines += ["", f"![trace]({figure})", ""]
    return "\n".join(lines)


def draw_trace(trace: Trace, path: Path, cut_walls: list[float]) -> None:
    """Time x file offset per file: writes as points, syncs as lines, the failing cut in red."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    files = [name for name in trace.files() if any(op.file == name for op in trace.ops)]
    fig = Figure(figsize=(10, 2.2 * max(1, len(files)) + 0.6), dpi=100)
    axes = fig.subplots(max(1, len(files)), 1, sharex=True, squeeze=False)[:, 0]
    t0 = trace.ops[0].wall if trace.ops else 0.0
    for ax, name in zip(axes, files):
        writes = [op for op in trace.ops if op.file == name and op.kind == "W"]
        ax.scatter([op.wall - t0 for op in writes], [op.offset / MIB for op in writes], s=2, color="#1f77b4",
                   gid=f"writes:{name}")
        for op in trace.ops:
            if op.file == name and op.kind == "S":
                ax.axvline(op.wall - t0, color="#2ca02c", lw=0.4, alpha=0.6)
            elif op.file == name and op.kind in ("T", "D"):
                ax.axvline(op.wall - t0, color="#ff7f0e", lw=0.8, ls="--")
        for wall in cut_walls:
            ax.axvline(wall - t0, color="#d62728", lw=1.5, gid="failing-cut")
        ax.set_ylabel(f"{name}\noffset (MiB)")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds since the first operation (green: syncs; orange: truncate/delete; "
                        "red: smallest failing cut)")
    fig.suptitle(f"I/O trace: {len(trace.ops)} operations", fontsize=10)
    fig.savefig(path)
