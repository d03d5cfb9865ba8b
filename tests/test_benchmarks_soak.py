"""The soak and sharing-the-cores benchmarks' arithmetic, on hand-made traces."""

import json
import os

import pytest

from benchmarks.sharing_cores import iteration_seconds
from benchmarks.soak import finished_iterations, growth, rss_mib
from parrot_base.cli import UsageError


def test_growth_compares_the_medians_of_the_window_after_warm_up_and_the_last_window():
    # iterations 0–9: warm-up (ignored), 10–19: ~100 MiB, 20–29: middle, 30–39: ~104 MiB
    samples = [(i, 500.0) for i in range(10)] + [(i, 100.0 + (i % 3)) for i in range(10, 20)]
    samples += [(i, 120.0) for i in range(20, 30)] + [(i, 104.0) for i in range(30, 40)]
    result = growth(samples, warmup=10, window=10, iterations=40)
    assert result["rss_after_warmup_mib"] == 101.0  # median of three 100s, four 101s, three 102s
    assert result["rss_end_mib"] == 104.0
    assert result["growth"] == pytest.approx(3.0 / 101.0)
    assert result["rss_peak_mib"] == 500.0
    with pytest.raises(UsageError, match="no RSS sample in a window"):
        growth(samples[:15], warmup=10, window=10, iterations=40)


def test_rss_of_this_process_and_of_a_gone_one(tmp_path):
    assert 10.0 < rss_mib(os.getpid()) < 1e6
    assert rss_mib(2**22 + 12345) is None  # above the kernel's pid limit: no such process
    assert finished_iterations(tmp_path) == 0
    (tmp_path / "curves.jsonl").write_text('{"iteration": 1}\n{"iteration": 2}\n\n', encoding="utf-8")
    assert finished_iterations(tmp_path) == 2


def test_iteration_seconds_read_in_order_from_the_run_curves(tmp_path):
    lines = [{"iteration": i, "time/iteration_s": s} for i, s in ((1, 9.5), (2, 7.25), (3, 8.0))]
    (tmp_path / "curves.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    assert iteration_seconds(tmp_path) == [9.5, 7.25, 8.0]


def test_a_stopped_child_command_is_reported_by_its_last_line():
    from parrot_base.cli import last_line

    assert last_line("progress 1/2\n\nerror: unknown option --bogus\n\n") == "error: unknown option --bogus"
    assert last_line("") == "(no output)"
