"""Writing below a local directory without following a link that someone planted there.

An output directory can be shared (a team's data lake, ``/tmp``) and fleetscan's names are
predictable (the run id is in every file name, and the checkpoint is created first), so another
local user could plant a symbolic link where fleetscan is about to write and make it truncate,
overwrite or chmod a file elsewhere. So everything below the root is reached one name at a time
from an open directory (``dir_fd``) with ``O_NOFOLLOW``: a link is never followed, and a
directory once checked stays the one written to even if its name is swapped afterwards.
Directories below the root must belong to fleetscan's user (or to root). Files are created only
under fresh random names with ``O_EXCL`` and renamed into place: a rename replaces a link found
at the final name, it never writes through it.

The root itself is the user's choice, named on the command line: a link there is followed, and
its owner is not checked (a container's root user writing to a mounted host directory is usual).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final, NoReturn

from ._exceptions import ConfigError

_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
#: Attempts at a fresh temporary name (each collision is 1 in 2**32), or at a directory that
#: keeps vanishing between its creation and its opening, before giving up.
_TEMP_ATTEMPTS: Final = 16


def first_non_directory(path: Path) -> Path | None:
    """The first component of ``path`` that exists and is not a directory (links followed, as
    for any path a user names), or None when ``path`` is or can become a directory."""
    current = path
    while True:
        try:
            status = os.stat(current)
        except ValueError:  # a NUL byte: no such path, nothing blocks it either
            return None
        except (FileNotFoundError, NotADirectoryError):
            if current.parent == current:
                return None
            current = current.parent
            continue
        except OSError:  # unreadable, a loop of links: the write that follows says so
            return None
        return None if stat.S_ISDIR(status.st_mode) else current


def make_root(path: Path, mode: int | None, field: str) -> None:
    """Like ``mkdir -p``; every directory it creates gets exactly ``mode`` whatever the umask
    (None: the umask decides). A component that is a file is bad input, named."""
    blocker = first_non_directory(path)
    if blocker is not None:
        raise ConfigError(field, _not_a_directory(blocker, path))
    missing = []
    current = path
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(0o777 if mode is None else mode)
        except FileExistsError:
            if not directory.is_dir():
                raise ConfigError(field, _not_a_directory(directory, path)) from None
            continue  # created meanwhile by someone else: theirs to set
        if mode is not None:
            directory.chmod(mode)


def _not_a_directory(blocker: Path, path: Path) -> str:
    if blocker == path:
        return f"{path} exists and is not a directory"
    return f"{blocker} is not a directory, so {path} cannot be created in it"


class Tree:
    """A directory (the root) and what fleetscan writes below it, reached without links.

    Paths are relative to the root, ``/``-separated (``"recovery_points/dt=2026-01-02"``); ``""``
    is the root. Directory descriptors are kept open until :meth:`close`. Safe to use from
    several threads.
    """

    def __init__(
        self, root: Path, *, field: str, dir_mode: int | None = None, create: bool = True
    ) -> None:
        self.root = root
        #: The setting a refusal names (``output``, ``--report-dir``).
        self.field = field
        self._dir_mode = dir_mode
        self._lock = threading.Lock()
        if create:
            make_root(root, dir_mode, field)
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        except NotADirectoryError:
            blocker = first_non_directory(root) or root
            raise ConfigError(field, _not_a_directory(blocker, root)) from None
        self._fds: dict[str, int] = {"": fd}

    def path(self, relpath: str) -> Path:
        """The path of ``relpath``, for messages and for readers outside this module."""
        return self.root / relpath if relpath else self.root

    def close(self) -> None:
        with self._lock:
            fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    # -- directories ------------------------------------------------------------------------

    def directory(self, reldir: str, *, create: bool = True) -> int | None:
        """The descriptor of ``reldir``, created (with the tree's mode) if missing and ``create``;
        None if it is missing and not ``create``.

        Raises :class:`ConfigError` naming the path when it is a symbolic link, not a
        directory, or another user's.
        """
        with self._lock:
            known = self._fds.get(reldir)
            if known is not None:
                return known
            if not self._fds:
                raise ValueError(f"the tree under {self.root} is closed")
            parent_rel, _, name = reldir.rpartition("/")
        parent = self.directory(parent_rel, create=create)
        if parent is None:
            return None
        if name in ("", ".", "..") or "\x00" in name:
            raise ValueError(f"not a directory name below the root: {reldir!r}")
        fd = self._open_directory(parent, reldir, name, create)
        if fd is None:
            return None
        with self._lock:
            known = self._fds.get(reldir)
            if known is None:
                self._fds[reldir] = fd
                return fd
        os.close(fd)  # another thread got there first
        return known

    def _open_directory(self, parent: int, reldir: str, name: str, create: bool) -> int | None:
        created = False
        for _ in range(_TEMP_ATTEMPTS):  # made and removed by someone else meanwhile: again
            try:
                fd = os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)
                break
            except FileNotFoundError:
                if not create:
                    return None
            except OSError as exc:
                self._refuse_entry(parent, reldir, name, exc)
            try:
                os.mkdir(name, 0o700 if self._dir_mode is None else self._dir_mode, dir_fd=parent)
                created = True
            except FileExistsError:
                pass  # made meanwhile (by us or anyone): checked like any other once opened
            except OSError as exc:
                raise _at(exc, self.path(reldir)) from exc
        else:
            raise _missing(self.path(reldir))
        try:
            self._check_owner(fd, reldir)
            if created:
                if self._dir_mode is not None:
                    os.fchmod(fd, self._dir_mode)  # exactly the mode asked for, whatever the umask
                os.fsync(parent)  # the new name survives a crash, as the files in it will
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _refuse_entry(self, parent: int, relpath: str, name: str, exc: OSError) -> NoReturn:
        """Turn a failed ``O_NOFOLLOW`` open into a refusal naming what is there instead."""
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise _at(exc, self.path(relpath)) from exc
        try:
            found = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except OSError:
            raise _at(exc, self.path(relpath)) from exc
        if stat.S_ISLNK(found.st_mode):
            raise ConfigError(
                self.field,
                f"{self.path(relpath)} is a symbolic link: fleetscan follows no link below "
                f"{self.root} (remove it, or choose another directory)",
            ) from None
        raise ConfigError(
            self.field, f"{self.path(relpath)} is not a directory (remove it, or rename it)"
        ) from None

    def _check_owner(self, fd: int, relpath: str) -> None:
        owner = os.fstat(fd).st_uid
        if owner not in (os.geteuid(), 0):
            raise ConfigError(
                self.field,
                f"{self.path(relpath)} belongs to another user (uid {owner}): fleetscan writes "
                f"only in directories of its own user (uid {os.geteuid()}) below {self.root}",
            )

    def names(self, reldir: str) -> list[str]:
        """The entries of ``reldir`` ([] if it does not exist)."""
        fd = self.directory(reldir, create=False)
        return [] if fd is None else os.listdir(fd)

    def fsync_directory(self, reldir: str) -> None:
        fd = self.directory(reldir, create=False)
        if fd is not None:
            os.fsync(fd)

    # -- files ------------------------------------------------------------------------------

    def open(self, relpath: str, flags: int, mode: int = 0o600, *, create_dirs: bool = True) -> int:
        """``os.open`` of ``relpath`` that never follows a link, in a checked directory.

        A link raises :class:`ConfigError` naming it, and so does anything but a regular file of
        ours (a FIFO, a device, another user's file). Missing (``O_CREAT`` not given):
        FileNotFoundError, with the full path.
        """
        reldir, _, name = relpath.rpartition("/")
        parent = self.directory(reldir, create=create_dirs)
        if parent is None:
            raise _missing(self.path(relpath))
        try:
            # O_NONBLOCK: a FIFO planted at the name cannot hang the open (no effect on files).
            flags |= os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
            fd = os.open(name, flags, mode, dir_fd=parent)
        except OSError as exc:
            self._refuse_file(relpath, exc)
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise ConfigError(self.field, f"{self.path(relpath)} is not a regular file")
            self._check_owner(fd, relpath)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _refuse_file(self, relpath: str, exc: OSError) -> NoReturn:
        if exc.errno == errno.ELOOP:
            raise ConfigError(
                self.field,
                f"{self.path(relpath)} is a symbolic link: fleetscan follows no link below "
                f"{self.root} (remove it, or choose another directory)",
            ) from None
        raise _at(exc, self.path(relpath)) from exc

    def create_temporary(self, relpath: str, mode: int) -> tuple[int, str]:
        """A new, empty file beside ``relpath`` under a fresh hidden name
        (``.NAME.RANDOM.partial``), with exactly ``mode``: (descriptor, its relpath).

        ``O_EXCL`` creates it or fails: never a file, link or device that was already there.
        """
        reldir, _, name = relpath.rpartition("/")
        for _ in range(_TEMP_ATTEMPTS):
            temporary = f"{reldir}/{temporary_name(name)}" if reldir else temporary_name(name)
            try:
                fd = self.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                continue
            try:
                os.fchmod(fd, mode)  # exactly the mode asked for, whatever the umask
            except BaseException:
                os.close(fd)
                raise
            return fd, temporary
        raise FileExistsError(errno.EEXIST, "no free temporary name", str(self.path(relpath)))

    def replace(self, temporary: str, relpath: str) -> None:
        """Rename a complete temporary file over ``relpath`` (same directory), durably."""
        reldir, _, name = relpath.rpartition("/")
        fd = self._existing_directory(reldir)
        try:
            os.replace(temporary.rpartition("/")[2], name, src_dir_fd=fd, dst_dir_fd=fd)
        except OSError as exc:
            raise _at(exc, self.path(relpath)) from exc
        os.fsync(fd)

    def link(self, temporary: str, relpath: str) -> None:
        """Give a complete temporary file the name ``relpath`` only if nothing has that name:
        FileExistsError otherwise (whatever is there, a link included), durably."""
        reldir, _, name = relpath.rpartition("/")
        fd = self._existing_directory(reldir)
        source = temporary.rpartition("/")[2]
        os.link(source, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        os.fsync(fd)

    def unlink(self, relpath: str) -> None:
        """Remove ``relpath`` if it exists (a link is removed, never what it points to)."""
        reldir, _, name = relpath.rpartition("/")
        fd = self.directory(reldir, create=False)
        if fd is None:
            return
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            return

    def lstat(self, relpath: str) -> os.stat_result | None:
        """What is at ``relpath`` (a link is not followed), or None."""
        reldir, _, name = relpath.rpartition("/")
        fd = self.directory(reldir, create=False)
        if fd is None:
            return None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def read(self, relpath: str) -> bytes:
        """A whole (small) regular file of ours; FileNotFoundError when missing."""
        fd = self.open(relpath, os.O_RDONLY, create_dirs=False)
        try:
            return read_all(fd)
        finally:
            os.close(fd)

    def _existing_directory(self, reldir: str) -> int:
        fd = self.directory(reldir, create=False)
        if fd is None:
            raise _missing(self.path(reldir))
        return fd


def check_file_target(path: Path, field: str) -> Path:
    """Refuse, naming ``field``, a file path :func:`atomic_file` would not write: a missing or
    unwritable directory, a symbolic link or anything but a regular file at the name. Callers
    check before any work, so a bad path costs nothing; a link planted after the check is
    replaced by the rename, never written through."""
    directory = path.parent
    if not directory.is_dir():
        raise ConfigError(field, f"{directory} is not an existing directory")
    if path.is_symlink():
        raise ConfigError(field, f"{path} is a symbolic link: fleetscan writes no file there")
    if path.exists() and not path.is_file():
        raise ConfigError(field, f"{path} is not a regular file")
    if not os.access(directory, os.W_OK):
        raise ConfigError(field, f"{directory} is not writable")
    return path


@contextmanager
def atomic_file(path: Path, *, field: str, mode: int = 0o600) -> Iterator[IO[bytes]]:
    """Write the file ``path`` complete or not at all: under a fresh temporary name beside it
    (``O_EXCL``), synced, then renamed over ``path``; on an exception it is removed.

    A reader (node_exporter's textfile collector, a CI step) never sees half a file. Anything
    but a regular file at ``path`` is refused, naming ``field``: a symbolic link there was
    planted or is a mistake, and replacing it would hide either.
    """
    check_file_target(path, field)
    tree = Tree(path.parent, field=field, create=False)
    try:
        fd, temporary = tree.create_temporary(path.name, mode)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            tree.replace(temporary, path.name)
        except BaseException:
            tree.unlink(temporary)
            raise
    finally:
        tree.close()


def temporary_name(name: str) -> str:
    """Hidden (Athena, Hive and DuckDB globs skip it) and unpredictable."""
    return f".{name}.{secrets.token_hex(4)}.partial"


def read_all(fd: int) -> bytes:
    """Everything from the current offset of ``fd`` to its end."""
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))


def _at(exc: OSError, path: Path) -> OSError:
    """The same error, naming the full path (``dir_fd`` calls name only the last component)."""
    return type(exc)(exc.errno, exc.strerror, str(path))
