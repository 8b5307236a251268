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
