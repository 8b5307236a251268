"""The SDK collectors' links in the catalog, on SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

from rawexport.catalog import Catalog, Link


def test_links_written_found_by_time_and_swept(catalog: Catalog) -> None:
    key = "ab" * 16
    catalog.add_links(
        [
            Link("a" * 16, "page", key, 100),
            Link("a" * 16, "page", key, 300),
            Link("a" * 16, "login", key, 200, "visitor-ü", "session"),
            Link("b" * 16, "page", key, 150),
        ],
        now=1_000,
    )
    catalog.add_links([], now=1_001)
    assert catalog.latest_link("a" * 16, "page", key, 250) == Link("a" * 16, "page", key, 100)
    assert catalog.latest_link("a" * 16, "page", key, None) == Link("a" * 16, "page", key, 300)
    assert catalog.latest_link("a" * 16, "page", key, 99) is None
    assert catalog.latest_link("a" * 16, "login", key, None) == Link(
        "a" * 16, "login", key, 200, "visitor-ü", "session"
    )
    assert catalog.latest_link("c" * 16, "page", key, None) is None
    generation = catalog.generation
    catalog.add_links([Link("a" * 16, "page", "cd" * 16, 5)], now=2_000)
    assert catalog.generation == generation  # links drop no cache of catalog reads
    assert catalog.delete_links_before(1_500) == 4
    assert catalog.latest_link("a" * 16, "page", key, None) is None
    assert catalog.latest_link("a" * 16, "page", "cd" * 16, None) is not None


def test_links_the_catalog_could_not_take_are_kept_and_the_failure_counted() -> None:
    """The links flusher: a write that fails keeps its links for the next pass, and the
    failure is counted (Periodic's on_error); once the catalog answers, all are written."""
    import threading
    import time

    from rawexport.catalog.links import Link
    from rawexport.ingest.joins import Shared

    written: list[Link] = []
    failures: list[int] = []
    fail = {"left": 2}
    done = threading.Event()

    class Flaky:
        def add_links(self, links: list[Link], now: int) -> None:
            if fail["left"]:
                fail["left"] -= 1
                raise OSError("the catalog is restarting")
            written.extend(links)
            done.set()

        def delete_links_before(self, created_ms: int) -> int:
            return 0

        def latest_link(self, ai: str, kind: str, key: str, at_most: int | None) -> None:
            return None

    shared = Shared(Flaky(), flush_seconds=0.01, on_error=lambda: failures.append(1))  # type: ignore[arg-type]
    links = [Link("a" * 16, "page", f"{i:032x}", i) for i in range(3)]
    for link in links:
        shared.queue(link)
    assert done.wait(10)
    time.sleep(0.05)
    assert written == links and len(failures) == 2
    assert shared._loop is not None
    shared._loop.stop(5)
