"""Where an export attempt's tasks run: the protocols, and the runner of this process.

A `Runner` gives the pipeline an executor for an attempt's tasks and says how the work is
cut into tasks; each task reaches what it needs (blob store, temp directory, input files,
scratch) through the `Where` it is given. `LocalRunner` and `LocalWorkspace` are this
process's; `ondask.DaskRunner` and its `Place` are a Dask cluster's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from rawexport.blobs import BlobStore
from rawexport.export.keys import SCRATCH


class Workspace(Protocol):
    """What a task needs where it runs: the blob store its parts go to, a local directory
    for its work files, the hour's input files, and scratch shared by an attempt's tasks."""

    @property
    def blobs(self) -> BlobStore: ...

    @property
    def tmp_dir(self) -> Path: ...

    def inputs(self, work: Path, names: Sequence[str]) -> list[Path]:
        """Local paths of input files named by names (fetched into work if need be)."""
        ...

    def put_scratch(self, key: str, src: Path) -> None:
        """Keep src (a file no longer needed) as scratch object key."""
        ...

    def fetch_scratch(self, key: str, dest: Path) -> None: ...

    def clear_scratch(self, prefix: str) -> None: ...


class Where(Protocol):
    """A task's handle on its workspace: in this process the workspace itself; on a cluster
    a picklable place that each worker process opens once."""

    def workspace(self) -> Workspace: ...


class Runner(Protocol):
    """Where an attempt's tasks run, and how its work is cut into tasks."""

    @property
    def where(self) -> Where: ...

    def slice_rows(self, rows: int) -> int | None:
        """Rows of input per split task of an hour of `rows` rows; None: all in one."""
        ...

    def groups_per_task(self, groups: int) -> int | None:
        """Range groups per group task, of `groups`; None: every group in one task (which
        reads the next group while it sorts this one)."""
        ...

    @property
    def fetches_inputs(self) -> bool:
        """Whether tasks open input files by their event-store object keys."""
        ...

    def executor(self) -> AbstractContextManager[Executor]:
        """An executor for one attempt's tasks, shut down when the attempt ends."""
        ...


@dataclass
class LocalWorkspace:
    """Tasks in this process: input files are local paths, scratch is a local directory."""

    blobs: BlobStore
    tmp_dir: Path

    def workspace(self) -> LocalWorkspace:
        return self

    def inputs(self, work: Path, names: Sequence[str]) -> list[Path]:
        return [Path(n) for n in names]

    def _scratch(self, key: str) -> Path:
        return Path(self.tmp_dir).joinpath(*key.strip("/").split("/"))

    def put_scratch(self, key: str, src: Path) -> None:
        dest = self._scratch(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)  # work directories live in tmp_dir: one file system

    def fetch_scratch(self, key: str, dest: Path) -> None:
        # Moved, not copied: a task in this process runs once, so each scratch file is
        # read once, and its blocks are freed as its group is read (deleting a big hour's
        # spill files at the end would cost the attempt a serial tenth of a second).
        os.replace(self._scratch(key), dest)

    def clear_scratch(self, prefix: str) -> None:
        top = self._scratch(prefix)
        shutil.rmtree(top, ignore_errors=True)
        root = self._scratch(SCRATCH)
        for parent in top.parents:  # the attempt's empty prefix directories
            if not parent.is_relative_to(root):
                break
            try:
                parent.rmdir()
            except OSError:
                break


@dataclass
class LocalRunner:
    """An attempt's tasks in a thread of this process, one at a time (the coordinator's
    thread watches the lease meanwhile): the whole input is one slice, and one task sorts
    every group, reading the next group while it sorts this one."""

    where: LocalWorkspace
    slice_size: int | None = None  # rows per split task (tests cut finer)
    group_size: int | None = None  # groups per group task
    fetches_inputs: bool = field(default=False, init=False)

    def slice_rows(self, rows: int) -> int | None:
        return self.slice_size

    def groups_per_task(self, groups: int) -> int | None:
        return self.group_size

    def executor(self) -> AbstractContextManager[Executor]:
        # Leaving it waits for a task still running (after a lost lease): its scratch and
        # memory are gone when the attempt ends.
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="rawexport-export")
