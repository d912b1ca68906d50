"""Writing the maps: render, check (own matcher and ``postmap -q``), install, reload, roll back.

    files = render_maps(book.emitted(), sender_table)      # {file name: text}
    report = check_maps(files, rules, sender_table)        # problems (empty = fine)
    write_maps(out_dir, files)                             # the whole set, or nothing
    install_maps(postfix, files)                           # + backup of the previous set
    install_and_reload(postfix, files)                     # restores the backup if refused

The previous set lives in ``<maps dir>/.previous/``; ``rollback`` swaps it with the current
set (so a second rollback undoes the first). Installing maps equal to the installed ones
writes nothing and keeps ``.previous`` (``install_maps`` returns an empty list).

A set is written all or nothing: every file (and a hash map's .db, built by postmap) is
staged in a temp directory beside the targets, then renamed into place one by one; if a
rename fails, the files already replaced are put back and the new ones removed, so Postfix
sees the old set or the new one per file and, after an error, the old set.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from triage.atomicfile import copy_atomic, fsync_dir
from triage.emit.check import (
    CheckReport,
    Problem,
    check_maps,
    check_report,
    kind_of,
    probe_keys,
    query_refusal,
    table_of,
)
from triage.emit.postfix import render_map
from triage.errors import InstallError
from triage.model import Rule, RuleKind, TableType

__all__ = [
    "PREVIOUS", "CheckReport", "Postfix", "Problem", "check_maps", "check_report",
    "install_and_reload", "install_maps", "probe_keys", "render_maps", "rollback", "table_of",
    "write_maps",
]

PREVIOUS = ".previous"
# Postfix installs its programs in /usr/sbin, which is often not in a user's PATH.
_SBIN = ("/usr/sbin", "/sbin")


def render_maps(rules: Iterable[Rule], sender_table: TableType | str = TableType.HASH
                ) -> dict[str, str]:
    """Every map file's text, by file name, for the emitted (trial and active) rules."""
    rules = list(rules)
    return {k.map_name: render_map(k, rules, table_of(k, sender_table)) for k in RuleKind}


def _search_path() -> str:
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]  # no "" (= cwd)
    return os.pathsep.join([*dirs, *(d for d in _SBIN if d not in dirs)])


