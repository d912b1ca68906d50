"""Asking the real Postfix: ``postmap -q`` on many keys at once, and the skip rule for tests
that need it (skip only when Postfix is missing and CI is not "true", like the bench)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest

POSTMAP = shutil.which("postmap", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def require_postmap() -> str:
    """The postmap program, or a skip (a failure under CI=true)."""
    if POSTMAP is None:
        if os.environ.get("CI") == "true":
            pytest.fail("postmap is required under CI=true")
        pytest.skip("postmap not installed")
    return POSTMAP


@functools.cache
def config_dir() -> Path:
    """A Postfix config directory for postmap: the system's when it has a main.cf, else a
    private one with Debian's fresh-install setting (a Postfix package installed with "No
    configuration" may have no main.cf, and postmap refuses to run without one)."""
    system = Path("/etc/postfix")
    if (system / "main.cf").is_file():
        return system
    d = Path(tempfile.mkdtemp(prefix="postmap-config-"))
    (d / "main.cf").write_text("compatibility_level = 3.6\n")
    return d


def _postmap(*args: str) -> list[str]:
    return [require_postmap(), "-c", str(config_dir()), *args]


def build(table: str, path: Path) -> None:
    """Run ``postmap`` for the indexed types (hash); the others are read as text."""
    if table == "hash":
        subprocess.run(_postmap(f"hash:{path}"), check=True, capture_output=True)


def query(table: str, path: Path, keys: Iterable[str]) -> dict[str, str]:
    """``postmap -q - type:path`` for all keys in one run: {key: value} for the keys found.

    Keys travel one per line, so a key with a newline cannot be asked this way (see
    ``query_one``). Values must not contain a tab (ours never do)."""
    keys = list(dict.fromkeys(keys))
    assert not any("\n" in k for k in keys)
    data = "".join(k + "\n" for k in keys).encode("utf-8", "surrogateescape")
    out = subprocess.run(_postmap("-q", "-", f"{table}:{path}"), input=data,
                         capture_output=True, check=False)
    assert out.returncode in (0, 1), out.stderr
    found: dict[str, str] = {}
    for raw in out.stdout.split(b"\n"):
        if raw:
            key, _, value = raw.decode("utf-8", "surrogateescape").rpartition("\t")
            found[key] = value
    return found


def query_one(table: str, path: Path, key: str) -> str | None:
    """``postmap -q KEY type:path`` (for keys with a newline)."""
    out = subprocess.run(_postmap("-q", key, f"{table}:{path}"),
                         capture_output=True, check=False)
    assert out.returncode in (0, 1), out.stderr
    return out.stdout.decode("utf-8", "surrogateescape").rstrip("\n") if out.returncode == 0 \
        else None


def warnings(table: str, path: Path) -> list[str]:
    """What postmap says about a map file when it reads it (empty when all lines are fine)."""
    out = subprocess.run(_postmap("-q", "no-such-key.invalid", f"{table}:{path}"),
                         capture_output=True, check=False)
    return [ln for ln in out.stderr.decode(errors="replace").splitlines() if ln]
