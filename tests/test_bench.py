"""The overhead benchmark runs both loops on a real database and records every harness transaction."""

from walstress.bench import measure_overhead


def test_overhead_benchmark_measures_both_loops(cache_dir):
    result = measure_overhead(pages=300, transactions=20, blocks=2, cache_dir=cache_dir)
    assert len(result["bare_tx_per_s"]) == len(result["harness_tx_per_s"]) == 2
    assert min(result["bare_tx_per_s"] + result["harness_tx_per_s"]) > 0
    # the harness side really went through the writer role: one history record per transaction
    assert result["history_records_per_block"] == 20
    assert result["harness_over_bare"] > 0


def test_ledger_api_benchmark_measures_both_loops(cache_dir):
    from walstress.bench import measure_ledger_api

    result = measure_ledger_api(transactions=20, blocks=2, cache_dir=cache_dir)
    assert len(result["bare_tx_per_s"]) == len(result["ledger_api_tx_per_s"]) == 2
    assert result["ledger_lines"] == 2 * 20 * 2  # a P and an A line per transaction of the ledgered loop
    assert result["ledger_api_over_bare"] > 0


def test_lock_watch_benchmark_runs_it_on_and_off(cache_dir):
    from walstress.bench import measure_lock_watch

    result = measure_lock_watch(seconds=1.5, blocks=2, pages=300, cache_dir=cache_dir)
    assert result["workers"] == 8 and result["blocks"] == 2
    assert result["commits_per_s_on"] > 0 and result["commits_per_s_off"] > 0
    # the "on" runs had the watch (its own CPU time over its wall time), the "off" runs did not
    assert 0 < result["core_share_median"] <= result["core_share_max"] < 1
    assert result["on_over_off"] > 0