@dataclass
class Postfix:
    """How to reach the Postfix that reads the maps."""

    maps_dir: Path
    config_dir: Path | None = None
    command: str = "postfix"
    _found: dict[str, str | None] = field(default_factory=dict, init=False, repr=False,
                                          compare=False)

    def executable(self, program: str) -> str | None:
        """The full path of ``program`` (PATH, then /usr/sbin and /sbin), found once."""
        if program not in self._found:
            self._found[program] = shutil.which(program, path=_search_path())
        return self._found[program]

    def _argv(self, program: str, *args: str) -> list[str]:
        # Only `postfix` goes through the configured command (it may need to reach a Postfix
        # in another namespace); postmap just reads files and runs here.
        words = shlex.split(self.command) if program == "postfix" else [program]
        if not words:
            raise InstallError("postfix_command is empty")
        exe = self.executable(words[0])
        if exe is None:
            raise InstallError(f"{words[0]} not found in PATH, /usr/sbin or /sbin "
                               "(is Postfix installed?)")
        conf = ["-c", str(self.config_dir)] if self.config_dir else []
        return [exe, *words[1:], *conf, *args]

    def available(self) -> bool:
        """Whether postmap can be run here."""
        return self.executable("postmap") is not None

    def run(self, program: str, *args: str, stdin: bytes | None = None
            ) -> subprocess.CompletedProcess[bytes]:
        """Run ``program`` (by its full path); InstallError when it cannot be run."""
        argv = self._argv(program, *args)
        try:
            return subprocess.run(argv, input=stdin, capture_output=True, check=False,
                                  timeout=120)
        except subprocess.TimeoutExpired:
            raise InstallError(f"{argv[0]} did not finish within 120 seconds") from None
        except OSError as exc:
            raise InstallError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None

    def postmap_query(self, table: TableType, path: Path, keys: list[str]) -> tuple[
            dict[str, str], list[str]]:
        """``postmap -q - type:path`` for ``keys``: ({key: value}, warnings printed).

        Keys with a newline or a NUL (``check.query_refusal``) cannot travel one per line:
        they are not asked, and never appear in the answer."""
        keys = [k for k in dict.fromkeys(keys) if query_refusal(k) is None]
        data = b"".join(k.encode("utf-8", "surrogateescape") + b"\n" for k in keys)
        out = self.run("postmap", "-q", "-", f"{table}:{path}", stdin=data)
        found = {}
        # Split on b"\n" only: str.splitlines() would also cut keys at \v, \f, \x1c-\x1e,
        # U+0085, U+2028 and U+2029, which an attacker's HELO may hold.
        for raw in out.stdout.split(b"\n"):
            if raw:
                key, _, value = raw.decode("utf-8", "surrogateescape").rpartition("\t")
                found[key] = value
        warn = [ln for ln in out.stderr.decode(errors="replace").split("\n") if ln]
        if out.returncode not in (0, 1):
            warn.append(f"postmap exited with status {out.returncode}")
        return found, warn

    def pcre_error(self, regex: str) -> str | None:
        """What postmap says about a pcre table holding only ``/regex/`` (the regex as
        written between the delimiters), or None when it is fine or postmap is missing.
        Pass it to ``postfix.validate_key(..., verify_pcre=...)``."""
        if not self.available():
            return None
        with tempfile.TemporaryDirectory(prefix="triage-pcre-") as tmp:
            path = Path(tmp) / "check.pcre"
            path.write_text(f"/{regex}/ DUNNO\n", encoding="utf-8")
            _, warns = self.postmap_query(TableType.PCRE, path, ["probe.invalid"])
        if not warns:
            return None
        return warns[0].rpartition(", line 1: ")[2] or warns[0]

    def build(self, table: TableType, path: Path) -> None:
        """``postmap`` for indexed tables (hash); nothing for text tables."""
        if table is TableType.HASH:
            out = self.run("postmap", f"{table}:{path}")
            if out.returncode != 0 or out.stderr.strip():
                raise InstallError(f"postmap refused {path.name}: "
                                   f"{out.stderr.decode(errors='replace').strip()}", file=path)

    def reload(self) -> None:
        out = self.run("postfix", "reload")
        if out.returncode != 0:
            raise InstallError("postfix reload failed: "
                               + out.stderr.decode(errors="replace").strip())


def _targets(name: str, table: TableType, postfix: Postfix | None) -> list[str]:
    """The files one map becomes in the maps directory: its .db (when postfix builds one)
    first, then the text source."""
    return [f"{name}.db", name] if table is TableType.HASH and postfix is not None else [name]


