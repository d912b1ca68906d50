"""Write every configuration file of a bench instance below its root directory.

Nothing here starts a process except the small helpers (opendkim-genkey, postmap, postalias)
that only write files. Paths are host paths; inside the namespace the same paths are valid
because the mount namespace only adds mounts (resolv.conf, hosts, passwd, /dev, /media).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from postfixbench.spec import SAFE_MOUNT, BenchSpec

RESOLVER = "127.0.0.53"


@dataclass(frozen=True)
class BenchPaths:
    root: Path

    @property
    def pf(self) -> Path:  # config_directory
        return self.root / "pf"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def ns(self) -> Path:  # files bind-mounted over /etc inside the namespace
        return self.root / "ns"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def maillog(self) -> Path:
        return self.log_dir / "mail.log"

    @property
    def home(self) -> Path:
        return self.root / "home"

    def maildir(self, user: str) -> Path:
        return self.home / user / "Maildir"

    def safe(self, path: Path) -> Path:
        """``path`` as seen through the /media bind mount (for opendkim)."""
        return SAFE_MOUNT / path.relative_to(self.root)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _chown(path: Path, user: str | int) -> None:
    shutil.chown(path, user, user if isinstance(user, int) else None)


def write_all(spec: BenchSpec, paths: BenchPaths) -> None:
    """Create the directory tree and every config file; generate the DKIM key."""
    root = paths.root
    root.chmod(0o755)  # local users (procmail) and postfix must traverse it
    for d in (paths.pf, paths.spool, paths.data, paths.run, paths.ns, paths.log_dir, paths.home):
        d.mkdir(parents=True, exist_ok=True)
    _chown(paths.data, "postfix")
    for sub, owner in (("opendkim", "opendkim"), ("opendmarc", "opendmarc"), ("rsyslog", "root")):
        (paths.run / sub).mkdir(exist_ok=True)
        _chown(paths.run / sub, owner)
    paths.maillog.touch()
    _write_users(spec, paths)
    dkim_txt = _write_dkim(spec, paths)
    _write_dns(spec, paths, dkim_txt)
    _write_rsyslog(paths)
    _write_milters(spec, paths)
    _write_policyd(paths)
    _write_postfix(spec, paths)


def _write_users(spec: BenchSpec, paths: BenchPaths) -> None:
    # A private /etc/passwd and /etc/group (bind-mounted inside the namespace) so the host's
    # user database never changes.
    passwd = Path("/etc/passwd").read_text(encoding="utf-8").rstrip("\n").split("\n")
    group = Path("/etc/group").read_text(encoding="utf-8").rstrip("\n").split("\n")
    for u in spec.user_list():
        home = paths.home / u.name
        passwd.append(f"{u.name}:x:{u.uid}:{u.uid}:bench user:{home}:/bin/sh")
        group.append(f"{u.name}:x:{u.uid}:")
        (home / "Maildir").mkdir(parents=True, exist_ok=True)
        _write(home / ".procmailrc", _procmailrc(spec))
        for p in (home, home / "Maildir", home / ".procmailrc"):
            os.chown(p, u.uid, u.uid)
        home.chmod(0o700)
    _write(paths.ns / "passwd", "\n".join(passwd) + "\n")
    _write(paths.ns / "group", "\n".join(group) + "\n")
    _write(paths.ns / "resolv.conf", f"nameserver {RESOLVER}\noptions timeout:1 attempts:2\n")
    _write(paths.ns / "hosts", f"127.0.0.1 localhost\n127.0.0.1 {spec.myhostname} "
                               f"{spec.short_hostname}\n::1 localhost\n")


def _procmailrc(spec: BenchSpec) -> str:
    # The label header stands for a content filter's verdict; Procmail only files by it.
    return (
        "SHELL=/bin/sh\n"
        "MAILDIR=$HOME/Maildir/\n"
        "DEFAULT=$MAILDIR\n"
        "LOGFILE=$HOME/procmail.log\n"
        ":0\n"
        f"* ^{spec.label_header}: *spam\n"
        ".Spam/\n"
    )


def _write_dkim(spec: BenchSpec, paths: BenchPaths) -> str:
    dkim = paths.root / "dkim"
    dkim.mkdir(exist_ok=True)
    subprocess.run(["opendkim-genkey", "-b", "2048", "-h", "sha256", "-d", spec.mydomain,
                    "-s", "mail", "-D", str(dkim)], check=True, capture_output=True)
    _chown(dkim / "mail.private", "opendkim")
    (dkim / "mail.private").chmod(0o600)
    txt = (dkim / "mail.txt").read_text(encoding="ascii")
    key = "".join(re.findall(r'"([^"]*)"', txt))
    return key.replace(" ", "").replace("\t", "").replace(";", "; ").strip()


def _txt(name: str, text: str) -> str:
    # One TXT string holds at most 255 bytes; long records (DKIM keys) are split.
    chunks = [text[i:i + 250] for i in range(0, len(text), 250)] or [""]
    return f"txt-record={name}," + ",".join('"' + c.replace('"', '\\"') + '"' for c in chunks)


def _write_dns(spec: BenchSpec, paths: BenchPaths, dkim_txt: str) -> None:
    lines = [
        "no-resolv", "no-hosts", "no-poll", "bind-interfaces",
        f"listen-address={RESOLVER}", "port=53", "user=root",
        f"pid-file={paths.run / 'dnsmasq.pid'}",
        "log-queries", f"log-facility={paths.log_dir / 'dnsmasq.log'}",
        # Answer every name from local data only: no upstream exists, and a name we do not
        # list must get NXDOMAIN quickly rather than a timeout.
        "local=/#/",
    ]
    lines += [f"address=/{n}/{a}" if n.startswith("*.") else f"host-record={n},{a}"
              for n, a in spec.a_records]
    for addr, name in spec.ptr_records:
        rev = ".".join(reversed(addr.split("."))) + ".in-addr.arpa"
        lines.append(f"ptr-record={rev},{name}")
    lines += [f"mx-host={d},{h},10" for d, h in spec.mx_records]
    lines += [_txt(n, t) for n, t in spec.txt_records]
    lines.append(_txt(f"mail._domainkey.{spec.mydomain}", dkim_txt))
    _write(paths.run / "dnsmasq.conf", "\n".join(lines) + "\n")


def _write_rsyslog(paths: BenchPaths) -> None:
    # Traditional format ("Nov 28 08:48:53 mx prog[pid]: msg"), what Debian's logrotate-era
    # mail.log looks like and what the sample timestamps are rewritten in.
    _write(paths.run / "rsyslog.conf", f"""\
