"""Matrix shards: ``walstress run --shard K/N`` and ``walstress merge``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from walstress import cli
from walstress.runner import load_results, merge_results, parse_shard

SCENARIO = """
name = "shard-me"
seed = 21
duration = "1s"
expect = "clean"

[database]
schema = "minimal"
pages = 200

[checkpoint]
every_writes = 20

[[workers]]
role = "writer"
count = 1

[[workers]]
role = "reader"
count = 1

[matrix]
"checkpoint.mode" = ["PASSIVE", "TRUNCATE", "FULL"]

[[expect_when]]
match = {"checkpoint.mode" = "FULL"}
expect = "any"
"""


def test_parse_shard():
    assert parse_shard("1/2") == (1, 2) and parse_shard("3/3") == (3, 3)
    for bad in ("0/2", "3/2", "2", "a/b", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def _cells(results: dict) -> list[tuple]:
    return [(c["cell_id"], c["label"], json.dumps(c["params"], sort_keys=True), c["expect"], c["expect_fraction"],
             c["runs"]) for c in results["cells"]]


@pytest.fixture
def report_calls(monkeypatch):
    """The report hook, recorded instead of drawn (figures are not what these tests check)."""
    calls = []
    monkeypatch.setattr(cli, "_after_run", lambda results, out: calls.append((results, Path(out))))
    return calls


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, cache_dir):
    root = tmp_path_factory.mktemp("shards")
    scenario = root / "shard-me.toml"
    scenario.write_text(SCENARIO)
    codes = {}
    calls = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "_after_run", lambda results, out: calls.append((results, Path(out))))
        for name, extra in (("whole", []), ("s1", ["--shard", "1/2"]), ("s2", ["--shard", "2/2"])):
            codes[name] = cli.main(["run", str(scenario), "--out", str(root / name), "--quiet", *extra])
        codes["merged"] = cli.main(["merge", str(root / "s1"), str(root / "s2"), "--out", str(root / "merged")])
    codes["report_calls"] = calls
    return root, codes


def test_shards_keep_global_cell_ids(sharded):
    root, codes = sharded
    assert codes["s1"] == 0 and codes["s2"] == 0
    s1, s2 = load_results(root / "s1"), load_results(root / "s2")
    assert [c["cell_id"] for c in s1["cells"]] == ["cell-000", "cell-002"]
    assert [c["cell_id"] for c in s2["cells"]] == ["cell-001"]
    assert s1["shard"] == {"index": 1, "count": 2, "cells_total": 3, "cell_ids": ["cell-000", "cell-002"]}


def test_merged_shards_equal_the_unsharded_run(sharded):
    root, codes = sharded
    assert codes["whole"] == 0 and codes["merged"] == 0
    whole, merged = load_results(root / "whole"), load_results(root / "merged")
    assert _cells(merged) == _cells(whole)
    assert [c["params"] for c in merged["cells"]] == [{"checkpoint.mode": m} for m in ("PASSIVE", "TRUNCATE", "FULL")]
    assert [c["expect"] for c in merged["cells"]] == ["clean", "clean", "any"]
    # a healthy tiny workload: the verdicts are deterministic (all clean)
    assert [r["verdict"] for c in merged["cells"] for r in c["results"]] == \
        [r["verdict"] for c in whole["cells"] for r in c["results"]] == ["clean"] * 3
    assert merged["totals"]["runs"] == whole["totals"]["runs"] == 3
    assert merged["ok"] is True and merged["missing_cells"] == []
    jsonschema = pytest.importorskip("jsonschema")
    schema = Path(__file__).resolve().parent.parent / "harness" / "walstress" / "schema" / "results.schema.json"
    jsonschema.validate(merged, json.loads(schema.read_text()))
    # merge called the report hook with the joined results and the merged folder
    results, out = codes["report_calls"][-1]
    assert out == root / "merged" and [c["cell_id"] for c in results["cells"]] == ["cell-000", "cell-001", "cell-002"]
    # the cell folders are reachable from the merged folder, for `walstress report`
    for cell in merged["cells"]:
        assert (root / "merged" / cell["cell_id"] / "run-000" / "run.json").exists()


def test_report_rejudges_a_merged_folder(sharded, report_calls):
    root, _ = sharded
    assert cli.main(["report", str(root / "merged")]) == 0
    again = load_results(root / "merged")
    assert [c["cell_id"] for c in again["cells"]] == ["cell-000", "cell-001", "cell-002"]
    assert again["rejudged_at"] >= again["finished_at"]
    assert [r["verdict"] for c in again["cells"] for r in c["results"]] == ["clean"] * 3


def test_merge_refuses_overlaps_and_other_scenarios(sharded, tmp_path):
    root, _ = sharded
    with pytest.raises(ValueError, match="also in another shard"):
        merge_results([root / "s1", root / "whole"], tmp_path / "bad")
    other = json.loads((root / "s2" / "results.json").read_text())
    other["scenario"]["seed"] = 99
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="different scenario"):
        merge_results([root / "s1", tmp_path / "other"], tmp_path / "bad2")


def test_merge_of_one_shard_reports_the_missing_cells(sharded, tmp_path, capsys, report_calls):
    root, _ = sharded
    code = cli.main(["merge", str(root / "s1"), "--out", str(tmp_path / "half")])
    assert code == 1
    data = load_results(tmp_path / "half")
    assert data["missing_cells"] == ["cell-001"] and data["partial"] and not data["ok"]
    assert "cell-001" in capsys.readouterr().out


def test_bad_shard_argument_exits_2(tmp_path, capsys):
    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO)
    assert cli.main(["run", str(scenario), "--shard", "3/2", "--out", str(tmp_path / "o")]) == 2
    assert "--shard" in capsys.readouterr().err


def test_summary_counts_and_time_to_first_failure():
    from walstress.runner import summarize_cell

    runs = [{"verdict": "clean", "duration_s": 2.0}, {"verdict": "lost-writes", "duration_s": 1.5},
            {"verdict": "corrupt", "duration_s": 3.0}, {"verdict": "errors", "duration_s": 1.0}]
    cell = summarize_cell("cell-000", "x", {}, "damaged", 0.5, runs)
    assert (cell["runs"], cell["clean"], cell["lost"], cell["corrupt"], cell["errors"]) == (4, 1, 1, 1, 1)
    assert cell["time_to_first_failure_s"] == 3.5  # 2.0 s clean, then 1.5 s into the second run
    assert cell["matching"] == 2 and cell["matches_expect"]


def test_bisect_search_and_backport_note(tmp_path):
    """The search itself, with a runner standing in for the runs (verdict logic is tested elsewhere)."""
    from walstress.bisect import BACKPORT_NOTE, bisect_versions

    scenario = tmp_path / "s.toml"
    scenario.write_text(SCENARIO.split("[matrix]")[0])
    known = ["3.49.2", "3.50.0", "3.50.4", "3.51.0", "3.51.2", "3.51.3", "3.53.0", "3.54.1"]
    asked = []

    def runner(scen, folder, **_):
        version = scen.sqlite.version
        asked.append(version)
        damaged = version < "3.51.3"
        cell = {"runs": 2, "corrupt": 0, "lost": 2 if damaged else 0, "errors": 0, "clean": 0 if damaged else 2,
                "time_to_first_failure_s": 0.5 if damaged else None, "results": []}
        return {"cells": [cell]}

    lines = []
    state = bisect_versions(scenario, "3.50.0..3.54.1", out_dir=tmp_path / "b", say=lines.append,
                            runner=runner, known_versions=known)
    assert state["first_changed"] == "3.51.3" and state["last_unchanged"] == "3.51.2"
    assert asked[:2] == ["3.50.0", "3.54.1"] and len(asked) <= 4
    assert BACKPORT_NOTE in lines and any("3.50.7" in line for line in lines)
    saved = json.loads((tmp_path / "b" / "bisect.json").read_text())
    assert [t["version"] for t in saved["tried"]] == sorted(set(asked), key=lambda v: tuple(map(int, v.split("."))))
    assert saved["range_includes_backports"] == ["3.50.7"]
