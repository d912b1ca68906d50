"""The host side of the bench: prepare a root directory, start the namespace, talk SMTP to it.

    with Bench.start(default_spec()) as bench:
        smtp = bench.smtp()            # an smtplib.SMTP connected inside the bench's netns
        ...
        bench.wait_for_log(r"status=sent")

The SMTP socket is created by a short-lived thread that has joined the bench's network
namespace (setns), so the calling process stays on the host and nothing is forwarded.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from types import TracebackType

from postfixbench.configs import BenchPaths, write_all
from postfixbench.spec import BenchSpec

CLONE_NEWNET = 0x40000000
REQUIRED_PROGRAMS = ("postfix", "postmap", "policyd-spf", "opendkim", "opendkim-genkey",
                     "opendmarc", "procmail", "dnsmasq", "rsyslogd", "unshare", "ip")


class BenchError(RuntimeError):
    pass


def missing_requirements() -> list[str]:
    """Why the bench cannot run here (empty when it can): not root, or programs missing."""
    why = []
    if os.geteuid() != 0:
        why.append("not running as root")
    why += [f"{p} not installed" for p in REQUIRED_PROGRAMS
            if shutil.which(p, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
    return why


def _tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} not readable)"
    return "\n".join(lines[-n:]) or f"({path} is empty)"


def _socket_in_netns(netns: int, family: int = socket.AF_INET) -> socket.socket:
    # setns(CLONE_NEWNET) only moves the calling thread; a socket keeps the namespace it was
    # created in, so a throwaway thread makes it and the rest of the process is untouched.
    libc = ctypes.CDLL(None, use_errno=True)
    box: dict[str, object] = {}

    def make() -> None:
        if libc.setns(netns, CLONE_NEWNET) != 0:
            box["error"] = OSError(ctypes.get_errno(), "setns into the bench netns failed")
            return
        box["sock"] = socket.socket(family, socket.SOCK_STREAM)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["sock"]  # type: ignore[return-value]


class BenchSMTP(smtplib.SMTP):
    """smtplib.SMTP whose connection is made inside the bench's network namespace."""

    def __init__(self, netns: int, **kwargs: object) -> None:
        self._netns = netns
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = _socket_in_netns(self._netns)
        sock.settimeout(timeout)
        if self.source_address:
            # Any address is local inside the bench netns (see inside.setup_namespace).
            sock.bind(self.source_address)
        sock.connect((host, port))
        return sock