global(workDirectory="{paths.run / 'rsyslog'}")
module(load="imuxsock" SysSock.Name="/dev/log" SysSock.RateLimit.Interval="0")
$RepeatedMsgReduction off
mail.*  action(type="omfile" file="{paths.maillog}" template="RSYSLOG_TraditionalFileFormat")
*.*;mail.none  action(type="omfile" file="{paths.log_dir / 'other.log'}"
                      template="RSYSLOG_TraditionalFileFormat")
""")


def _write_milters(spec: BenchSpec, paths: BenchPaths) -> None:
    safe = paths.safe
    _write(paths.run / "unbound.conf", f"""\
server:
    # libunbound refuses loopback servers and answers .test itself unless told otherwise
    do-not-query-localhost: no
    domain-insecure: "."
forward-zone:
    name: "."
    forward-addr: {RESOLVER}
""")
    _write(paths.run / "internal.hosts", "127.0.0.1\n")
    _write(paths.run / "opendkim.conf", f"""\
Syslog yes
SyslogSuccess yes
LogWhy yes
Mode sv
Socket local:{safe(paths.run / 'opendkim' / 'opendkim.sock')}
PidFile {safe(paths.run / 'opendkim' / 'opendkim.pid')}
UserID opendkim
UMask 000
Domain {spec.mydomain}
Selector mail
KeyFile {safe(paths.root / 'dkim' / 'mail.private')}
Canonicalization relaxed/relaxed
InternalHosts {safe(paths.run / 'internal.hosts')}
MTA ORIGINATING
ResolverConfiguration {safe(paths.run / 'unbound.conf')}
AuthservID {spec.myhostname}
AlwaysAddARHeader yes
""")
    _write(paths.run / "dmarc.ignore", "127.0.0.1\n")
    _write(paths.run / "opendmarc.conf", f"""\
