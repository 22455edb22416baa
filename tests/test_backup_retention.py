"""Retention (`dbkit backup prune`): which complete backups are kept, and which leftovers are removed."""

import random
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dbkit.backup._retention import BackupRef, Plan, choose, incomplete_to_remove
from dbkit.errors import ConfigError

pytestmark = pytest.mark.unit


def ref(when: datetime, n: int = 0) -> BackupRef:
    return BackupRef(f"{when.astimezone(UTC):%Y%m%dT%H%M%SZ}-{n:04x}", when)


def at(day: date, hour: int = 2, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def kept(plan: Plan) -> dict[str, tuple[str, ...]]:
    return dict(plan.keep)


# -- scenarios ----------------------------------------------------------------------------------------------


def two_months():
    """Every other day at 02:00 from Sep 2 to Oct 30, 2026; the week of Oct 19 failed entirely;
    Oct 30 has two more and Oct 12 one more (manual runs): 30 backups."""
    days = [date(2026, 9, 2) + timedelta(days=2 * i) for i in range(30)]
    days = [d for d in days if d not in (date(2026, 10, 20), date(2026, 10, 22), date(2026, 10, 24))]
    backups = [ref(at(d)) for d in days]
    backups += [ref(at(date(2026, 10, 30), 14), 1), ref(at(date(2026, 10, 30), 20), 2),
                ref(at(date(2026, 10, 12), 18), 3)]
    assert len(backups) == 30
    return backups


def test_two_months_with_gaps_and_several_per_day():
    backups = two_months()
    random.Random(3).shuffle(backups)
    plan = choose(backups, keep_last=2, keep_daily=7, keep_weekly=4, keep_monthly=3,
                  now=datetime(2026, 10, 31, 6, tzinfo=UTC))
    assert plan.keep == [
        ("20261030T200000Z-0002", ("last", "daily 2026-10-30", "weekly 2026-W44", "monthly 2026-10")),
        ("20261030T140000Z-0001", ("last",)),
        ("20261028T020000Z-0000", ("daily 2026-10-28",)),
        ("20261026T020000Z-0000", ("daily 2026-10-26",)),
        # the failed week 43 uses up no daily or weekly slot
        ("20261018T020000Z-0000", ("daily 2026-10-18", "weekly 2026-W42")),
        ("20261016T020000Z-0000", ("daily 2026-10-16",)),
        ("20261014T020000Z-0000", ("daily 2026-10-14",)),
        ("20261012T180000Z-0003", ("daily 2026-10-12",)),
        ("20261010T020000Z-0000", ("weekly 2026-W41",)),
        ("20261004T020000Z-0000", ("weekly 2026-W40",)),
        # only two months have backups: keep_monthly=3 keeps both
        ("20260930T020000Z-0000", ("monthly 2026-09",)),
    ]
    assert len(plan.delete) == 19
    assert plan.delete[0] == "20261030T020000Z-0000"  # older backups of kept days go
    assert "20261012T020000Z-0000" in plan.delete
    assert plan.delete[-1] == "20260902T020000Z-0000"
    assert plan.delete == sorted(plan.delete, reverse=True)


def test_failed_days_do_not_use_up_daily_slots():
    days = [date(2026, 11, d) for d in (1, 2, 4, 7, 8)]  # 3, 5 and 6 failed
    plan = choose([ref(at(d)) for d in days], keep_daily=4, now=at(date(2026, 11, 9)))
    assert [k[:8] for k in plan.kept_ids] == ["20261108", "20261107", "20261104", "20261102"]
    assert plan.delete == ["20261101T020000Z-0000"]


def test_several_per_day_keep_the_newest_of_each_day():
    day = date(2026, 11, 8)
    backups = [ref(at(day, 1)), ref(at(day, 9)), ref(at(day, 17)), ref(at(date(2026, 11, 7), 23))]
    plan = choose(backups, keep_daily=2, now=at(date(2026, 11, 9)))
    assert plan.keep == [("20261108T170000Z-0000", ("daily 2026-11-08",)),
                         ("20261107T230000Z-0000", ("daily 2026-11-07",))]
    assert plan.delete == ["20261108T090000Z-0000", "20261108T010000Z-0000"]


def test_buckets_are_utc_and_iso_weeks():
    plus5 = timezone(timedelta(hours=5))
    # 02:00 on Monday Nov 23 at +05:00 is Sunday Nov 22 21:00 UTC: same UTC day and ISO week as the other
    sunday = BackupRef("a", datetime(2026, 11, 22, 10, tzinfo=UTC))
    late = BackupRef("b", datetime(2026, 11, 23, 2, tzinfo=plus5))
    plan = choose([sunday, late], keep_daily=5, keep_weekly=5, now=datetime(2026, 12, 1, tzinfo=UTC))
    assert plan.keep == [("b", ("daily 2026-11-22", "weekly 2026-W47"))]
    assert plan.delete == ["a"]
    # ISO week 53 of 2026 spans Dec 28 2026 .. Jan 3 2027
    x, y = BackupRef("x", datetime(2026, 12, 29, tzinfo=UTC)), BackupRef("y", datetime(2027, 1, 2, tzinfo=UTC))
    plan = choose([x, y], keep_weekly=2, keep_monthly=2, now=datetime(2027, 2, 1, tzinfo=UTC))
    assert plan.keep == [("y", ("weekly 2026-W53", "monthly 2027-01")), ("x", ("monthly 2026-12",))]


def test_newest_is_kept_whatever_the_parameters_and_future_backups_are_never_deleted():
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    backups = [ref(now - timedelta(days=400 - d)) for d in range(3)]
    plan = choose(backups, keep_monthly=1, now=now)
    assert plan.kept_ids == [backups[-1].id]
    ahead = ref(now + timedelta(minutes=5), 9)  # another machine's clock is ahead
    plan = choose(backups + [ahead], keep_last=1, now=now)
    assert plan.keep == [(ahead.id, ("last", "finished after now"))]


def test_ties_are_ordered_by_id_and_output_is_deterministic():
    t = datetime(2026, 11, 21, tzinfo=UTC)
    backups = [BackupRef(i, t) for i in ("c", "a", "b")]
    plans = {repr(choose(random.Random(s).sample(backups, 3), keep_last=1, now=t)) for s in range(10)}
    assert len(plans) == 1
    assert choose(backups, keep_last=1, now=t) == Plan(keep=[("c", ("last",))], delete=["b", "a"])


def test_empty_input_is_an_empty_plan():
    assert choose([], keep_last=3, now=datetime.now(UTC)) == Plan(keep=[], delete=[])


@pytest.mark.parametrize("kwargs, message", [
    ({}, r"^prune needs at least one --keep-\* option .* every backup; example: dbkit backup prune --keep-last"),
    ({"keep_last": 0, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}, r"^prune needs at least one"),
    ({"keep_daily": -1, "keep_last": 3}, r"^--keep-daily must be 0 or more, got -1"),
    ({"keep_weekly": 1.5}, r"^--keep-weekly must be a whole number, got 1.5"),
])
def test_parameters_are_validated(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        choose([ref(datetime(2026, 1, 1, tzinfo=UTC))], now=datetime(2026, 1, 2, tzinfo=UTC), **kwargs)
    assert info.value.exit_code == 2


def test_programming_errors():
    t = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="listed twice"):
        choose([BackupRef("a", t), BackupRef("a", t)], keep_last=1, now=t)
    with pytest.raises(ValueError, match="timezone-aware"):
        choose([BackupRef("a", datetime(2026, 1, 1))], keep_last=1, now=t)


# -- properties ---------------------------------------------------------------------------------------------

times = st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(UTC))
backup_lists = st.lists(times, max_size=60).map(lambda ts: [ref(t, i) for i, t in enumerate(ts)])
counts = st.integers(0, 12)


