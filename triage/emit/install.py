"""Writing the maps: render, check (own matcher and ``postmap -q``), install, reload, roll back.

    files = render_maps(book.emitted(), sender_table)      # {file name: text}
    report = check_maps(files, rules, sender_table)        # problems (empty = fine)
    write_maps(out_dir, files)                             # atomic per file, postmap for hash
    install_maps(postfix, files)                           # + backup of the previous set
    postfix.reload()                                       # restores the backup if refused

The previous set lives in ``<maps dir>/.previous/``; ``rollback`` swaps it with the current
set (so a second rollback undoes the first). Each file is replaced atomically; the set as a
whole is replaced file by file, and a failed step restores the previous set.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from triage.atomicfile import copy_atomic, write_atomic
from triage.emit.postfix import render_map
from triage.emit.tables import parse_table
from triage.errors import InstallError
from triage.model import Rule, RuleKind, TableType

PREVIOUS = ".previous"


def table_of(kind: RuleKind, sender_table: TableType | str = TableType.HASH) -> TableType:
    return TableType(sender_table) if kind is RuleKind.SENDER_DOMAIN else kind.table


def render_maps(rules: Iterable[Rule], sender_table: TableType | str = TableType.HASH
                ) -> dict[str, str]:
    """Every map file's text, by file name, for the emitted (trial and active) rules."""
    rules = list(rules)
    return {k.map_name: render_map(k, rules, table_of(k, sender_table)) for k in RuleKind}


def _kind_of(name: str) -> RuleKind:
    return next(k for k in RuleKind if k.map_name == name)


def probe_keys(rule: Rule) -> list[str]:
    """Lookup keys the rule must answer: its evidence samples, or the key itself when that
    is a literal (an address, a domain)."""
    ev = rule.evidence
    if rule.kind is RuleKind.CLIENT_CIDR:
        return [*ev.ips, rule.key.split("/")[0]]
    if rule.kind is RuleKind.SENDER_DOMAIN:
        return [rule.key]
    if rule.kind is RuleKind.HELO:
        return list(ev.helos)
    return []


@dataclass(frozen=True)
class Problem:
    file: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}"


