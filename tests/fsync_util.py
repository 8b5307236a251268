"""Recording the order of os.fsync and os.replace calls, for durability tests.

A test that kills a process keeps the page cache, so it passes without fsync; these tests
instead check that what is acknowledged was fsynced (data and directory) before the ack.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest


class Recorder:
    """os.fsync (by path, files and directories) and os.replace calls, in order, from any
    thread; an entry is added once the call returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd: int) -> None:
            path = os.path.realpath(os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)
            self.add("fsync", path)

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            real_replace(src, dst)
            self.add("replace", os.path.realpath(src), os.path.realpath(dst))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)

    def add(self, kind: str, a: str = "", b: str = "") -> None:
        with self._lock:
            self.events.append((kind, a, b))

    def index(self, kind: str, a: str = "", b: str = "", after: int = -1) -> int:
        """The first matching event after index after; AssertionError when there is none."""
        for i in range(after + 1, len(self.events)):
            if self.events[i] == (kind, a, b) or (kind == "replace" and self.events[i][2] == b):
                return i
        raise AssertionError(f"no {kind} {a} {b} after event {after}: {self.events[-8:]}")

    def durable(self, target: Path) -> tuple[int, int]:
        """(rename, directory fsync) of the file that became target, checking its data was
        fsynced before the rename and the directory after it."""
        dst = os.path.realpath(target)
        i = self.index("replace", b=dst)
        src = self.events[i][1]
        assert any(e == ("fsync", src, "") for e in self.events[:i]), f"{src} not fsynced"
        return i, self.index("fsync", os.path.dirname(dst), after=i)
