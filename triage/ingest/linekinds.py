"""The line kinds of Postfix, policyd-spf, opendkim and opendmarc, as data.

Each kind is a name, the daemons that write it, the first word of its message (after an
optional queue id) and one anchored regular expression with named groups. The reader picks the
candidate kinds of a line by (daemon, first word), a cheap vectorised step, and only then runs
the kind's regular expression on the few lines that can be of that kind.

Group names are event column names (see ``EVENT_COLUMNS``). ``QID`` and ``CLIENT`` are
placeholders expanded below. Attacker-controlled fields (HELO, sender, recipient, reject text)
are captured as opaque strings; nothing here interprets them.
"""

from __future__ import annotations

from dataclasses import dataclass

# Short ids are upper-case hex; long ids (enable_long_queue_ids) use a base-52 alphabet without
# vowels, so no English word ("warning", "statistics") can be taken for a queue id.
QID_RE = r"[0-9A-F]{5,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}"
QID = rf"(?P<queue_id>{QID_RE})"
QID_OR_NOQUEUE = rf"(?P<queue_id>{QID_RE}|NOQUEUE)"


def qid_onepass(noqueue: bool = False) -> str:
    """QID_RE (or NOQUEUE too) with no ambiguity: the same strings, read as a trie over the
    characters both alphabets share ([0-9BCDF]) that branches at the first character only one
    of them has. The regex crate reads captures of such a pattern with its one-pass DFA."""
    hex_, b52 = "[0-9A-F]", "[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]"
    common, b52_only, b52_only_not_n = ("[0-9BCDF]", "[G-HJ-NP-TV-Zb-df-hj-np-tv-z]",
                                        "[G-HJ-MP-TV-Zb-df-hj-np-tv-z]")

    def more(cls: str, have: int, need: int) -> str:
        return f"{cls}{{{need - have},}}" if need > have else f"{cls}*"

    def level(k: int) -> str:  # k shared characters read so far
        if k == 10:  # long enough for both alphabets
            return f"{common}*(?:[AE]{hex_}*|{b52_only}{b52}*)?"
        alts = [f"{common}{level(k + 1)}", f"[AE]{more(hex_, k + 1, 5)}"]
        if noqueue and k == 0:
            alts += [f"N(?:OQUEUE|{more(b52, 1, 10)})", f"{b52_only_not_n}{more(b52, 1, 10)}"]
        else:
            alts.append(f"{b52_only}{more(b52, k + 1, 10)}")
        return "(?:" + "|".join(alts) + ")" + ("?" if k >= 5 else "")

    return level(0)


QID_FAST = rf"(?P<queue_id>{qid_onepass()})"
QID_OR_NOQUEUE_FAST = rf"(?P<queue_id>{qid_onepass(noqueue=True)})"
# name[address] with an optional :port (smtpd_client_port_logging). The name may be "unknown".
CLIENT = r"(?P<client_name>[^\[ \t]*)\[(?P<client_ip>[^\] \t]*)\](?::(?P<client_port>[0-9]+))?"
# STAGE's alternatives are all [A-Z-]+, and a space follows it in every pattern
STAGE_FAST = r"(?P<stage>[A-Z-]+)"
# CLIENT without its optional port, for the one-pass patterns (which factor ":port" with what
# follows it)
CLIENT_FAST = r"(?P<client_name>[^\[ \t]*)\[(?P<client_ip>[^\] \t]*)\]"
PS_CLIENT = r"\[(?P<client_ip>[^\] \t]*)\]:(?P<client_port>[0-9]+)"
STAGE = r"(?P<stage>CONNECT|EHLO|HELO|MAIL|RCPT|VRFY|ETRN|DATA|BDAT|END-OF-MESSAGE|[A-Z-]+)"
# The from/to/proto/helo tail of smtpd and postscreen (comma-separated) reject lines. The HELO
# comes last and is taken to the end of the line, so a HELO containing "; from=<" cannot move
# the other fields.
TAIL = (
    r"(?:; |;? from=<(?P<sender>.*?)>,? )?"
    r"(?:to=<(?P<recipient>.*?)>,? )?"
    r"proto=(?P<proto>[A-Za-z]+),?"
    r"(?: helo=<(?P<helo>.*)>)?$"
)
# The common forms of TAIL (a "; " first, addresses without ">") without ambiguity, read in one
# pass; the helo group runs to the end of the line, its closing ">" included.
TAIL_FAST = (
    r"^(?:; (?:from=<(?P<sender>[^>\n]*)>,? )?)?"
    r"(?:to=<(?P<recipient>[^>\n]*)>,? )?"
    r"proto=(?P<proto>[A-Za-z]+),?"
    r"(?: helo=<(?P<helo>.*))?$"
)

