"""Tests that look into the local event store's directory."""

from rawexport.store.events import EventStore
from rawexport.store.objects import Events


def local(store: Events) -> EventStore:
    """store, which these tests set up on a local directory (the default events_url)."""
    assert isinstance(store, EventStore)
    return store