@dataclass
class Postfix:
    """How to reach the Postfix that reads the maps."""

    maps_dir: Path
    config_dir: Path | None = None
    command: str = "postfix"

    def _argv(self, program: str, *args: str) -> list[str]:
        # Only `postfix` goes through the configured command (it may need to reach a Postfix
        # in another namespace); postmap just reads files and runs here.
        words = shlex.split(self.command) if program == "postfix" else [program]
        conf = ["-c", str(self.config_dir)] if self.config_dir else []
        return [*words, *conf, *args]

    def available(self) -> bool:
        """Whether postmap can be run here."""
        path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
        return shutil.which("postmap", path=path) is not None

    def run(self, program: str, *args: str, stdin: bytes | None = None
            ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(self._argv(program, *args), input=stdin, capture_output=True,
                              check=False, timeout=120)

    def postmap_query(self, table: TableType, path: Path, keys: list[str]) -> tuple[
            dict[str, str], list[str]]:
        """``postmap -q - type:path`` for ``keys``: ({key: value}, warnings printed)."""
        keys = [k for k in dict.fromkeys(keys) if "\n" not in k and "\0" not in k]
        data = "".join(k + "\n" for k in keys).encode("utf-8", "surrogateescape")
        out = self.run("postmap", "-q", "-", f"{table}:{path}", stdin=data)
        found = {}
        for raw in out.stdout.decode("utf-8", "surrogateescape").splitlines():
            key, _, value = raw.rpartition("\t")
            found[key] = value
        warn = [ln for ln in out.stderr.decode(errors="replace").splitlines() if ln]
        if out.returncode not in (0, 1):
            warn.append(f"postmap exited with status {out.returncode}")
        return found, warn

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


def check_maps(files: dict[str, str], rules: Iterable[Rule],
               sender_table: TableType | str = TableType.HASH,
               postfix: Postfix | None = None) -> list[Problem]:
    """Check rendered maps: every emitted rule has one line carrying its id, its probe keys
    are answered by that line (our matcher), and, when ``postfix`` is given and installed,
    ``postmap -q`` reads each file without a warning and gives the same answers."""
    rules = [r for r in rules if r.state.emitted]
    problems: list[Problem] = []
    with tempfile.TemporaryDirectory(prefix="triage-check-") as tmp:
        for name, text in sorted(files.items()):
            kind = _kind_of(name)
            table = table_of(kind, sender_table)
            ours = parse_table(text, table, name)
            mine = [r for r in rules if r.kind is kind]
            if len(ours.entries) != len(mine):
                problems.append(Problem(name, f"{len(ours.entries)} lines for {len(mine)} rules"))
            ids = {r.id for r in mine}
            for e in ours.entries:
                if not any(f"rule {rid}" in e.value for rid in ids):
                    problems.append(Problem(name, f"line {e.line} carries no rule id: {e.value}"))
            probes: dict[str, str] = {}
            for r in mine:
                for key in probe_keys(r):
                    probes[key] = r.id
                    value = ours.lookup(key)
                    if value is None or f"rule {r.id}" not in value:
                        problems.append(Problem(name, f"{r.id}: {key!r} answered {value!r}"))
            if postfix is None or not postfix.available():
                continue
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            try:
                postfix.build(table, path)
            except InstallError as exc:
                problems.append(Problem(name, exc.message))
                continue
            keys = list(probes) or ["probe.invalid"]
            found, warns = postfix.postmap_query(table, path, keys)
            problems += [Problem(name, f"postmap: {w}") for w in warns]
            for key in keys:
                theirs, mine_value = found.get(key), ours.lookup(key)
                if theirs != mine_value:
                    problems.append(Problem(name, f"postmap -q {key!r} gives {theirs!r}, "
                                            f"our matcher {mine_value!r}"))
    return problems


def write_maps(directory: Path, files: dict[str, str], postfix: Postfix | None = None,
               sender_table: TableType | str = TableType.HASH,
               backup_dir: Path | None = None) -> list[Path]:
    """Write each map atomically into ``directory``; build the .db of a hash map from a temp
    copy and rename it into place, so Postfix never opens a half-built database."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(files.items()):
        table = table_of(_kind_of(name), sender_table)
        target = directory / name
        if table is TableType.HASH and postfix is not None:
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
            os.close(fd)
            try:
                Path(tmp).write_text(text, encoding="utf-8")
                postfix.build(table, Path(tmp))
                if backup_dir is not None and (directory / f"{name}.db").exists():
                    backup_dir.mkdir(parents=True, exist_ok=True)
                    copy_atomic(directory / f"{name}.db", backup_dir / f"{name}.db")
                os.chmod(tmp + ".db", 0o644)
                os.replace(tmp + ".db", directory / f"{name}.db")
                written.append(directory / f"{name}.db")
            finally:
                for p in (tmp, tmp + ".db"):
                    with contextlib.suppress(OSError):
                        os.unlink(p)
        write_atomic(target, text, backup_dir=backup_dir)
        written.append(target)
    return written


def install_maps(postfix: Postfix, files: dict[str, str],
                 sender_table: TableType | str = TableType.HASH) -> list[Path]:
    """Install ``files`` into ``postfix.maps_dir``, the current set going to ``.previous/``
    first (each file and its .db). On any error the previous set is put back."""
    d = postfix.maps_dir
    d.mkdir(parents=True, exist_ok=True)
    prev = d / PREVIOUS
    _snapshot(d, prev, files)
    try:
        return write_maps(d, files, postfix, sender_table)
    except BaseException:
        _restore(prev, d)
        raise


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


def install_and_reload(postfix: Postfix, files: dict[str, str],
                       sender_table: TableType | str = TableType.HASH,
                       reload: bool = True) -> list[Path]:
    """``install_maps`` then ``postfix reload``; if Postfix refuses (a map it cannot read,
    a failed reload), the previous set is restored (and reloaded) and InstallError raised."""
    written = install_maps(postfix, files, sender_table)
    if not reload:
        return written
    try:
        for name in sorted(files):
            table = table_of(_kind_of(name), sender_table)
            _, warns = postfix.postmap_query(table, postfix.maps_dir / name, ["probe.invalid"])
            if warns:
                raise InstallError(f"Postfix cannot use {name}: {warns[0]}")
        postfix.reload()
    except InstallError:
        _restore(postfix.maps_dir / PREVIOUS, postfix.maps_dir)
        with contextlib.suppress(InstallError):
            postfix.reload()
        raise
    return written


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