EVENT_COLUMNS: dict[str, str] = {
    # name -> polars dtype name; every event row has these columns (null where not applicable)
    "time": "datetime",
    "host": "str",
    "program": "str",
    "instance": "str",
    "service": "str",
    "daemon": "str",
    "pid": "int",
    "queue_id": "str",
    "kind": "str",
    "client_name": "str",
    "client_ip": "str",
    "client_port": "int",
    "helo": "str",
    "sender": "str",
    "recipient": "str",
    "orig_recipient": "str",
    "proto": "str",
    "action": "str",
    "stage": "str",
    "code": "int",
    "enhanced_code": "str",
    "object": "str",
    "reason": "str",
    "reason_class": "str",
    "rule_id": "str",
    "relay": "str",
    "delay": "float",
    "delays": "str",
    "dsn": "str",
    "status": "str",
    "response": "str",
    "next_queue_id": "str",
    "message_id": "str",
    "size": "int",
    "nrcpt": "int",
    "sasl_method": "str",
    "sasl_username": "str",
    "orig_queue_id": "str",
    "orig_client_name": "str",
    "orig_client_ip": "str",
    "result": "str",
    "identity": "str",
    "domain": "str",
    "selector": "str",
    "tls": "str",
    "commands": "str",
    "detail": "str",
    "file": "str",
    "line_no": "int",
}


@dataclass(frozen=True)
class LineKind:
    name: str
    daemons: frozenset[str]
    words: frozenset[str]
    pattern: str
    # Postprocessing steps the reader applies to rows of this kind.
    reject_text: bool = False  # split "text" into code / enhanced_code / object / reason
    # The pattern reads only the fixed start of the line; the rest is the reject text up to
    # where TAIL matches through the end of the line (the leftmost such place), then TAIL's
    # fields. Same result as "(?P<text>.*?)(?:TAIL)?$", without a regex capture over the
    # whole text: capture cost grows with the length captured.
    text_tail: bool = False
    doc: str = ""
    # An optional cheaper pattern the reader tries first; the lines it does not match go to
    # ``pattern``. It has the same groups in the same order, matches only lines ``pattern``
    # matches, and captures the same text from them (tests/test_extract_fastpatterns.py
    # checks this on every line at hand and on hostile variants). What makes it cheap: no lazy
    # repetition, no alternatives that start alike, free-text fields as "[^>]*" instead of
    # ".*?>"; the regex crate then resolves its captures with a one-pass DFA instead of a
    # backtracking search.
    # Lines with unusual fields (a ">" in an address) are left to ``pattern``.
    fast: str = ""
    # (group, suffix): the fast pattern's group runs to the end of the line, suffix included
    # (a group followed by a literal at the end of the line cannot be read in one pass); a line
    # counts as matched only if the capture ends with the suffix, which is then cut off.
    fast_suffix: tuple[str, str] | None = None


def _k(name: str, daemons: str, words: str, pattern: str, **kw: object) -> LineKind:
    return LineKind(name, frozenset(daemons.split()), frozenset(words.split()), pattern,
                    **kw)  # type: ignore[arg-type]


SMTPD = "smtpd"
DELIVERY = "smtp lmtp local virtual pipe error retry discard qmgr"
ACTIONS = "reject warn hold discard filter redirect reject_warning prepend bcc"

