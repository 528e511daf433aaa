"""Files below configured roots, opened by directory descriptor: the one way every built-in
handler (files, email attachments, cleanup, matrix exports) reaches the file system.

A payload names a path; it must lie below one of the roots an operator configured. Checking a
path and then opening it by name leaves a window in which a directory can be swapped for a
symlink, so nothing here opens a payload's path by name:

- the root is opened by its path (configuration, trusted); every component below it is opened
  relative to the descriptor of the one above, with O_NOFOLLOW (and O_DIRECTORY for
  directories): a symlink at any step is refused, never followed;
- `..` is refused, and an absolute path must lie inside a root as written;
- a file is opened only when it is a regular file with one name (a hard link would let a
  second name, possibly outside the root, be read through this one);
- outputs are written to a `.part` file created relative to the descriptor of their
  directory, then renamed relative to the same descriptor, so that a reader never sees half
  a file and a killed job leaves nothing under the final name;
- libraries (Pillow, PyAV, zipfile, clamd's INSTREAM) get the opened file object, never a path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from haosq.errors import PermanentError

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_BELOW_DIRECTORY = _DIRECTORY | os.O_NOFOLLOW
# O_NONBLOCK: a FIFO planted under the name must not block the open; O_NOCTTY: nor a terminal
# become the worker's.
_BELOW_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class PathRefused(PermanentError):
    """A path from a payload is outside the roots, or something on the way is not allowed."""


@dataclass(frozen=True)
class Below:
    """A place below a root: the root directory as configured and the components under it."""

    root: str
    parts: tuple[str, ...]

    @property
    def path(self) -> str:
        return os.path.join(self.root, *self.parts)

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else os.path.basename(self.root)


@dataclass
class Opened:
    """A regular file opened below a root, with the descriptor of the directory holding it.
    Both are valid while the `Roots.open_file` block runs."""

    below: Below
    file: BinaryIO
    dir_fd: int
    info: os.stat_result

    @property
    def path(self) -> str:
        return self.below.path

    @property
    def name(self) -> str:
        return self.below.name

    def still_named(self) -> bool:
        """Whether its name in its directory still refers to this very file."""
        try:
            now = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except OSError:
            return False
        return (now.st_dev, now.st_ino) == (self.info.st_dev, self.info.st_ino)


@dataclass(frozen=True)
class Roots:
    """The root directories one family of handlers may work in.

    `field` starts every refusal (`filePath`, `invalid payload: field 'directory'`); `what`
    names the roots in messages (`file root`, `attachment root`)."""

    dirs: tuple[str, ...]
    field: str
    what: str

    @classmethod
    def of(cls, dirs: Iterable[str | os.PathLike[str]], *, field: str, what: str) -> Roots:
        return cls(tuple(os.path.normpath(os.fspath(d)) for d in dirs), field, what)

    def refuse(self, raw: str, reason: str) -> PathRefused:
        return PathRefused(f"{self.field}: {raw!r} {reason}")

    def candidates(self, raw: str) -> list[Below]:
        """Where `raw` may be: inside the one root an absolute path names, or, for a relative
        path, below each root in turn (the first that holds it wins)."""
        if not raw:
            raise PathRefused(f"{self.field}: a path is required")
        if "\x00" in raw:
            raise self.refuse(raw, "contains a NUL byte")
        parts = tuple(part for part in raw.split("/") if part not in ("", "."))
        if ".." in parts:
            raise self.refuse(raw, f"contains '..': give a path inside a configured {self.what}")
        if not raw.startswith("/"):
            return [Below(root, parts) for root in self.dirs]
        for root in sorted(self._root_forms(), key=lambda form: -len(form[1])):
            configured, prefix = root
            if parts[:len(prefix)] == prefix:
                return [Below(configured, parts[len(prefix):])]
        raise self.refuse(raw, f"is not inside a configured {self.what}")

    def _root_forms(self) -> list[tuple[str, tuple[str, ...]]]:
        # A root is matched as configured and by its real path (a payload may give either).
        forms = []
        for root in self.dirs:
            for form in dict.fromkeys((root, os.path.realpath(root))):
                forms.append((form, tuple(p for p in form.split("/") if p)))
        return forms

    @contextlib.contextmanager
    def open_directory(self, raw: str) -> Iterator[tuple[Below, int]]:
        """The directory `raw` names, opened below its root: (where it is, its descriptor)."""
        missing: OSError | None = None
        for below in self.candidates(raw):
            try:
                fd = _walk(below.root, below.parts)
            except _Step as step:
                if step.error.errno == errno.ENOENT:
                    missing = step.error
                    continue
                raise self.refuse(raw, step.reason()) from None
            try:
                yield below, fd
            finally:
                os.close(fd)
            return
        raise self.refuse(raw, f"is missing ({missing.strerror if missing else 'no root holds it'})")

    @contextlib.contextmanager
    def open_file(self, raw: str) -> Iterator[Opened]:
        """The regular file `raw` names, opened for reading below its root."""
        for below in self.candidates(raw):
            if not below.parts:
                raise self.refuse(raw, "is a root directory, not a regular file")
            try:
                dir_fd = _walk(below.root, below.parts[:-1])
            except _Step as step:
                if step.error.errno == errno.ENOENT:
                    continue
                raise self.refuse(raw, step.reason()) from None
            try:
                opened = self._open_in(dir_fd, below, raw)
                if opened is None:
                    continue
                with opened.file:
                    yield opened
                return
            finally:
                os.close(dir_fd)
        raise self.refuse(raw, "does not exist")

    def _open_in(self, dir_fd: int, below: Below, raw: str) -> Opened | None:
        name = below.name
        try:
            info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self.refuse(raw, f"cannot be read ({exc.strerror})") from None
        _check_regular(self, raw, info)
        try:
            fd = os.open(name, _BELOW_FILE, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self.refuse(raw, "is a symlink, which is never followed") from None
            raise self.refuse(raw, f"cannot be opened ({exc.strerror})") from None
        try:
            opened = os.fstat(fd)
            _check_regular(self, raw, opened)
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
                raise self.refuse(raw, "was replaced while it was being opened")
            os.set_blocking(fd, True)
            return Opened(below, os.fdopen(fd, "rb"), dir_fd, opened)
        except BaseException:
            os.close(fd)
            raise


def _check_regular(roots: Roots, raw: str, info: os.stat_result) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise roots.refuse(raw, "is a symlink, which is never followed")
    if not stat.S_ISREG(info.st_mode):
        raise roots.refuse(raw, "is not a regular file")
    if info.st_nlink > 1:
        raise roots.refuse(raw, f"is a hard link ({info.st_nlink} names); only files with one name are read")


class _Step(Exception):
    """Opening one component below a root failed."""

    def __init__(self, parent_fd: int, part: str, error: OSError) -> None:
        super().__init__(part)
        self.part = part
        self.error = error
        # The file type under the name a moment later, for the message (None: gone by then).
        self.found: int | None = 0
        if error.errno in (errno.ELOOP, errno.ENOTDIR):
            try:
                self.found = stat.S_IFMT(os.stat(part, dir_fd=parent_fd, follow_symlinks=False).st_mode)
            except OSError:
                self.found = None

    def reason(self) -> str:
        if self.found == stat.S_IFLNK:
            return f"goes through {self.part!r}, a symlink, which is never followed"
        if self.found in (stat.S_IFDIR, None):
            return (f"goes through {self.part!r}, which changed while it was being opened (it was a "
                    "symlink or not a directory at that moment; symlinks are never followed)")
        if self.error.errno in (errno.ENOTDIR, errno.ELOOP):
            return f"goes through {self.part!r}, which is not a directory"
        return f"cannot be opened at {self.part!r} ({self.error.strerror})"


def _open_root(root: str, *, create: bool, mode: int = 0o777) -> int:
    try:
        if create:
            os.makedirs(root, mode=mode, exist_ok=True)
        return os.open(root, _DIRECTORY)
    except OSError as exc:
        raise PermanentError(f"the configured directory {root} cannot be opened: {exc.strerror}") from None


def _walk(root: str, parts: Iterable[str], *, create: bool = False, mode: int = 0o777) -> int:
    """A descriptor of root/parts..., one component at a time, never following a symlink;
    with `create`, what is missing is made (the root with `mode`)."""
    fd = _open_root(root, create=create, mode=mode)
    try:
        for part in parts:
            try:
                child = os.open(part, _BELOW_DIRECTORY, dir_fd=fd)
            except FileNotFoundError as exc:
                if not create:
                    raise _Step(fd, part, exc) from None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                try:
                    child = os.open(part, _BELOW_DIRECTORY, dir_fd=fd)
                except OSError as again:
                    raise _Step(fd, part, again) from None
            except OSError as exc:
                raise _Step(fd, part, exc) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def output_directory(root: str | os.PathLike[str], parts: Iterable[str] = (), *, what: str,
                     mode: int = 0o777) -> Iterator[int]:
    """A configured output directory (created with `mode` if missing), or root/parts below it
    (created one component at a time, never through a symlink)."""
    try:
        fd = _walk(os.fspath(root), parts, create=True, mode=mode)
    except _Step as step:
        raise PermanentError(f"{what}: {os.path.join(os.fspath(root), *parts)} {step.reason()}") from None
    try:
        yield fd
    finally:
        os.close(fd)


@dataclass
class Output:
    """A file being written: `file` is the open `.part` file; `discard()` drops it."""

    file: BinaryIO
    name: str
    size: int = 0
    group_kept: bool = True
    discarded: bool = field(default=False, repr=False)

    def discard(self) -> None:
        self.discarded = True


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise ValueError(f"an output name must be one path component, not {name!r}")


@contextlib.contextmanager
def atomic_output(dir_fd: int, name: str, *, like: os.stat_result | None = None,
                  mode: int = 0o600) -> Iterator[Output]:
    """Write `name` in the directory `dir_fd`: a `.part` file that replaces `name` atomically
    when the block ends without error and without `discard()`.

    With `like`, the file gets that file's permission bits and group (the group as far as the
    process may set it; when it may not, the group bits are cleared instead of being granted
    to another group); otherwise it is created with `mode`."""
    _check_name(name)
    temp = f".{name[:200]}.{secrets.token_hex(4)}.part"
    fd = os.open(temp, _NEW_FILE, 0o600, dir_fd=dir_fd)
    output = Output(os.fdopen(fd, "w+b"), name)
    committed = False
    try:
        yield output
        if output.discarded:
            return
        output.file.flush()
        if like is not None:
            output.group_kept = _take_mode_and_group(fd, like)
        elif mode != 0o600:
            os.fchmod(fd, mode)
        os.fsync(fd)
        output.size = os.fstat(fd).st_size
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        committed = True
    finally:
        output.file.close()
        if not committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=dir_fd)


def _take_mode_and_group(fd: int, like: os.stat_result) -> bool:
    bits = stat.S_IMODE(like.st_mode) & 0o777
    kept = True
    if os.fstat(fd).st_gid != like.st_gid:
        try:
            os.fchown(fd, -1, like.st_gid)
        except PermissionError:
            kept = False
            bits &= ~0o070
    os.fchmod(fd, bits)
    return kept


def move(opened: Opened, dir_fd: int, name: str, *, mode: int) -> None:
    """Move an opened file to `name` in the directory `dir_fd`, with permission bits `mode`
    (renamed when both are on one file system, else copied from the open file, then unlinked)."""
    _check_name(name)
    if not opened.still_named():
        raise PermanentError(f"{opened.path} was replaced or removed while the job ran; nothing was moved")
    try:
        os.rename(opened.name, name, src_dir_fd=opened.dir_fd, dst_dir_fd=dir_fd)
        os.fchmod(opened.file.fileno(), mode)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    opened.file.seek(0)
    with atomic_output(dir_fd, name, mode=mode) as output:
        shutil.copyfileobj(opened.file, output.file)
    if opened.still_named():
        os.unlink(opened.name, dir_fd=opened.dir_fd)


# -- walking a tree below a directory --------------------------------------------------------

@dataclass
class Visit:
    """One directory of a walk. `fd` and `entries` are valid until the walk moves on; clear
    `descend` to skip the subdirectories (they are visited after the consumer returns)."""

    fd: int
    relative: str                      # below the directory the walk started from ("" for it)
    entries: list[tuple[str, os.stat_result]]  # every entry, as lstat saw it
    descend: list[str]


@dataclass
class _Level:
    name: str
    identity: tuple[int, int]
    relative: str
    pending: list[tuple[str, tuple[int, int]]]


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def walk(top_fd: int, on_error: Callable[[str, str], None]) -> Iterator[Visit]:
    """Every directory below the directory `top_fd` (itself first), depth first, iteratively:
    a tree of any depth is walked with one directory open at a time besides `top_fd`.

    Subdirectories are opened with O_NOFOLLOW and must be the very directory the listing
    saw; the walk climbs back through `..` and checks it arrived in the directory it left (a
    directory moved during the walk is re-entered from `top_fd` by name, or skipped).
    `on_error(relative path, reason)` hears of what was skipped."""
    current = os.dup(top_fd)
    try:
        top = _visit(current, "", on_error)
        yield top
        stack = [_Level("", _identity(os.fstat(current)), "", _pending(top))]
        while stack:
            level = stack[-1]
            if not level.pending:
                stack.pop()
                if stack:
                    current = _climb(current, stack, top_fd, on_error)
                continue
            name, identity = level.pending.pop()
            relative = f"{level.relative}/{name}" if level.relative else name
            try:
                child = os.open(name, _BELOW_DIRECTORY, dir_fd=current)
            except OSError as exc:
                on_error(relative, f"cannot open the directory ({exc.strerror})")
                continue
            if _identity(os.fstat(child)) != identity:
                os.close(child)
                on_error(relative, "replaced while the walk listed its parent; skipped")
                continue
            os.close(current)
            current = child
            visit = _visit(current, relative, on_error)
            yield visit
            stack.append(_Level(name, identity, relative, _pending(visit)))
    finally:
        os.close(current)


def _visit(fd: int, relative: str, on_error: Callable[[str, str], None]) -> Visit:
    entries: list[tuple[str, os.stat_result]] = []
    try:
        with os.scandir(fd) as listing:
            for entry in listing:
                try:
                    entries.append((entry.name, entry.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    continue
    except OSError as exc:
        on_error(relative, f"cannot list the directory ({exc.strerror})")
    descend = [name for name, info in entries if stat.S_ISDIR(info.st_mode)]
    return Visit(fd, relative, entries, descend)


def _pending(visit: Visit) -> list[tuple[str, tuple[int, int]]]:
    wanted = set(visit.descend)
    # Reversed: popped from the end, subdirectories are visited in listing order.
    return [(name, _identity(info)) for name, info in reversed(visit.entries) if name in wanted]


def _climb(current: int, stack: list[_Level], top_fd: int, on_error: Callable[[str, str], None]) -> int:
    """The descriptor of stack[-1]'s directory, from its child `current` (which is closed)."""
    try:
        parent = os.open("..", _DIRECTORY, dir_fd=current)
    except OSError:
        parent = -1
    os.close(current)
    if parent >= 0 and _identity(os.fstat(parent)) == stack[-1].identity:
        return parent
    if parent >= 0:
        os.close(parent)
    # Moved while the walk was below it: find it again from the top, by name.
    fd = os.dup(top_fd)
    for depth, level in enumerate(stack[1:], start=1):
        try:
            child = os.open(level.name, _BELOW_DIRECTORY, dir_fd=fd)
        except OSError:
            child = -1
        if child >= 0 and _identity(os.fstat(child)) == level.identity:
            os.close(fd)
            fd = child
            continue
        if child >= 0:
            os.close(child)
        on_error(level.relative, "moved during the walk; the rest of it was skipped")
        del stack[depth:]
        break
    return fd
