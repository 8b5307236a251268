"""Connections waiting on their client, the longest silent first: api/limits.py closes the
first of them to make room for a new connection when all slots are taken.

Two queues, each in the order its connections were last heard from: kept-alive ones idle
between requests (the cheapest to drop: nothing is in progress), then those inside a
request's headers or body, waiting for its bytes. A connection leaves them while the
server, not its client, has the next move (the app processes a request, a response is
being sent, reading is paused); the protocol puts it back when the client has the move
again. Every step is O(1): a new connection that finds no room costs at most the
connections dropped from the front because they no longer wait on their client, each
of which was put there once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


class Waiting(Generic[C]):
    """The connections of one server that wait on their client, with the loop time each
    was last heard from."""

    def __init__(self) -> None:
        self._idle: OrderedDict[C, float] = OrderedDict()
        self._inside: OrderedDict[C, float] = OrderedDict()
        self.evicted = 0  # connections closed to make room, for the debug log

    def __len__(self) -> int:
        return len(self._idle) + len(self._inside)

    def __contains__(self, conn: C) -> bool:
        return conn in self._inside or conn in self._idle

    def inside(self, conn: C, now: float) -> None:
        """conn waits for (more of) a request's headers or body since `now`."""
        self._idle.pop(conn, None)
        self._inside[conn] = now
        self._inside.move_to_end(conn)

    def idle(self, conn: C, now: float) -> None:
        """conn is kept alive between requests since `now`."""
        self._inside.pop(conn, None)
        self._idle[conn] = now
        self._idle.move_to_end(conn)

    def heard(self, conn: C, now: float) -> None:
        """conn's client sent bytes of its request: to the end of the queue."""
        if conn in self._inside:
            self._inside[conn] = now
            self._inside.move_to_end(conn)

    def forget(self, conn: C) -> None:
        """The server has the next move, or conn is closed."""
        self._inside.pop(conn, None)
        self._idle.pop(conn, None)

    def oldest(self, waits: Callable[[C], bool]) -> tuple[C, float] | None:
        """Takes the idle connection silent the longest, else the one inside a request:
        (it, when it was last heard from), or None. Connections found no longer waiting
        (`waits` is false) are dropped on the way."""
        for queue in (self._idle, self._inside):
            while queue:
                conn, since = queue.popitem(last=False)
                if waits(conn):
                    return conn, since
        return None