def buckets(t: datetime):
    return {"daily": t.date().isoformat(), "weekly": "%d-W%02d" % t.isocalendar()[:2], "monthly": f"{t:%Y-%m}"}


@given(backup_lists, counts, counts, counts, counts)
def test_properties(backups, last, daily, weekly, monthly):
    if not (last or daily or weekly or monthly):
        last = 1
    now = datetime(2027, 1, 1, tzinfo=UTC)
    plan = choose(backups, keep_last=last, keep_daily=daily, keep_weekly=weekly, keep_monthly=monthly, now=now)
    ids = [b.id for b in backups]
    newest_first = [b.id for b in sorted(backups, key=lambda b: (b.finished_at, b.id), reverse=True)]

    # keep and delete partition the input, both newest first
    assert sorted(plan.kept_ids + plan.delete) == sorted(ids)
    assert not set(plan.kept_ids) & set(plan.delete)
    assert [i for i in newest_first if i in set(plan.kept_ids)] == plan.kept_ids
    assert [i for i in newest_first if i in set(plan.delete)] == plan.delete
    # the newest is always kept; keep_last=N keeps the N newest
    if backups:
        assert plan.kept_ids[0] == newest_first[0]
    assert set(newest_first[:last]) <= set(plan.kept_ids)
    assert all(reasons for _, reasons in plan.keep)

    # independent model: for each rule, the newest backup of each of the N newest buckets that have backups
    by_id = {b.id: b for b in backups}
    expected = set(newest_first[:last])
    for rule, n in (("daily", daily), ("weekly", weekly), ("monthly", monthly)):
        newest_of: dict[str, str] = {}
        for i in newest_first:
            newest_of.setdefault(buckets(by_id[i].finished_at)[rule], i)
        chosen = sorted(newest_of.items(), reverse=True)[:n]
        expected |= {i for _, i in chosen}
        # a backup kept by a rule is the newest of its bucket, and the rule keeps min(n, buckets) backups
        reasons = [(i, r) for i, rs in plan.keep for r in rs if r.startswith(rule + " ")]
        assert len(reasons) == min(n, len(newest_of))
        for i, r in reasons:
            assert r == f"{rule} {buckets(by_id[i].finished_at)[rule]}"
            assert newest_of[r.split(" ", 1)[1]] == i
    assert set(plan.kept_ids) == expected