class Bench:
    def __init__(self, spec: BenchSpec, root: Path) -> None:
        self.spec = spec
        self.paths = BenchPaths(root)
        self._proc: subprocess.Popen[bytes] | None = None
        self._netns: int | None = None
        self._owns_root = False
        self.pids: dict[str, int] = {}

    # -- life cycle -------------------------------------------------------------------------
    @classmethod
    def start(cls, spec: BenchSpec, root: Path | None = None, timeout: float = 60) -> Bench:
        """Write the configs below ``root`` (a new temp dir by default) and start everything."""
        why = missing_requirements()
        if why:
            raise BenchError("cannot start the Postfix bench: " + "; ".join(why))
        owns = root is None
        if root is None:
            root = Path(tempfile.mkdtemp(prefix="postfixbench-"))
        bench = cls(spec, root)
        bench._owns_root = owns
        try:
            bench._start(timeout)
        except BaseException:
            bench.stop()
            raise
        return bench

    def _start(self, timeout: float) -> None:
        write_all(self.spec, self.paths)
        (self.paths.run / "bench.json").write_text(json.dumps(asdict(self.spec)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
        env["PATH"] = env.get("PATH", "") + ":/usr/sbin:/sbin"
        err = open(self.paths.log_dir / "inside.stderr", "wb")  # noqa: SIM115
        self._proc = subprocess.Popen(
            ["unshare", "--net", "--mount", "--pid", "--uts", "--fork", "--mount-proc",
             "--propagation", "private", "--kill-child",
             sys.executable, "-m", "postfixbench.inside", str(self.paths.root)],
            stdin=subprocess.PIPE, stdout=err, stderr=err, env=env)
        err.close()
        ready, failed = self.paths.run / "ready.json", self.paths.run / "failed.txt"
        end = time.monotonic() + timeout
        while not ready.exists():
            if failed.exists() or self._proc.poll() is not None or time.monotonic() > end:
                reason = failed.read_text().strip() if failed.exists() else (
                    "timed out" if self._proc.poll() is None else
                    f"namespace exited with {self._proc.returncode}")
                raise BenchError(self._failure_report(reason))
            time.sleep(0.05)
        self.pids = json.loads(ready.read_text())
        # unshare(1) enters the new network namespace itself before it forks, so its own
        # /proc entry names the bench's netns.
        self._netns = os.open(f"/proc/{self._proc.pid}/ns/net", os.O_RDONLY)

    def _failure_report(self, reason: str) -> str:
        parts = [f"Postfix bench failed to start: {reason}"]
        for f in ("inside.stderr", "mail.log", "other.log", "dnsmasq.log"):
            parts.append(f"--- tail of {self.paths.log_dir / f}:\n{_tail(self.paths.log_dir / f)}")
        return "\n".join(parts)

    def stop(self, remove: bool | None = None) -> None:
        """Stop everything (by closing the namespace init's stdin) and remove a temp root."""
        if self._netns is not None:
            os.close(self._netns)
            self._netns = None
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.terminate()  # --kill-child: the namespace's init dies with it
                proc.wait(timeout=10)
        if remove if remove is not None else self._owns_root:
            shutil.rmtree(self.paths.root, ignore_errors=True)

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- using it ---------------------------------------------------------------------------
    def smtp(self, source: str | None = None, timeout: float = 30) -> BenchSMTP:
        """A connected SMTP client. ``source`` is the client address Postfix sees at connect
        time (any IPv4 address: the bench netns treats them all as local); the default is
        127.0.0.1. Every source may send XCLIENT."""
        if self._netns is None:
            raise BenchError("bench is not running")
        return BenchSMTP(self._netns, host="127.0.0.1", port=25, timeout=timeout,
                         local_hostname="replay.bench.invalid",
                         source_address=(source, 0) if source else None)

    def namespace_pid(self) -> int:
        """Host pid of the namespace's init (the child of unshare), for nsenter."""
        if self._proc is None:
            raise BenchError("bench is not running")
        children = Path(f"/proc/{self._proc.pid}/task/{self._proc.pid}/children").read_text()
        return int(children.split()[0])

    def postfix_command(self) -> str:
        """A shell-like command that runs ``postfix`` inside the bench's namespaces. The
        master's pid file holds a pid of the bench's pid namespace, so `postfix reload` run on
        the host would signal an unrelated host process; run it in there instead."""
        return (f"nsenter --target {self.namespace_pid()} --mount --pid --net --uts -- "
                "postfix")

    def postconf(self, *settings: str) -> None:
        """Edit the bench's main.cf (``postconf -e name=value``); reload to apply."""
        subprocess.run(["postconf", "-c", str(self.paths.pf), "-e", *settings], check=True,
                       capture_output=True)

    def postconf_value(self, name: str) -> str:
        out = subprocess.run(["postconf", "-c", str(self.paths.pf), "-h", name], check=True,
                             capture_output=True, text=True)
        return out.stdout.strip()

    def reload(self) -> None:
        """``postfix reload`` inside the bench (new smtpd processes read the maps afresh)."""
        subprocess.run([*shlex.split(self.postfix_command()), "-c", str(self.paths.pf),
                        "reload"], check=True, capture_output=True)

    def log_offset(self) -> int:
        return self.paths.maillog.stat().st_size

    def log_text(self, since: int = 0) -> str:
        with open(self.paths.maillog, "rb") as f:
            f.seek(since)
            return f.read().decode("utf-8", "replace")

    def wait_for_log(self, pattern: str, since: int = 0, timeout: float = 20) -> str:
        """The first mail.log line after byte ``since`` that matches ``pattern``."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            for line in self.log_text(since).splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() > end:
                raise BenchError(f"no mail.log line matches {pattern!r} within {timeout}s; "
                                 f"tail:\n{_tail(self.paths.maillog)}")
            time.sleep(0.1)

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait until the queue is empty (every accepted message delivered or bounced)."""
        end = time.monotonic() + timeout
        dirs = [self.paths.spool / d for d in ("incoming", "active", "deferred", "maildrop")]
        while time.monotonic() < end:
            if not any(any(p.is_file() for p in d.rglob("*")) for d in dirs if d.exists()):
                return
            time.sleep(0.1)
        raise BenchError(f"queue not empty after {timeout}s")

    def delivered(self, user: str, folder: str = "", marker: str = "",
                  timeout: float = 20) -> Path:
        """The file in ``user``'s Maildir folder (``""`` = INBOX, ``".Spam"``) whose text
        contains ``marker``; waits for Procmail up to ``timeout`` seconds."""
        base = self.paths.maildir(user) / folder
        end = time.monotonic() + timeout
        needle = marker.encode()
        while True:
            for sub in ("new", "cur"):
                d = base / sub
                if d.is_dir():
                    for f in sorted(d.iterdir()):
                        if needle in f.read_bytes():
                            return f
            if time.monotonic() > end:
                raise BenchError(f"no message with {marker!r} in {base} after {timeout}s")
            time.sleep(0.1)
