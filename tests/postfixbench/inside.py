"""PID 1 of the bench's private namespaces: mount, start the daemons, wait, stop them.

Run by ``postfixbench.bench.Bench.start`` as
``unshare --net --mount --pid --uts --fork --mount-proc ... python3 -m postfixbench.inside ROOT``.
Its network namespace holds only ``lo``, so no packet can leave; its mount namespace gives the
daemons a private resolv.conf (the local dnsmasq), hosts, passwd/group (the test users) and
/dev (a /dev/log for the private rsyslogd). When it exits, the kernel kills whatever is left
in its pid namespace, so nothing outlives the bench.

Protocol with the host: it writes ``run/ready.json`` (daemon pids) when every daemon answers,
or ``run/failed.txt`` and exits 1; it stops everything when its stdin reaches EOF or on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from postfixbench.configs import RESOLVER, BenchPaths
from postfixbench.spec import SAFE_MOUNT


class StartError(Exception):
    pass


def _run(*argv: str) -> None:
    res = subprocess.run(argv, capture_output=True, text=True)
    if res.returncode != 0:
        raise StartError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")


def _wait(what: str, ok: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if ok():
            return
        time.sleep(0.05)
    raise StartError(f"timed out after {timeout:.0f}s waiting for {what}")


def _listening(port: int) -> bool:
    # Read the socket table rather than connecting: a probe connection would put a
    # "connect from localhost" session into mail.log.
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[1].endswith(f":{port:04X}") and cols[3] == "0A":  # 0A = LISTEN
                return True
    return False


def _dns_answers(name: str) -> bool:
    try:
        return bool(socket.gethostbyname(name))
    except OSError:
        return False


def _read_pid(path: Path) -> int:
    _wait(f"pid file {path}", lambda: path.exists() and path.read_text().strip() != "")
    return int(path.read_text().split()[0])


def _private_dev(dev: Path) -> None:
    # A tmpfs /dev with only the nodes daemons use, so rsyslogd can own /dev/log. It is built
    # on an empty directory of the bench (nothing on the host changes), then moved to /dev.
    dev.mkdir(exist_ok=True)
    _run("mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", "benchdev", str(dev))
    for n in ("null", "zero", "full", "random", "urandom"):
        (dev / n).touch()
        _run("mount", "--bind", f"/dev/{n}", str(dev / n))
    (dev / "shm").mkdir()
    _run("mount", "-t", "tmpfs", "-o", "mode=1777", "benchshm", str(dev / "shm"))
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        (dev / name).symlink_to(target)
    _run("mount", "--move", str(dev), "/dev")


def setup_namespace(paths: BenchPaths, hostname: str) -> None:
    _run("ip", "link", "set", "lo", "up")
    # Make every IPv4 address local to lo, so the replay client can connect from a message's
    # original client address (Postfix then logs a realistic "connect from"), and any stray
    # connection to any address ends on this host.
    _run("ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "local")
    socket.sethostname(hostname)
    for name in ("resolv.conf", "hosts", "passwd", "group"):
        _run("mount", "--bind", str(paths.ns / name), f"/etc/{name}")
    _private_dev(paths.run / "dev")
    _run("mount", "--bind", str(paths.root), str(SAFE_MOUNT))


def start_daemons(paths: BenchPaths, hostname: str) -> dict[str, int]:
    run = paths.run
    pids: dict[str, int] = {}
    _run("rsyslogd", "-f", str(run / "rsyslog.conf"), "-i", str(run / "rsyslog.pid"))
    pids["rsyslogd"] = _read_pid(run / "rsyslog.pid")
    _wait("/dev/log", lambda: Path("/dev/log").exists())
    _run("dnsmasq", "-C", str(run / "dnsmasq.conf"))
    pids["dnsmasq"] = _read_pid(run / "dnsmasq.pid")
    _wait(f"DNS answers from {RESOLVER}", lambda: _dns_answers(hostname))
    _run("opendkim", "-x", str(paths.safe(run / "opendkim.conf")))
    _run("opendmarc", "-c", str(run / "opendmarc.conf"))
    for name in ("opendkim", "opendmarc"):
        sock = run / name / f"{name}.sock"
        _wait(f"{name} socket {sock}", sock.exists)
        pids[name] = _read_pid(run / name / f"{name}.pid")
    _run("postfix", "-c", str(paths.pf), "check")
    _run("postfix", "-c", str(paths.pf), "start")
    _wait("smtpd listening on port 25", lambda: _listening(25))
    pids["master"] = _read_pid(paths.spool / "pid" / "master.pid")
    return pids


def stop_daemons(paths: BenchPaths, pids: dict[str, int]) -> None:
    subprocess.run(["postfix", "-c", str(paths.pf), "stop"], capture_output=True)
    for name, pid in pids.items():
        if name != "master":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    # As PID 1 we must reap the daemons ourselves; wait a little for a clean exit (rsyslogd
    # flushes mail.log on SIGTERM) before the namespace's end kills the rest.
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)


def main(root: str) -> int:
    paths = BenchPaths(Path(root))
    spec = json.loads((paths.run / "bench.json").read_text())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pids: dict[str, int] = {}
    try:
        setup_namespace(paths, spec["myhostname"])
        pids = start_daemons(paths, spec["myhostname"])
    except (StartError, OSError) as exc:
        (paths.run / "failed.txt").write_text(f"{exc}\n")
        stop_daemons(paths, pids)
        return 1
    # Written then renamed: the host polls for the file and must never read it half-written.
    (paths.run / "ready.tmp").write_text(json.dumps(pids))
    (paths.run / "ready.tmp").rename(paths.run / "ready.json")

    def watch_stdin() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the host closed the pipe or died
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stop.wait(0.5):
        try:  # reap daemons' orphans (we are PID 1)
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass
        except ChildProcessError:
            pass
    stop_daemons(paths, pids)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