def _stage(stage: Path, files: dict[str, str], postfix: Postfix | None,
           sender_table: TableType | str) -> list[str]:
    """Write every file (and build each .db) in ``stage``; the names to move, in order."""
    names = []
    for name, text in sorted(files.items()):
        table = table_of(kind_of(name), sender_table)
        path = stage / name
        path.write_bytes(text.encode("utf-8"))
        if table is TableType.HASH and postfix is not None:
            postfix.build(table, path)
        for n in _targets(name, table, postfix):
            with open(stage / n, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(stage / n, 0o644)
            names.append(n)
    return names


def _swap_in(directory: Path, moves: list[tuple[Path | None, str]], aside: Path) -> None:
    """Put each ``(source, name)`` in place in ``directory`` (a None source removes the
    file), keeping each replaced file in ``aside``; on any error, undo the moves done and
    raise InstallError (OSError) or the error itself."""
    done: list[tuple[str, bool]] = []  # (name, an old version was kept aside)
    name = ""
    try:
        for _, name in moves:  # the one failure we can foresee: before anything moves
            if (directory / name).is_dir() and not (directory / name).is_symlink():
                raise IsADirectoryError(errno.EISDIR, "a directory is in the way",
                                        str(directory / name))
        for src, name in moves:
            dst = directory / name
            kept = os.path.lexists(dst)
            if kept:
                try:  # a hard link keeps the old file without a moment where none exists
                    os.link(dst, aside / name, follow_symlinks=False)
                except OSError:
                    shutil.copy2(dst, aside / name, follow_symlinks=False)
            if src is None:
                if kept:
                    os.unlink(dst)
            else:
                os.replace(src, dst)
            done.append((name, kept))
    except BaseException as exc:
        failed = _undo(directory, aside, done)
        if not isinstance(exc, OSError):
            raise
        note = (f"; could not put back {', '.join(failed)}" if failed else
                f"; {directory} is as it was")
        raise InstallError(f"cannot write {name}: {exc.strerror or exc}{note}",
                           file=directory / name) from None
    fsync_dir(directory)


def _undo(directory: Path, aside: Path, done: list[tuple[str, bool]]) -> list[str]:
    """Undo ``_swap_in``'s moves, newest first; the names that could not be put back."""
    failed = []
    for name, kept in reversed(done):
        try:
            if kept:
                os.replace(aside / name, directory / name)
            else:
                os.unlink(directory / name)
        except OSError:
            failed.append(name)
    return failed


def write_maps(directory: Path, files: dict[str, str], postfix: Postfix | None = None,
               sender_table: TableType | str = TableType.HASH,
               backup_dir: Path | None = None) -> list[Path]:
    """Write the set of maps into ``directory``, all or nothing (see the module docstring).
    With ``postfix``, a hash map's .db is built by postmap in the staging directory first,
    so Postfix never opens a half-built database. With ``backup_dir``, the files replaced
    are copied there first. InstallError says what failed; the old set is then in place."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".triage-new-", dir=directory))
    except OSError as exc:
        raise InstallError(f"cannot write maps into {directory}: {exc.strerror or exc}",
                           file=directory) from None
    try:
        aside = stage / ".old"
        aside.mkdir()
        try:
            names = _stage(stage, files, postfix, sender_table)
        except OSError as exc:
            raise InstallError(f"cannot prepare the maps in {stage}: {exc.strerror or exc}; "
                               "nothing written", file=directory) from None
        if backup_dir is not None:
            backup_dir.mkdir(parents=True, exist_ok=True)
            for n in names:
                if (directory / n).is_file():
                    copy_atomic(directory / n, backup_dir / n)
        _swap_in(directory, [(stage / n, n) for n in names], aside)
        return [directory / n for n in names]
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _unchanged(directory: Path, files: dict[str, str], postfix: Postfix,
               sender_table: TableType | str) -> bool:
    """Whether the installed maps already are ``files`` (and each .db is up to date)."""
    for name, text in files.items():
        src = directory / name
        if not src.is_file() or src.read_bytes() != text.encode("utf-8"):
            return False
        table = table_of(kind_of(name), sender_table)
        for n in _targets(name, table, postfix):
            if not (directory / n).is_file() or \
                    (directory / n).stat().st_mtime < src.stat().st_mtime:
                return False
    return True


@dataclass
class _Backup:
    """The installed set, copied to ``.previous`` before an install (the former backup kept
    aside until the install succeeds), and the map files that did not exist before."""

    directory: Path
    present: list[str]
    absent: list[str]

    @property
    def previous(self) -> Path:
        return self.directory / PREVIOUS

    @property
    def former(self) -> Path:
        return self.directory / f"{PREVIOUS}.old"

    @classmethod
    def take(cls, directory: Path, names: list[str]) -> _Backup:
        backup = cls(directory, [n for n in names if (directory / n).is_file()],
                     [n for n in names if not os.path.lexists(directory / n)])
        if backup.present:
            fresh = Path(tempfile.mkdtemp(prefix=f"{PREVIOUS}.new-", dir=directory))
            try:
                for n in backup.present:
                    copy_atomic(directory / n, fresh / n)
            except BaseException:
                shutil.rmtree(fresh, ignore_errors=True)
                raise
            shutil.rmtree(backup.former, ignore_errors=True)
            if backup.previous.exists():
                backup.previous.rename(backup.former)
            fresh.rename(backup.previous)
        return backup

    def keep(self) -> None:
        """The install succeeded: the former backup is no longer needed."""
        shutil.rmtree(self.former, ignore_errors=True)

    def put_back(self) -> None:
        """The install failed: the set from before it, exactly (files that did not exist
        are removed), and the former ``.previous``."""
        with tempfile.TemporaryDirectory(prefix=".triage-restore-", dir=self.directory) as t:
            stage = Path(t)
            for n in self.present:
                copy_atomic(self.previous / n, stage / n)
            (stage / ".old").mkdir()
            moves: list[tuple[Path | None, str]] = [(stage / n, n) for n in self.present]
            _swap_in(self.directory, moves + [(None, n) for n in self.absent], stage / ".old")
        if self.present:
            shutil.rmtree(self.previous, ignore_errors=True)
            if self.former.exists():
                self.former.rename(self.previous)


def install_maps(postfix: Postfix, files: dict[str, str],
                 sender_table: TableType | str = TableType.HASH) -> list[Path]:
    """Install ``files`` into ``postfix.maps_dir``, the current set going to ``.previous/``
    first (each file and its .db). On any error the set from before is put back. Returns
    the files written: none when the installed maps already are ``files``."""
    return install_and_reload(postfix, files, sender_table, reload=False)


def install_and_reload(postfix: Postfix, files: dict[str, str],
                       sender_table: TableType | str = TableType.HASH,
                       reload: bool = True) -> list[Path]:
    """``install_maps`` then ``postfix reload``; if Postfix refuses (a map it cannot read,
    a failed reload), the set from before is restored (files that did not exist are
    removed, even on a first install), Postfix reloaded and InstallError raised. Unchanged
    maps are not written (an empty list is returned) and ``.previous`` is kept."""
    d = postfix.maps_dir
    if d.is_dir() and _unchanged(d, files, postfix, sender_table):
        if reload:
            postfix.reload()  # nothing to restore: the maps are the ones Postfix had
        return []
    try:
        d.mkdir(parents=True, exist_ok=True)
        names = [n for name in sorted(files)
                 for n in _targets(name, table_of(kind_of(name), sender_table), postfix)]
        backup = _Backup.take(d, names)
    except OSError as exc:
        raise InstallError(f"cannot back up the maps in {d}: {exc.strerror or exc}",
                           file=d) from None
    reloading = False
    try:
        written = write_maps(d, files, postfix, sender_table)
        if reload:
            for name in sorted(files):
                table = table_of(kind_of(name), sender_table)
                _, warns = postfix.postmap_query(table, d / name, ["probe.invalid"])
                if warns:
                    raise InstallError(f"Postfix cannot use {name}: {warns[0]}")
            reloading = True
            postfix.reload()
    except BaseException:
        backup.put_back()
        if reloading:
            with contextlib.suppress(InstallError):
                postfix.reload()
        raise
    backup.keep()
    return written


def _map_files(directory: Path, names: Iterable[str]) -> list[Path]:
    out = []
    for n in names:
        out += [p for p in (directory / n, directory / f"{n}.db") if p.exists()]
    return out


def _snapshot(src: Path, dst: Path, names: Iterable[str]) -> None:
    """Copy the current map files of ``src`` into ``dst`` as a whole: they are copied into a
    fresh directory first, which then takes ``dst``'s place, so an interruption leaves the
    old backup or the new one."""
    present = _map_files(src, names)
    if not present:
        return  # nothing installed yet: keep whatever backup exists
    fresh = Path(tempfile.mkdtemp(prefix=f"{dst.name}.new-", dir=dst.parent))
    for p in present:
        copy_atomic(p, fresh / p.name)
    old = dst.with_name(f"{dst.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dst.exists():
        dst.rename(old)
    fresh.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def _restore(src: Path, dst: Path) -> list[Path]:
    restored = []
    if src.is_dir():
        for p in sorted(src.iterdir()):
            if p.is_file() and not p.name.startswith("."):
                copy_atomic(p, dst / p.name)
                restored.append(dst / p.name)
    return restored


def rollback(postfix: Postfix, reload: bool = False) -> list[Path]:
    """Put the previous set back; the set it replaces becomes the new ``.previous``."""
    d, prev = postfix.maps_dir, postfix.maps_dir / PREVIOUS
    if not prev.is_dir() or not any(p.is_file() for p in prev.iterdir()):
        raise InstallError("no previous set of maps to roll back to", file=prev)
    names = {k.map_name for k in RuleKind}
    with tempfile.TemporaryDirectory(prefix=".rollback-", dir=d) as tmp:
        keep = Path(tmp) / "set"
        _snapshot(d, keep, names)           # the current set, aside
        restored = _restore(prev, d)        # the previous set, in place
        if keep.is_dir():
            _snapshot(keep, prev, names)    # the set we replaced becomes .previous
    if reload:
        postfix.reload()
    return restored
