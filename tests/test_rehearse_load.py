"""How `dbkit migrate rehearse --load` cuts the clients' operations into windows (pure: no database)."""

from __future__ import annotations

import pytest

from dbkit.migrate._rehearse_load import windows

pytestmark = pytest.mark.unit

SPANS = [("baseline", 0.0, 1.0), ("0007", 2.0, 4.0), ("0008", 4.01, 4.05)]


def test_a_stall_belongs_to_the_revision_it_spent_its_time_in():
    """An operation blocked by 0007's lock ends just after 0007 commits, a little into 0008 (a busy machine
    wakes it late): its 1.9 s is 0007's stall, not 0008's, though both windows count the operation."""
    samples = [(0.1, 0.01, True, 1), (0.5, 0.02, True, 1),  # baseline
               (2.1, 1.93, True, 1),                         # waits for 0007's lock, ends at 4.03
               (4.03, 0.01, True, 1)]                        # a normal operation during 0008
    base, hold, quick = windows(samples, SPANS)
    assert (base.ops, base.longest_stall_s) == (2, 0.02)
    assert (hold.ops, hold.longest_stall_s) == (1, 1.93)
    assert (quick.ops, quick.longest_stall_s) == (2, 0.01)  # overlapped by the long one, not blamed for it
    assert quick.p99_ms == 1930.0  # the percentiles still see every operation that overlapped the window


def test_windows_without_operations_and_ties():
    assert [w.longest_stall_s for w in windows([], SPANS)] == [None, None, None]
    tie = [(3.9, 0.2, False, 1)]  # 0.1 s in 0007, 0.05 s in the gap and 0008: 0007
    base, hold, quick = windows(tie, SPANS)
    assert (hold.errors, hold.longest_stall_s, hold.p50_ms) == (1, 0.2, None)  # a failed operation has no latency
    assert quick.longest_stall_s is None and quick.errors == 1
    even = windows([(1.0, 2.0, True, 1)], [("a", 0.0, 2.0), ("b", 2.0, 4.0)])  # 1 s in each: the earlier one
    assert [w.longest_stall_s for w in even] == [2.0, None]


def test_rows_are_summed_per_window_and_a_load_that_read_none_is_called_out():
    from dbkit.migrate._rehearse_report import NO_ROWS, RehearsalReport, markdown

    samples = [(0.1, 0.01, True, 20), (0.5, 0.02, True, 1), (2.1, 0.1, True, 3), (2.5, 0.1, False, 0)]
    base, hold, quick = windows(samples, SPANS)
    assert (base.rows, hold.rows, quick.rows) == (21, 3, 0)

    def report(load):
        return RehearsalReport("app", "scratch", "clone", "head", ["0006"], ["0007"], 0, 5.0, load_clients=2,
                               load=load)

    assert "| baseline | 2 | 21 | 0 |" in markdown(report(windows(samples, SPANS)))
    assert NO_ROWS not in markdown(report(windows(samples, SPANS)))
    assert NO_ROWS in markdown(report(windows([(0.1, 0.01, True, 0)], SPANS)))
