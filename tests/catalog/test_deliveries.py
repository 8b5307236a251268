"""Deliveries in the catalog, on SQLite and PostgreSQL: planned once per revision, claimed
by one claimer at a time (as on several nodes), fenced by their attempt count."""

from __future__ import annotations

import threading

import pytest

from rawexport.catalog import Catalog, Delivery, LeaseLost
from rawexport.types import ExportResult

H = 3_600_000


def finished_hours(catalog: Catalog, hours: int) -> int:
    """A project whose `page` hours 0..hours-1 have a finished revision 1; its id."""
    p = catalog.create_project("p", export_since_ms=0)
    catalog.plan(p.id, "v2", ["page"], [h * H for h in range(hours)], 0)
    while (job := catalog.claim("exporter", 1, 60_000)) is not None:
        catalog.complete(job, "exporter", ExportResult("x", "x/_manifest.json", [], 0, 0), 2)
    return p.id


def destination(catalog: Catalog, project_id: int, name: str = "lake") -> int:
    return catalog.create_destination(
        project_id,
        name,
        kind="dir",
        format="csv",
        key_template="{data_type}/{revision}/",
        config={"location": "/tmp/x", "versions": ["v2"]},
        credentials=None,
        start_hour_ms=0,
        now=0,
    ).id


def test_a_revision_is_planned_once_per_destination(catalog: Catalog) -> None:
    project = finished_hours(catalog, 3)
    lake = destination(catalog, project)
    assert catalog.plan_deliveries(10) == 3
    assert catalog.plan_deliveries(11) == 0  # once
    destination(catalog, project, "other")
    assert catalog.plan_deliveries(12) == 3  # a new destination gets every hour since its start
    catalog.pause_destination(lake, "by hand", 13)
    assert catalog.plan_deliveries(14) == 0


def test_concurrent_claimers_take_each_delivery_exactly_once(catalog_url: str) -> None:
    """Claimers on separate connections (as on separate nodes) race for one queue."""
    setup = Catalog(catalog_url)
    project = finished_hours(setup, 12)
    destination(setup, project)
    assert setup.plan_deliveries(10) == 12
    catalogs = [Catalog(catalog_url, run_migrations=False) for _ in range(4)]
    start = threading.Barrier(len(catalogs))
    taken: list[list[int]] = [[] for _ in catalogs]

    def work(i: int) -> None:
        start.wait()
        while (d := catalogs[i].claim_delivery(f"n{i}", 20, 60_000)) is not None:
            taken[i].append(d.id)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(catalogs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    ids = [d for mine in taken for d in mine]
    assert len(ids) == 12 and len(set(ids)) == 12
    for c in [setup, *catalogs]:
        c.close()


def test_a_claim_after_the_lease_ran_out_fences_the_first(catalog: Catalog) -> None:
    project = finished_hours(catalog, 1)
    destination(catalog, project)
    catalog.plan_deliveries(10)
    first = catalog.claim_delivery("a", 20, 1000)
    assert isinstance(first, Delivery) and first.attempts == 1
    assert catalog.claim_delivery("b", 500, 1000) is None  # held
    second = catalog.claim_delivery("b", 1021, 1000)  # the lease ran out
    assert second is not None and (second.id, second.attempts) == (first.id, 2)
    assert not catalog.renew_delivery(first, "a", 1022, 1000)
    with pytest.raises(LeaseLost):
        catalog.complete_delivery(
            first, "a", location="x/", files=0, rows=0, size=0, superseded=[], now=1023
        )
    catalog.complete_delivery(
        second, "b", location="x/", files=0, rows=0, size=0, superseded=[], now=1024
    )
    done = catalog.delivery(first.id)
    assert done is not None and (done.status, done.attempts) == ("delivered", 2)
