"""A local checkpoint file: created whole, appended durably, and locked while a session writes.

The lock is ``flock`` on the checkpoint file itself, taken when the file is created (a new run)
or opened (a resume) and held until the session ends. The kernel releases it when the process
dies, SIGKILL included, so a lock never outlives its writer and there is no stale lock to clear
by hand. A second writer of the same run (a second scan given the same run id, a ``--resume``
while the run is alive) finds it taken and is refused, naming the live writer: the pid and host
that each session records in its first checkpoint line.

Everything is keyed by the checkpoint's path, not by a run id: a run split into shards can give
each shard its own checkpoint, and with it its own lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Sequence
from typing import Any

import orjson

from .._exceptions import ConfigError
from .._localfs import Tree, read_all, write_all


def writer_identity() -> dict[str, Any]:
    """What a checkpoint line records of the process writing it, for a refused second writer."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


class CheckpointFile:
    """A checkpoint file open for appending, locked for as long as it is open."""

    def __init__(self, tree: Tree, relpath: str, fd: int, size: int) -> None:
        self.tree = tree
        self.relpath = relpath
        self._fd = fd
        #: Bytes of whole lines: an append that failed half-way is cut back to this.
        self._size = size

    @property
    def path(self) -> str:
        return str(self.tree.path(self.relpath))

    @classmethod
    def create(cls, tree: Tree, relpath: str, first_line: bytes, mode: int) -> CheckpointFile:
        """A new checkpoint holding ``first_line``, locked; FileExistsError if ``relpath`` is
        taken (by anything, a link included).

        The file is written and locked under a temporary name, then linked to its name: nobody
        can open the checkpoint before it is whole and locked.
        """
        fd, temporary = tree.create_temporary(relpath, mode)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody holds it
                write_all(fd, first_line)
                os.fsync(fd)
                tree.link(temporary, relpath)
            finally:
                tree.unlink(temporary)
        except BaseException:
            os.close(fd)
            raise
        return cls(tree, relpath, fd, len(first_line))

    @classmethod
    def open(cls, tree: Tree, relpath: str) -> tuple[CheckpointFile, bytes]:
        """The existing checkpoint at ``relpath``, locked, and its bytes.

        Refused (:class:`ConfigError`) while another process holds it, naming that process.
        """
        fd = tree.open(relpath, os.O_RDWR | os.O_APPEND, create_dirs=False)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise busy(tree, relpath, read_all(fd)) from None
            data = read_all(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(tree, relpath, fd, len(data)), data

    def truncate(self, size: int) -> None:
        """Cut the file back to ``size`` bytes (a torn last line), durably."""
        if size == self._size:
            return
        os.ftruncate(self._fd, size)
        os.fsync(self._fd)
        self._size = size

    def append(self, parts: Sequence[bytes | memoryview]) -> None:
        """Append whole lines, given in ``parts``, and fsync: a commit is only a commit once it
        is on disk. (Parts, so that a large entry need not be joined first.)

        An append that fails half-way (a full disk) is cut back off, so the next one never
        starts inside a torn line; if even that fails, the next append cuts it first. A kill
        between two parts leaves a torn last line, which a resumed session cuts off too.
        """
        if os.fstat(self._fd).st_size != self._size:
            os.ftruncate(self._fd, self._size)
        try:
            for part in parts:
                write_all(self._fd, part)
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += sum(len(part) for part in parts)

    def close(self) -> None:
        """Release the lock (closing the file releases it)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def busy(tree: Tree, relpath: str, data: bytes) -> ConfigError:
    """The refusal of a second writer, naming the live one as its checkpoint records it."""
    writer = "another process"
    for line in reversed(data.split(b"\n")):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("pid"), int):
            host = entry.get("host")
            since = entry.get("session_start") or entry.get("started_at")
            writer = f"pid {entry['pid']}"
            if isinstance(host, str):
                writer += f" on host {host[:255]!r}"
            if isinstance(since, str):
                writer += f", writing since {since[:40]}"
            break
    return ConfigError(
        "resume",
        f"{tree.path(relpath)} is locked by a fleetscan that is writing this run now ({writer}): "
        "a run has one writer at a time; wait for it to end, or stop it, then resume",
    )


def live_writer(tree: Tree, relpath: str) -> ConfigError | None:
    """The refusal naming the live writer of the checkpoint at ``relpath`` (or what is wrong
    with it: a link, another user's file), or None when no process writes it now."""
    try:
        checkpoint, _ = CheckpointFile.open(tree, relpath)
    except ConfigError as refusal:
        return refusal
    except OSError:
        return None
    checkpoint.close()
    return None