AuthservID {spec.myhostname}
TrustedAuthservIDs {spec.myhostname}
Socket local:{paths.run / 'opendmarc' / 'opendmarc.sock'}
UMask 000
PidFile {paths.run / 'opendmarc' / 'opendmarc.pid'}
UserID opendmarc
Syslog true
SPFSelfValidate true
SPFIgnoreResults true
RejectFailures true
RejectString rejected by DMARC policy for %s
RequiredHeaders false
FailureReports false
IgnoreHosts {paths.run / 'dmarc.ignore'}
""")


def _write_policyd(paths: BenchPaths) -> None:
    # The default skip_addresses covers all of 127/8; only the replay client's own address
    # (which never appears as a message's client after XCLIENT) is skipped here.
    _write(paths.run / "policyd-spf.conf", """\
debugLevel = 1
TestOnly = 1
HELO_reject = Fail
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = 127.0.0.1/32,::1/128
""")


def _write_postfix(spec: BenchSpec, paths: BenchPaths) -> None:
    pf = paths.pf
    domains = ", ".join((spec.mydomain, *spec.other_domains))
    _write(pf / "main.cf", f"""\
compatibility_level = 3.6
queue_directory = {paths.spool}
data_directory = {paths.data}
myhostname = {spec.myhostname}
mydomain = {spec.mydomain}
myorigin = $mydomain
mydestination = $myhostname, localhost, {domains}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps = hash:$config_directory/aliases
alias_database = hash:$config_directory/aliases
mailbox_command = /usr/bin/procmail -a "$EXTENSION"
biff = no
# Mail for anywhere but this host fails at once: the bench never talks to another MTA.
default_transport = error:5.7.1 outbound delivery disabled on the bench
relay_transport = error:5.7.1 outbound delivery disabled on the bench
smtpd_banner = $myhostname ESMTP
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 1000
smtpd_hard_error_limit = 1000
disable_vrfy_command = yes
smtpd_helo_required = yes
smtpd_authorized_xclient_hosts = {spec.xclient_hosts}
smtpd_client_restrictions = permit_mynetworks,
    check_client_access cidr:$config_directory/client_access.cidr,
    check_client_access pcre:$config_directory/client_hostname.pcre
smtpd_helo_restrictions = permit_mynetworks,
    reject_invalid_helo_hostname,
    check_helo_access pcre:$config_directory/helo_access.pcre
smtpd_sender_restrictions = permit_mynetworks,
    reject_non_fqdn_sender,
    check_sender_access hash:$config_directory/sender_access
# The default ends in defer_unauth_destination (4xx); an MX refuses relaying with a 5xx.
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks,
    reject_unlisted_recipient,
    check_policy_service unix:private/policyd-spf
policyd-spf_time_limit = 3600
header_checks = pcre:$config_directory/header_checks.pcre
smtpd_milters = unix:{paths.run / 'opendkim' / 'opendkim.sock'},
    unix:{paths.run / 'opendmarc' / 'opendmarc.sock'}
non_smtpd_milters =
milter_default_action = tempfail
""")
    _write(pf / "master.cf", f"""\
127.0.0.1:smtp inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  0 discard
local     unix  - n n -  - local
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
policyd-spf unix - n n - 0 spawn
  user=policyd-spf argv=/usr/bin/policyd-spf {paths.run / 'policyd-spf.conf'}
""")
    _write(pf / "client_access.cidr", "\n".join(spec.client_access) + "\n")
    _write(pf / "client_hostname.pcre", "\n".join(spec.client_hostname_access) + "\n")
    _write(pf / "helo_access.pcre", "\n".join(spec.helo_access) + "\n")
    _write(pf / "sender_access", "\n".join(spec.sender_access) + "\n")
    _write(pf / "header_checks.pcre", "\n".join(spec.header_checks) + "\n")
    aliases = "postmaster: {0}\nroot: {0}\nabuse: {0}\n".format(spec.users[0])
    _write(pf / "aliases", aliases)
    subprocess.run(["postmap", "-c", str(pf), f"hash:{pf / 'sender_access'}"],
                   check=True, capture_output=True)
    subprocess.run(["postalias", "-c", str(pf), f"hash:{pf / 'aliases'}"],
                   check=True, capture_output=True)
