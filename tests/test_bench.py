"""The overhead benchmark runs both loops on a real database and records every harness transaction."""

import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from walstress.bench import measure_overhead


def test_overhead_benchmark_measures_both_loops(cache_dir):
    result = measure_overhead(pages=300, transactions=20, blocks=2, cache_dir=cache_dir)
    assert len(result["bare_tx_per_s"]) == len(result["harness_tx_per_s"]) == 2
    assert min(result["bare_tx_per_s"] + result["harness_tx_per_s"]) > 0
    # the harness side really went through the writer role: one history record per transaction
    assert result["history_records_per_block"] == 20
    assert result["harness_over_bare"] > 0


def test_ledger_api_benchmark_measures_the_three_loops(cache_dir):
    from walstress.bench import measure_ledger_api

    result = measure_ledger_api(transactions=20, blocks=3, cache_dir=cache_dir)
    loops = (result["bare_tx_per_s"], result["recorded_tx_per_s"], result["ledger_api_tx_per_s"])
    assert [len(rates) for rates in loops] == [3, 3, 3] and min(map(min, loops)) > 0
    assert result["ledger_lines"] == 2 * 20 * 3  # a P and an A line per transaction of the ledgered loop only
    bare, recorded, ledgered = map(statistics.median, loops)
    assert result["ledger_api_over_recorded"] == pytest.approx(ledgered / recorded, abs=0.0005)
    assert result["ledger_api_over_bare"] == pytest.approx(ledgered / bare, abs=0.0005)
    cpu = result["cpu_us_per_tx"]
    assert result["cpu_us_added_by_the_ledger"] == pytest.approx(cpu["ledger"] - cpu["recorded"], abs=0.011)


def test_rotate_turns_the_order_of_every_side_block_by_block():
    from walstress.bench.overhead import alternate, rotate

    seen: list[str] = []

    def side(name: str):
        return lambda block: seen.append(f"{name}{block}") or float(block)

    figures = rotate(3, side("a"), side("b"), side("c"))
    assert seen == ["a0", "b0", "c0", "b1", "c1", "a1", "c2", "a2", "b2"]
    assert figures == [[0.0, 1.0, 2.0]] * 3
    seen.clear()
    alternate(2, side("x"), side("y"))
    assert seen == ["x0", "y0", "y1", "x1"]


def test_lock_watch_benchmark_runs_it_on_and_off(cache_dir):
    from walstress.bench import measure_lock_watch

    result = measure_lock_watch(seconds=1.5, blocks=2, pages=300, cache_dir=cache_dir)
    assert result["workers"] == 8 and result["blocks"] == 2
    assert result["commits_per_s_on"] > 0 and result["commits_per_s_off"] > 0
    # the "on" runs had the watch (its own CPU time over its wall time), the "off" runs did not
    assert 0 < result["core_share_median"] <= result["core_share_max"] < 1
    assert result["on_over_off"] > 0


# ------------------------------------------------------------------ walstress bench, tiny
@pytest.fixture(scope="module")
def bench_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
def test_every_benchmark_measures_walstress_and_its_baseline(number, cache_dir, bench_root):
    from walstress.bench.suite import SIZES, format_row, markdown, run_suite

    result = run_suite("tiny", only=[number], cache_dir=cache_dir, root=bench_root)
    rows = result["rows"]
    assert rows and all(row["number"] == number for row in rows)
    assert result["machine"]["cores"] >= 1 and result["size"] == "tiny"
    for row in rows:
        assert format_row(row) and row["goal"] and row["unit"]
        if row["note"].startswith("not "):
            # not reproduced in a tiny run, or an SQLite version that cannot be installed here: said, not hidden
            assert number == 8 and not row["walstress"], row
            continue
        assert row["walstress"] and min(row["walstress"]) > 0, row
        if row["base"]:   # the ratio of the medians, as rounded to three places
            assert row["ratio"] == pytest.approx(statistics.median(row["walstress"]) / statistics.median(row["base"]),
                                                 abs=0.0005), row
    assert f"| {number} |" in markdown(result)
    if number == 11:   # the default keeps no clean run's database: less on disk than --keep all
        (row,) = rows
        assert row["walstress"][0] < row["base"][0], row
    if number == 12:   # a P and an A line per ledgered transaction; the ledgered loop against two baselines
        ledger, everything = rows
        assert ledger["detail"]["ledger_lines"] == 2 * 20 * 2, ledger
        assert min(ledger["detail"]["cpu_us_per_tx"].values()) > 0 and ledger["meets"] is not None, ledger
        assert ledger["walstress"] == everything["walstress"] and ledger["base"] != everything["base"]
        assert everything["meets"] is None and everything["ratio"] is not None, everything
    assert SIZES["tiny"].keys() == SIZES["full"].keys()


def test_bench_cli_rejects_bad_input(tmp_path):
    for args, words in ((["--only", "1,x"], "--only"), (["--only", "13"], "no benchmark 13"),
                        (["--size", "huge"], "invalid choice")):
        result = subprocess.run([sys.executable, "-m", "walstress", "bench", *args, "--out", str(tmp_path)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and words in result.stderr, (args, result.stderr)