KINDS: tuple[LineKind, ...] = (
    _k("connect", SMTPD, "connect", rf"^connect from {CLIENT}$"),
    _k("disconnect", SMTPD, "disconnect",
       rf"^disconnect from {CLIENT}(?P<commands>(?: [a-z]+=[0-9]+(?:/[0-9]+)?)*)$"),
    _k("client", SMTPD, "client",
       rf"^{QID}: client={CLIENT}"
       r"(?:, sasl_method=(?P<sasl_method>[^,]*))?"
       r"(?:, sasl_username=(?P<sasl_username>[^,]*))?"
       r"(?:, sasl_sender=[^,]*)?"
       r"(?:, orig_queue_id=(?P<orig_queue_id>[^,]+))?"
       r"(?:, orig_client=(?P<orig_client_name>[^\[ \t]*)\[(?P<orig_client_ip>[^\]]*)\])?$",
       fast=rf"^{QID_FAST}: client={CLIENT_FAST}(?::(?P<client_port>[0-9]+))?"
       r"(?:, (?:sasl_method=(?P<sasl_method>[^,]*), sasl_username=(?P<sasl_username>[^,]*)|"
       r"orig_queue_id=(?P<orig_queue_id>[^,]+), "
       r"orig_client=(?P<orig_client_name>[^\[ \t]*)\[(?P<orig_client_ip>[^\]]*)\]))?$"),
    # smtpd (and postscreen) access decisions: reject, warn, hold, discard, filter, redirect.
    # The from/to/proto/helo tail is missing on some postscreen lines ("too many connections").
    _k("reject", "smtpd postscreen", ACTIONS,
       rf"^{QID_OR_NOQUEUE}: (?P<action>reject|warn|hold|discard|filter|redirect|"
       rf"reject_warning|prepend|bcc): {STAGE} from {CLIENT}: ", reject_text=True,
       text_tail=True,
       fast=rf"^{QID_OR_NOQUEUE_FAST}: (?P<action>re(?:ject(?:_warning)?|direct)|warn|hold|"
       rf"discard|filter|prepend|bcc): {STAGE_FAST} from {CLIENT_FAST}:"
       r"(?:(?P<client_port>[0-9]+):)? "),
    _k("milter", "smtpd cleanup", "milter-reject milter-discard milter-hold milter-tempfail",
       rf"^{QID_OR_NOQUEUE}: milter-(?P<action>reject|discard|hold|tempfail): {STAGE} from "
       rf"{CLIENT}: (?P<text>.*?){TAIL}", reject_text=True),
    # cleanup header_checks / body_checks / milter actions on a queued message. The header
    # (or body line) is the sender's text and comes first: it is read up to the LAST place
    # where the rest of the line reads as the client and from/to/proto/helo, so a header
    # holding " from a[192.0.2.1]; from=<ceo@...> ...: rule R0001" cannot set the sender,
    # client or the text (whose rule id is credited); the text is the operator's own.
    # "to=<...>" is missing while cleanup knows no recipient yet (sendmail -t).
    _k("check", "cleanup", "reject warning hold discard replace prepend redirect filter info bcc",
       rf"^{QID}: (?P<action>reject|warning|hold|discard|replace|prepend|redirect|filter|info|"
       r"bcc): (?P<object>header|body|mime-header|nested-header) (?P<detail>.*) from "
       r"(?P<client_name>[^\[ \t;]*)(?:\[(?P<client_ip>[^\] \t]*)\](?::[0-9]+)?)?; "
       r"from=<(?P<sender>.*?)>(?: to=<(?P<recipient>.*?)>)?(?: proto=(?P<proto>[A-Za-z]+))?"
       r"(?: helo=<(?P<helo>[^>]*)>)?(?:: (?P<text>.*))?$", reject_text=True),
    _k("message_id", "cleanup", "message-id resent-message-id",
       rf"^{QID}: (?:resent-)?message-id=<?(?P<message_id>.*?)>?$",
       fast=rf"^{QID_FAST}: (?:resent-)?message-id=<(?P<message_id>[^>\n]*)>$"),
    _k("qmgr_from", "qmgr", "from",
       rf"^{QID}: from=<(?P<sender>.*?)>, size=(?P<size>[0-9]+), nrcpt=(?P<nrcpt>[0-9]+) "
       r"\(queue active\)$",
       fast=rf"^{QID_FAST}: from=<(?P<sender>[^>\n]*)>, size=(?P<size>[0-9]+), "
       r"nrcpt=(?P<nrcpt>[0-9]+) \(queue active\)$"),
    _k("expired", "qmgr", "from",
       rf"^{QID}: from=<(?P<sender>.*?)>, status=(?P<status>expired|force-expired), "
       r"returned to sender$"),
    _k("removed", "qmgr", "removed", rf"^{QID}: removed$", fast=rf"^{QID_FAST}: removed$"),
    # status: sent, deferred, bounced, expired ... and the address verification probe's
    # "deliverable" / "undeliverable" / "undeliverable-but-not-cached"
    _k("delivery", DELIVERY, "to",
       rf"^{QID}: to=<(?P<recipient>.*?)>,(?: orig_to=<(?P<orig_recipient>.*?)>,)? "
       r"relay=(?P<relay>[^,]*),(?: conn_use=[0-9]+,)? delay=(?P<delay>[0-9.]+),"
       r"(?: delays=(?P<delays>[0-9./]+),)? dsn=(?P<dsn>[0-9]\.[0-9]{1,3}\.[0-9]{1,3}), "
       r"status=(?P<status>[a-z-]+)(?: \((?P<response>.*)\))?$",
       fast=rf"^{QID_FAST}: to=<(?P<recipient>[^>\n]*)>, "
       r"(?:orig_to=<(?P<orig_recipient>[^>\n]*)>, )?relay=(?P<relay>[^,]*), "
       r"(?:conn_use=[0-9]+, )?delay=(?P<delay>[0-9.]+), d(?:elays=(?P<delays>[0-9./]+), d)?"
       r"sn=(?P<dsn>[0-9]\.[0-9]{1,3}\.[0-9]{1,3}), status=(?P<status>[a-z-]+)"
       r"(?: \((?P<response>.*))?$", fast_suffix=("response", ")")),
    _k("bounce_notice", "bounce", "sender postmaster",
       rf"^{QID}: (?P<detail>(?:sender|postmaster) (?:non-delivery|delivery status|delay|"
       r"success) notification): (?P<next_queue_id>[0-9A-Za-z]+)$"),
    _k("pickup", "pickup", "uid", rf"^{QID}: uid=(?P<detail>[0-9]+) from=<(?P<sender>.*?)>$"),
    _k("sasl_failure", SMTPD, "warning",
       rf"^warning: {CLIENT}: SASL (?P<sasl_method>[0-9A-Za-z_-]+) authentication failed"
       r"(?:: (?P<reason>.*))?$"),
    _k("non_smtp_command", SMTPD, "warning",
       rf"^warning: non-SMTP command from {CLIENT}: (?P<detail>.*)$"),
    _k("dns_warning", SMTPD, "warning",
       r"^warning: (?:hostname (?P<client_name>[^ \t]+) does not resolve to address "
       r"(?P<client_ip>[^ \t:]+)|(?P<detail>[^ \t:]+): hostname (?P<helo>[^ \t]+) verification "
       r"failed|(?P<detail2>[^ \t:]+): address not listed for hostname (?P<object>[^ \t]+))"
       r"(?::? (?P<reason>.*))?$"),
    _k("lost_connection", SMTPD, "lost",
       rf"^lost connection after {STAGE}(?: \((?P<detail>[^)]*)\))? from {CLIENT}$",
       fast=rf"^lost connection after {STAGE_FAST} (?:\((?P<detail>[^)]*)\) )?from {CLIENT_FAST}"
       r"(?::(?P<client_port>[0-9]+))?$"),
    _k("timeout", SMTPD, "timeout",
       rf"^timeout after {STAGE}(?: \((?P<detail>[^)]*)\))? from {CLIENT}$",
       fast=rf"^timeout after {STAGE_FAST} (?:\((?P<detail>[^)]*)\) )?from {CLIENT_FAST}"
       r"(?::(?P<client_port>[0-9]+))?$"),
    _k("too_many_errors", SMTPD, "too",
       rf"^too many errors after {STAGE}(?: \((?P<detail>[^)]*)\))? from {CLIENT}$",
       fast=rf"^too many errors after {STAGE_FAST} (?:\((?P<detail>[^)]*)\) )?from {CLIENT_FAST}"
       r"(?::(?P<client_port>[0-9]+))?$"),
    _k("improper_pipelining", SMTPD, "improper",
       rf"^improper command pipelining after {STAGE} from {CLIENT}: ?(?P<detail>.*)$"),
    _k("tls", "smtpd smtp lmtp", "Anonymous Trusted Verified Untrusted TLS",
       r"^(?:(?P<detail>Anonymous|Trusted|Verified|Untrusted) )?TLS connection established "
       r"(?:from|to) (?P<client_name>[^\[ \t]*)\[(?P<client_ip>[^\] \t]*)\](?::[0-9]+)?: "
       r"(?P<tls>[^ \t]+) with cipher (?P<selector>[^ \t]+)",
       fast=r"^(?P<detail>Anonymous|Trusted|Verified|Untrusted) TLS connection established "
       rf"(?:from|to) {CLIENT_FAST}:(?:[0-9]+:)? (?P<tls>[^ \t]+) with cipher "
       r"(?P<selector>[^ \t]+)"),
    _k("ps_connect", "postscreen", "CONNECT",
       rf"^CONNECT from {PS_CLIENT} to \[[^\]]*\]:[0-9]+$"),
    _k("ps_pass", "postscreen", "PASS", rf"^PASS (?P<detail>NEW|OLD) {PS_CLIENT}$"),
    _k("ps_listed", "postscreen",
       "WHITELISTED ALLOWLISTED BLACKLISTED DENYLISTED WHITELIST ALLOWLIST",
       rf"^(?P<detail>(?:WHITE|ALLOW|BLACK|DENY)LISTED|(?:WHITELIST|ALLOWLIST) VETO) "
       rf"{PS_CLIENT}$"),
    _k("ps_dnsbl", "postscreen", "DNSBL",
       rf"^DNSBL rank (?P<detail>[0-9]+) for {PS_CLIENT}$"),
    _k("ps_pregreet", "postscreen", "PREGREET",
       rf"^PREGREET [0-9]+ after (?P<delay>[0-9.]+) from {PS_CLIENT}: (?P<detail>.*)$"),
    _k("ps_hangup", "postscreen", "HANGUP",
       rf"^HANGUP after (?P<delay>[0-9.]+) from {PS_CLIENT} in (?P<detail>.*)$"),
    _k("ps_command_limit", "postscreen", "COMMAND",
       rf"^COMMAND (?P<detail>COUNT|TIME|LENGTH|PIPELINING) LIMIT from {PS_CLIENT}"
       r"(?: after (?P<stage>.*))?$"),
    # postscreen's deep protocol tests (pipelining, bare newline, non-SMTP command) and
    # its refusal of DATA/BDAT ("... without valid RCPT from [addr]:port")
    _k("ps_protocol", "postscreen", "BARE NON-SMTP COMMAND DATA BDAT",
       r"^(?P<detail>BARE NEWLINE|NON-SMTP COMMAND|COMMAND PIPELINING|"
       rf"(?:DATA|BDAT) without valid RCPT) from {PS_CLIENT}(?: after .*)?$"),
    _k("ps_disconnect", "postscreen", "DISCONNECT", rf"^DISCONNECT {PS_CLIENT}$"),
    _k("dnsblog", "dnsblog", "addr",
       r"^addr (?P<client_ip>[^ \t]+) listed by domain (?P<domain>[^ \t]+) "
       r"as (?P<detail>[^ \t]+)$"),
    # policyd-spf: "prepend Received-SPF: Pass (mailfrom) identity=..." (its action line) and
    # "Pass; identity=..." (its result line, older versions or debugLevel settings).
    # Debian's policyd-spf (2.0) writes an empty queue-id field first: "policyd-spf[235]: : ...".
    # The HELO is the client's text and may hold "; envelope-from=...; receiver=...": it runs
    # to the last "; envelope-from=" (the fast pattern leaves a HELO with a ";" to this one).
    _k("spf", "policyd-spf",
       "prepend Pass Fail Softfail SoftFail Neutral None Temperror TempError Permerror PermError",
       r"^(?:: )?(?:prepend Received-SPF: )?(?P<result>Pass|Fail|Softfail|SoftFail|Neutral|None|"
       r"Temperror|TempError|Permerror|PermError)(?: \([^)]*\))?;? "
       r"identity=(?P<identity>[0-9A-Za-z_]+); "
       r"client-ip=(?P<client_ip>[^; \t]+); helo=(?P<helo>(?s:.*)); "
       r"envelope-from=(?P<sender>[^;]*); receiver=(?P<recipient>[^;]*?)[ \t]*$",
       fast=r"^(?:: )?(?:prepend Received-SPF: )?(?P<result>P(?:ass|erm(?:error|Error))|Fail|"
       r"Soft(?:fail|Fail)|N(?:eutral|one)|Temp(?:error|Error))(?:; | (?:\([^)]*\);? )?)"
       r"identity=(?P<identity>[0-9A-Za-z_]+); client-ip=(?P<client_ip>[^; \t]+); "
       r"helo=(?P<helo>[^;]*); envelope-from=(?P<sender>[^;]*); "
       r"receiver=(?P<recipient>[^; \t]*)[ \t]*$"),
    _k("spf_action", "policyd-spf", "",
       r"^(?:: )?(?:(?P<action>reject|defer|REJECT|DEFER) )?(?P<code>[45][0-9][0-9]) "
       r"(?P<enhanced_code>[0-9]\.[0-9]{1,3}\.[0-9]{1,3}) (?P<reason>.*)$"),
    _k("dkim", "opendkim", "",
       rf"^{QID}: (?P<detail>.*)$", fast=rf"^{QID_FAST}: (?P<detail>.*)$"),
    _k("dmarc", "opendmarc", "",
       rf"^{QID}: (?P<domain>[^ \t:()]+) (?P<result>pass|fail|none|bestguesspass|quarantine|"
       r"reject|temperror|permerror)$",
       fast=rf"^{QID_FAST}: (?P<domain>[^ \t:()]+) (?P<result>p(?:ass|ermerror)|fail|none|"
       r"bestguesspass|quarantine|reject|temperror)$"),
    _k("dmarc_info", "opendmarc", "", rf"^{QID}: (?P<detail>.*)$"),
    # start, stop and configuration lines of the milters and the policy server
    _k("milter_info", "opendkim opendmarc policyd-spf", "",
       r"^(?P<detail>(?:OpenDKIM|OpenDMARC) Filter v[^ \t]+ (?:starting|terminating)(?: .*)?|"
       r"additional trusted authentication services: .*|Policy server .*|"
       r"(?:OpenDKIM|OpenDMARC)(?: Filter)?: (?:exiting|terminating).*)$"),
    # Recognised Postfix messages that carry nothing triage models; kept as events so they are
    # counted, never reported as unparsed.
    _k("warning", "*", "warning error fatal panic",
       rf"^(?:(?:{QID_RE}|NOQUEUE): )?(?P<action>warning|error|fatal|panic): (?P<detail>.*)$"),
    _k("postfix_info", "*", "*",
       r"^(?P<detail>statistics: .*|daemon started .*|reload .*|terminating on signal .*|"
       r"(?:starting|stopping|refreshing) the Postfix mail system|"
       r"waiting for the Postfix mail system to terminate|"
       r"the Postfix mail system is (?:running|not running): .*|"
       r"(?:[0-9A-Za-z]+: )?(?:sender|postmaster) .*notification.*|"
       r"connect to .*|(?:[0-9A-Za-z]+: )?host .* said: .*|"
       r"(?:[0-9A-Za-z]+: )?enabling PIPELINING .*|(?:[0-9A-Za-z]+: )?lost connection .*|"
       r"(?:[0-9A-Za-z]+: )?conversation with .*|(?:[0-9A-Za-z]+: )?Cannot start TLS.*|"
       r"(?:[0-9A-Za-z]+: )?(?:warning: )?header .*|SSL_accept error .*|"
       r"(?:[0-9A-Za-z]+: )?replace: .*|(?:[0-9A-Za-z]+: )?(?:skipped|held|released).*|"
       r"(?:[0-9A-Za-z]+: )?(?:from=<.*|to=<.*)|table .* has changed -- restarting|"
       r"(?:Placed on hold|Released from hold|Requeued|Deleted): [0-9]+ messages?)$"),
)

