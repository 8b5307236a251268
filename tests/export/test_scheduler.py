from pathlib import Path

from rawexport.catalog import Catalog
from rawexport.export.scheduler import due_hours, plan_due
from rawexport.settings import Settings
from rawexport.timeutil import DAY_MS, HOUR_MS

T0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS  # an hour start


def test_due_hours_respect_enablement_grace_and_retention(tmp_path: Path) -> None:
    c = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    p = c.create_project("a", export_since_ms=T0 + 30 * 60_000)  # enabled at hh:30
    now = T0 + 3 * HOUR_MS + 1000  # 1 s after the close of hour T0+2h
    assert due_hours(p, now, grace_ms=5000) == [T0 + HOUR_MS]
    assert due_hours(p, now + 5000, grace_ms=5000) == [T0 + HOUR_MS, T0 + 2 * HOUR_MS]
    old = c.create_project("b", export_since_ms=T0 - 100 * DAY_MS, retention_days=2)
    hours = due_hours(old, now, 0)
    # retained while now < h + 2 days: T0-45h closed its retention 1 s ago
    assert hours[0] == T0 - 44 * HOUR_MS and hours[-1] == T0 + 2 * HOUR_MS
    assert len(hours) == 47
    off = c.create_project("c", export_enabled=False)
    assert due_hours(off, now, 0) == []
    c.close()


def test_plan_due_catches_up_once(tmp_path: Path) -> None:
    c = Catalog(f"sqlite:///{tmp_path / 'c.db'}")
    c.create_project("a", export_since_ms=T0)
    c.create_project("b", export_since_ms=T0, v1_enabled=False)
    s = Settings(home=tmp_path, grace_seconds=0)
    now = T0 + 3 * HOUR_MS
    assert plan_due(c, s, now) == 3 * 17 + 3 * 10
    assert plan_due(c, s, now) == 0
    assert plan_due(c, s, now + HOUR_MS) == 17 + 10
    c.close()
