"""Keeping file jobs inside their configured roots, and writing outputs atomically.

A payload names a path; it is resolved (symlinks followed) and must land under one of the
configured roots, so that a job can never read or overwrite anything else on the host.
Outputs are written to a temporary file in the target directory and renamed into place, so
that a reader never sees half a thumbnail, and a killed job leaves no partial output behind
under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from haosq.errors import PermanentError


def resolve_under_roots(raw: str, roots: tuple[Path, ...], field: str = "filePath") -> Path:
    """The real path of `raw`, which must exist and lie under a root."""
    if not raw or "\x00" in raw:
        raise PermanentError(f"{field}: a path is required")
    candidate = Path(raw)
    if not candidate.is_absolute():
        candidate = roots[0] / candidate
    try:
        real = candidate.resolve(strict=True)
    except FileNotFoundError:
        raise PermanentError(f"{field}: {raw} does not exist") from None
    except (OSError, RuntimeError) as exc:
        raise PermanentError(f"{field}: cannot resolve {raw}: {exc}") from None
    root = root_of(real, roots)
    if root is None:
        raise PermanentError(f"{field}: {raw} is outside the configured file roots")
    if not real.is_file():
        raise PermanentError(f"{field}: {raw} is not a regular file")
    return real


def root_of(path: Path, roots: tuple[Path, ...]) -> Path | None:
    return next((root for root in roots if path == root or path.is_relative_to(root)), None)


def output_dir_for(original: Path, roots: tuple[Path, ...], output_root: Path | None) -> Path:
    """Where outputs derived from `original` go: next to it, or mirrored under output_root."""
    if output_root is None:
        return original.parent
    root = root_of(original, roots)
    relative = original.parent.relative_to(root) if root else Path()
    return output_root / relative


@contextlib.contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target` atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    temp = Path(temp_name)
    try:
        yield temp
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