# -- incomplete leftovers -----------------------------------------------------------------------------------


def test_incomplete_leftovers_older_than_a_day_are_removed_newest_first():
    now = datetime(2026, 11, 21, 12, tzinfo=UTC)
    prefixes = [
        ("20261118T020000Z-aaaa", datetime(2026, 11, 18, 2, 30, tzinfo=UTC)),   # failed 3 days ago
        ("20261120T020000Z-bbbb", datetime(2026, 11, 20, 2, 5, tzinfo=UTC)),    # failed 34 h ago
        ("20261121T020000Z-cccc", datetime(2026, 11, 21, 2, 5, tzinfo=UTC)),    # maybe still running
        ("20261119T020000Z-dddd", datetime(2026, 11, 21, 11, 0, tzinfo=UTC)),   # still being written
        ("20261125T020000Z-eeee", datetime(2026, 11, 1, tzinfo=UTC)),           # id from a clock ahead
        ("notes", datetime(2020, 1, 1, tzinfo=UTC)),                             # not dbkit's folder
        ("20261118T020000Z-aaaa", datetime(2026, 11, 18, 3, tzinfo=UTC)),       # listed twice
    ]
    assert incomplete_to_remove(prefixes, now) == ["20261120T020000Z-bbbb", "20261118T020000Z-aaaa"]
    assert incomplete_to_remove(prefixes, now, min_age=timedelta(days=2)) == ["20261118T020000Z-aaaa"]
    assert incomplete_to_remove([], now) == []


def test_incomplete_rejects_bad_arguments():
    with pytest.raises(ValueError, match="min_age"):
        incomplete_to_remove([], datetime.now(UTC), min_age=timedelta(hours=-1))
    with pytest.raises(ValueError, match="timezone-aware"):
        incomplete_to_remove([], datetime(2026, 1, 1))


def test_min_keep_is_a_floor():
    from datetime import UTC, datetime, timedelta

    from dbkit.backup._retention import BackupRef, choose

    now = datetime(2026, 11, 21, tzinfo=UTC)
    refs = [BackupRef(f"2026112{i}T000000Z-000{i}", now - timedelta(hours=i)) for i in range(5)]
    plan = choose(refs, keep_monthly=1, min_keep=3, now=now)
    assert [i for i, _ in plan.keep] == [refs[0].id, refs[1].id, refs[2].id]
    assert dict(plan.keep)[refs[1].id] == ("min-keep",)
    with pytest.raises(ConfigError, match="--min-keep must be 1 or more"):
        choose(refs, keep_last=1, min_keep=0, now=now)