KIND_NAMES = tuple(k.name for k in KINDS)

# reason_class: the first pattern that matches the reject reason (and its object) wins.
REASON_CLASSES: tuple[tuple[str, str], ...] = (
    ("spf", r"(?i)(?:^|[^0-9A-Za-z_])SPF(?:[^0-9A-Za-z_]|$)"),
    ("rbl", r"(?i)blocked using |listed (?:at|by|in) "),
    ("relay", r"Relay access denied"),
    ("unknown_user", r"(?i)User unknown|unknown user|Recipient address rejected: "
                     r"(?:undeliverable|User unknown)"),
    ("rdns", r"(?i)cannot find your (?:reverse )?hostname|Client host rejected: cannot find"),
    ("client", r"Client host rejected"),
    ("helo", r"Helo command rejected"),
    ("sender", r"Sender address rejected"),
    ("recipient", r"Recipient address rejected"),
    ("dmarc", r"(?i)DMARC"),
    ("dkim", r"(?i)DKIM"),
    ("rate", r"(?i)too many|rate limit|Too much mail"),
    ("greylist", r"(?i)greylist"),
    ("size", r"(?i)too large|exceeds size"),
    ("policy", r"(?i)policy|Service (?:currently )?unavailable"),
    ("content", r"(?i)spam|virus|content|message (?:rejected|content)"),
    ("data", r"(?i)Data command rejected|Improper use of SMTP command pipelining"),
)
