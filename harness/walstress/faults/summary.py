"""One summary per fault of a run, from its ``fault`` records (for run.json)."""

from __future__ import annotations

from typing import Any


def summarize_faults(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """name -> records, actions (summed counts), outcomes, targets, first t, last t_end.

    A record with ``detail.count`` stands for that many actions (a window of
    a frequent hazard); any other record is one action, counted under its
    ``detail.outcome`` or else ``detail.action`` when it has one.
    """
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        if rec.get("type") != "fault":
            continue
        name = str(rec.get("name", "fault"))
        entry = out.setdefault(name, {"records": 0, "actions": 0, "outcomes": {}, "targets": [],
                                      "first_t": None, "last_t_end": None})
        detail = rec.get("detail") or {}
        entry["records"] += 1
        if isinstance(detail.get("count"), int):
            entry["actions"] += detail["count"]
            for outcome, n in (detail.get("outcomes") or {}).items():
                entry["outcomes"][outcome] = entry["outcomes"].get(outcome, 0) + int(n)
        else:
            entry["actions"] += 1
            label = detail.get("outcome") or detail.get("action")
            if label:
                entry["outcomes"][str(label)] = entry["outcomes"].get(str(label), 0) + 1
        target = rec.get("target")
        if target is not None and target not in entry["targets"]:
            entry["targets"].append(target)
        t = rec.get("t")
        t_end = rec.get("t_end") if rec.get("t_end") is not None else t
        if t is not None and (entry["first_t"] is None or t < entry["first_t"]):
            entry["first_t"] = t
        if t_end is not None and (entry["last_t_end"] is None or t_end > entry["last_t_end"]):
            entry["last_t_end"] = t_end
    for entry in out.values():
        entry["targets"].sort()
    return out
