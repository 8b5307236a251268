"""Tests that look into the local event store's directory."""

from rawexport.store import EventStore, LocalEventStore


def local(store: EventStore) -> LocalEventStore:
    """store, which these tests set up on a local directory (the default events_url)."""
    assert isinstance(store, LocalEventStore)
    return store
