"""Opening below configured roots by directory descriptor: the static cases, on real files."""

from __future__ import annotations

import grp
import os
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from haosq.errors import PermanentError
from haosq.handlers.pathguard import PathRefused, Roots, atomic_output, output_directory, walk
from tests.handlers.file_samples import files_in_tree, make_deep_tree, remove_deep_tree


@pytest.fixture
def area(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "docs").mkdir(parents=True)
    outside.mkdir()
    (root / "docs" / "report.txt").write_text("inside")
    (outside / "secret.txt").write_text("outside")
    return {"root": root, "outside": outside}


def roots_of(*dirs: Path) -> Roots:
    return Roots.of(dirs, field="filePath", what="file root")


def read(roots: Roots, raw: str) -> str:
    with roots.open_file(raw) as opened:
        return opened.file.read().decode()


def test_a_file_below_the_root_is_read_by_relative_and_absolute_path(area):
    roots = roots_of(area["root"])
    assert read(roots, "docs/report.txt") == "inside"
    assert read(roots, str(area["root"] / "docs" / "report.txt")) == "inside"
    assert read(roots, "./docs//report.txt") == "inside"
    with roots.open_file("docs/report.txt") as opened:
        assert opened.path == str(area["root"] / "docs" / "report.txt")
        assert opened.name == "report.txt"
        assert opened.still_named()


@pytest.mark.parametrize(("make", "raw", "message"), [
    # a symlink as the file, pointing outside and inside: neither is followed
    (lambda a: (a["root"] / "out.txt").symlink_to(a["outside"] / "secret.txt"), "out.txt",
     "'out.txt' is a symlink, which is never followed"),
    (lambda a: (a["root"] / "alias.txt").symlink_to(a["root"] / "docs" / "report.txt"), "alias.txt",
     "is a symlink, which is never followed"),
    # a symlink as a parent directory
    (lambda a: (a["root"] / "sub").symlink_to(a["outside"], target_is_directory=True), "sub/secret.txt",
     "goes through 'sub', a symlink, which is never followed"),
    (lambda a: (a["root"] / "docs" / "deeper").symlink_to(a["outside"], target_is_directory=True),
     "docs/deeper/secret.txt", "goes through 'deeper', a symlink"),
    # climbing out
    (lambda a: None, "../outside/secret.txt", "contains '..'"),
    (lambda a: None, "docs/../../outside/secret.txt", "contains '..'"),
    (lambda a: None, "{root}/../outside/secret.txt", "contains '..'"),
    # absolute paths elsewhere, including one that only shares a prefix of characters
    (lambda a: None, "{outside}/secret.txt", "is not inside a configured file root"),
    (lambda a: (a["root"].parent / "root-evil").mkdir(), "{root}-evil/x.txt",
     "is not inside a configured file root"),
    (lambda a: None, "/etc/passwd", "is not inside a configured file root"),
    # a second name for a file outside the root
    (lambda a: os.link(a["outside"] / "secret.txt", a["root"] / "hard.txt"), "hard.txt",
     r"is a hard link \(2 names\)"),
    # not regular files
    (lambda a: os.mkfifo(a["root"] / "pipe"), "pipe", "is not a regular file"),
    (lambda a: None, "docs", "is not a regular file"),
    (lambda a: None, "{root}", "is a root directory"),
    (lambda a: (a["root"] / "file.txt").write_text("x"), "file.txt/inner",
     "'file.txt', which is not a directory"),
    (lambda a: None, "docs/missing.txt", "does not exist"),
    (lambda a: None, "nowhere/missing.txt", "does not exist"),
    (lambda a: None, "bad\x00name", "contains a NUL byte"),
    (lambda a: None, "", "a path is required"),
])
def test_what_is_refused(area, make, raw, message):
    make(area)
    raw = raw.format(root=area["root"], outside=area["outside"])
    with pytest.raises(PathRefused, match=f"^filePath: .*{message}"):
        read(roots_of(area["root"]), raw)
    assert (area["outside"] / "secret.txt").read_text() == "outside"


def test_relative_paths_are_looked_up_in_each_root_in_turn(area, tmp_path):
    second = tmp_path / "second"
    second.mkdir()
    (second / "only-here.txt").write_text("second")
    (second / "docs").mkdir()
    (second / "docs" / "report.txt").write_text("shadowed")
    roots = roots_of(area["root"], second)
    assert read(roots, "only-here.txt") == "second"
    assert read(roots, "docs/report.txt") == "inside"  # the first root that holds it wins
    assert read(roots, str(second / "docs" / "report.txt")) == "shadowed"


def test_a_root_configured_through_a_symlink_is_matched_as_written_and_as_resolved(area, tmp_path):
    alias = tmp_path / "alias"
    alias.symlink_to(area["root"], target_is_directory=True)
    roots = roots_of(alias)
    assert read(roots, f"{alias}/docs/report.txt") == "inside"
    assert read(roots, f"{area['root']}/docs/report.txt") == "inside"


def test_directories_are_opened_below_the_root_without_following_symlinks(area):
    (area["root"] / "link").symlink_to(area["outside"], target_is_directory=True)
    roots = Roots.of([area["root"]], field="invalid payload: field 'directory'", what="cleanup root")
    with roots.open_directory(str(area["root"] / "docs")) as (below, fd):
        assert below.parts == ("docs",)
        assert os.listdir(fd) == ["report.txt"]
    with pytest.raises(PathRefused, match=r"field 'directory': .* goes through 'link', a symlink"), \
            roots.open_directory(str(area["root"] / "link")):
        pass
    with pytest.raises(PathRefused, match="is missing"), roots.open_directory(str(area["root"] / "nope")):
        pass


