"""File-system helpers: fsync and private files for the stores, and paths kept out of what
clients are shown."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes its new entries durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (0600 whatever the umask), replacing it whole."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing tmp file keeps its mode otherwise
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def create_private(path: Path) -> None:
    """Create an empty file readable by its owner only, unless it exists already."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


# An absolute path (two segments or more, perhaps as a file:// URL or under ~), not a part
# of a URL (`s3://b/k`, `http://h/p`) or of a relative key (`p/part-0.csv.gz`).
_SEGMENT = r"[^\s'\"`/:,;()<>\[\]{}]+"
_PATH = re.compile(rf"(?<![\w.:/~-])(?:file://|~)?(?:/{_SEGMENT}){{2,}}/?")


def hide_paths(text: str) -> str:
    """text with each absolute file path cut to its last name (`…/x.parquet`): error
    messages shown to clients name the file without telling the server's layout."""
    return _PATH.sub(lambda m: "…/" + m[0].rstrip("/").rsplit("/", 1)[-1], text)
