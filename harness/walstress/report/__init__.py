"""Reports: figures and pages rebuilt from a run's history after the workers stopped.

Layout written into an output folder (``walstress run ... --out OUT``):

    OUT/report.md, OUT/report.html       verdict first, the cells side by side
                                         (each linked to its section), the matrix
                                         figures, per cell its runs (linked to
                                         their pages; figures inline for the
                                         failing runs and each cell's first run),
                                         then scenario, SQLite, environment
    OUT/figures/*.png                    matrix figures, when there are two or
                                         more cells: comparison (small multiples),
                                         wal_growth (every cell on one axis),
                                         wal_by_cell, write_latency_by_cell
    OUT/comparison.json                  the numbers of the comparison table
    OUT/cell-NNN/run-NNN/report.md|html  one run: verdict (and a link back to
                                         OUT's page), figures, checks, lost ids,
                                         then scenario, SQLite versions and
                                         compile options, environment
    OUT/cell-NNN/run-NNN/figures/*.png   sizes (WAL + db, checkpoints, faults),
                                         latency, throughput, latency_cdf

``walstress report RUN_DIR`` on a single run dir writes only that run's
report. report.html embeds its images (base64), each with its caption
under it, and loads nothing from the network; report.md links the PNGs
relatively so it renders on a code host. Links between pages are relative
(report.md to report.md, report.html to report.html), so a moved or copied
output folder keeps them.
A run whose controller died is reported from what its history holds and is
marked PARTIAL. Figures are drawn only here, never by workers or the
controller; the numbers behind them live in :mod:`walstress.report.data`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build_report(out_dir: str | Path, results: dict[str, Any]) -> list[Path]:
    """Write every figure and page for ``results`` under ``out_dir``; returns the written paths.

    ``results`` is results.json's content, or, for a single run dir,
    ``{"cells": [], "run": <run.json content>}`` as ``walstress report`` passes it.
    """
    from walstress.report.build import build_folder_report, build_run_report

    out_dir = Path(out_dir)
    if not results.get("cells") and (results.get("run") is not None or (out_dir / "scenario.json").exists()):
        env = results.get("environment")
        if env is None:  # the output folder above the run dir recorded it
            from walstress.report.build import _load_json

            env = (_load_json(out_dir.parent.parent / "results.json") or {}).get("environment")
        return build_run_report(out_dir, results.get("run"), env=env)
    return build_folder_report(out_dir, results)


__all__ = ["build_report"]