def test_output_directories_are_made_below_their_root_and_never_through_a_symlink(area, tmp_path):
    out = tmp_path / "derived"
    with output_directory(out, ("a", "b"), what="output_root") as fd, atomic_output(fd, "x.txt") as output:
        output.file.write(b"made")
    assert (out / "a" / "b" / "x.txt").read_bytes() == b"made"
    (out / "evil").symlink_to(area["outside"], target_is_directory=True)
    with pytest.raises(PermanentError, match=r"output_root: .*evil.* goes through 'evil', a symlink"), \
            output_directory(out, ("evil", "c"), what="output_root"):
        pass
    assert sorted(os.listdir(area["outside"])) == ["secret.txt"]


def test_an_output_is_all_or_nothing(area):
    directory = area["root"] / "docs"
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(RuntimeError), atomic_output(fd, "new.txt") as output:
            output.file.write(b"half")
            raise RuntimeError("the encoder failed")
        with atomic_output(fd, "kept.txt") as output:
            output.file.write(b"never")
            output.discard()
        with atomic_output(fd, "report.txt") as output:
            output.file.write(b"replaced")
        assert output.size == len(b"replaced")
        with pytest.raises(ValueError, match="one path component"), atomic_output(fd, "../escape.txt"):
            pass
    finally:
        os.close(fd)
    assert sorted(os.listdir(directory)) == ["report.txt"]  # no .part left behind
    assert (directory / "report.txt").read_text() == "replaced"
    assert stat.S_IMODE((directory / "report.txt").stat().st_mode) == 0o600


def _foreign_group() -> int:
    groups = {g.gr_gid for g in grp.getgrall()} - set(os.getgroups()) - {os.getegid()}
    if not groups:
        pytest.skip("every group on this machine is one of this process's groups")
    return min(groups)


def _write_like(directory: Path, like: os.stat_result) -> bool:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with atomic_output(fd, "thumb.webp", like=like) as output:
            output.file.write(b"x")
    finally:
        os.close(fd)
    return output.group_kept


def _as_nobody(directory: Path, like: os.stat_result) -> bool:
    """_write_like in a child process that has dropped root for nobody's user and group."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only system calls from here to _exit
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, b"1" if _write_like(directory, like) else b"0")
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        answer = os.read(read_end, 1)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return answer == b"1"


def test_a_group_the_process_may_not_set_is_not_passed_on_to_another_group(tmp_path):
    """The output cannot take the original's group: its group bits are cleared rather than
    granting the original's group access to the process's own group."""
    foreign = _foreign_group()
    like = os.stat_result((0o100640, 0, 0, 1, 0, foreign, 0, 0, 0, 0))
    workdir = Path(tempfile.mkdtemp(prefix="haosq-group-"))
    try:
        if os.geteuid() == 0:
            os.chmod(workdir, 0o777)
            kept = _as_nobody(workdir, like)
        else:
            kept = _write_like(workdir, like)
        assert kept is False
        written = (workdir / "thumb.webp").stat()
        assert stat.S_IMODE(written.st_mode) == 0o600
        assert written.st_gid != foreign
    finally:
        for entry in workdir.iterdir():
            entry.unlink()
        workdir.rmdir()


def test_a_walk_of_any_depth_keeps_one_directory_open(tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    depth = sys.getrecursionlimit() + 200
    make_deep_tree(root, depth, old_file_every=50, age_days=0)
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    baseline = len(os.listdir("/proc/self/fd"))
    problems: list[tuple[str, str]] = []
    try:
        deepest, most_open, files = 0, 0, 0
        for visit in walk(top, lambda path, reason: problems.append((path, reason))):
            deepest = max(deepest, visit.relative.count("/") + 1 if visit.relative else 0)
            most_open = max(most_open, len(os.listdir("/proc/self/fd")) - baseline)
            files += sum(1 for _, info in visit.entries if stat.S_ISREG(info.st_mode))
        assert (deepest, problems) == (depth, [])
        assert files == files_in_tree(root)
        assert most_open <= 2  # the directory being visited (and the listing's own descriptor)
        assert len(os.listdir("/proc/self/fd")) == baseline
    finally:
        os.close(top)
        remove_deep_tree(root)


def test_a_directory_moved_out_during_a_walk_does_not_take_the_walk_with_it(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    for directory in (root / "a" / "b", root / "a" / "z", outside / "z"):
        directory.mkdir(parents=True)
    (root / "a" / "z" / "mine.log").write_text("inside")
    (outside / "z" / "secret.log").write_text("outside")
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    seen: dict[str, list[str]] = {}
    try:
        for visit in walk(top, lambda path, reason: None):
            seen[visit.relative] = sorted(name for name, _ in visit.entries)
            if visit.relative == "a":  # b first (in listing order): it moves while the walk is in it
                visit.entries.sort(key=lambda item: item[0] != "b")
            if visit.relative == "a/b":
                os.rename(root / "a" / "b", outside / "b")  # `..` of b is now outside the root
    finally:
        os.close(top)
    assert list(seen) == ["", "a", "a/b", "a/z"]
    assert seen["a/z"] == ["mine.log"]  # found again below the root, not outside/z
    assert "secret.log" not in {name for names in seen.values() for name in names}
