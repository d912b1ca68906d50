"""The regex subset triage writes into pcre maps: read alike by Python's re (the matcher) and
by PCRE2 in Postfix, and accepted by PCRE2's compiler.

``unsafe_construct`` finds syntax the two engines read differently; ``pcre2_refusal`` finds
what Python compiles but PCRE2 (as Postfix builds it: 8-bit, no UTF mode, default limits)
refuses, so a rule that passes ``validate_key`` cannot make every later emit fail:

    >>> pcre2_refusal(r"^a{70000}$")
    'a repeat count above 65535 ({70000})'
    >>> pcre2_refusal(r"^[[.a.]]x$")
    'a POSIX collating element or equivalence class ([.a.])'

``non_utf8_escape`` finds ``\\xHH`` byte runs that are not UTF-8: Postfix (smtputf8_enable =
yes) refuses lookup keys that are not valid UTF-8, so such a pattern could never match.
The real ``postmap`` is the final word where it is installed (``install.Postfix.pcre_error``).
"""

from __future__ import annotations

import re

# Regex constructs whose meaning differs between Python's re and PCRE2 (or that Postfix
# reads differently) are refused, so the matcher and Postfix cannot disagree on a rule we write.
_UNSAFE_ESCAPES = set("zZGKRXhHvVNpPQEgkocxu") | set("0123456789")
_UNSAFE_PLAIN = re.compile(r"\[:|\{,|\(\?[^:=!<]|\(\?<[^=!]")
_REPEAT = re.compile(r"\{(\d+)(?:,(\d*))?\}")
_HEX = re.compile(r"\\x([0-9a-fA-F]{2})")

MAX_REPEAT = 65535      # PCRE2: "number too big in {} quantifier"
MAX_NESTING = 250       # PCRE2's default parens nest limit
MAX_COMPILED = 60000    # PCRE2 with LINK_SIZE 2 stops near 65535 bytes; keep a margin


def _hide_escapes(regex: str) -> str:
    """``regex`` with every escape pair replaced by ``__`` (same length)."""
    out, i = [], 0
    while i < len(regex):
        if regex[i] == "\\" and i + 1 < len(regex):
            out.append("__")
            i += 2
        else:
            out.append(regex[i])
            i += 1
    return "".join(out)


def unsafe_construct(regex: str) -> str | None:
    """The first construct of ``regex`` outside the subset Python and PCRE read alike."""
    i = 0
    while i < len(regex):
        if regex[i] == "\\" and i + 1 < len(regex):
            esc = regex[i + 1]
            ok_hex = esc == "x" and re.match(r"[0-9a-fA-F]{2}", regex[i + 2:i + 4])
            ok_digit = esc in "123456789" and not regex[i + 2:i + 3].isdigit()  # backreference
            if esc in _UNSAFE_ESCAPES and not ok_hex and not ok_digit:
                return regex[i:i + 2]
            i += 2
            continue
        i += 1
    m = _UNSAFE_PLAIN.search(_hide_escapes(regex))
    return m.group(0) if m else None


def _posix_collating(plain: str) -> str | None:
    """PCRE2's check_posix_syntax for ``[.x.]`` and ``[=x=]`` (an error in PCRE2, a plain
    class for Python): after a ``[`` followed by ``.`` or ``=``, a terminator ``.]``/``=]``
    before any ``]`` or ``[`` + terminator makes it one."""
    for i in range(len(plain) - 2):
        if plain[i] != "[" or plain[i + 1] not in ".=":
            continue
        term = plain[i + 1]
        for j in range(i + 2, len(plain) - 1):
            if plain[j] == "]" or (plain[j] == "[" and plain[j + 1] == term):
                break
            if plain[j] == term and plain[j + 1] == "]":
                return plain[i:j + 2]
    return None


def class_end(regex: str, i: int) -> int:
    """Where the character class that starts at ``regex[i]`` (a ``[``) ends: the index just
    past its closing ``]`` (past the end of ``regex`` when it is not closed). A ``]`` right
    after ``[`` or ``[^`` is a literal, as is an escaped one."""
    n = len(regex)
    j = i + 1
    j += regex[j:j + 1] == "^"
    j += regex[j:j + 1] == "]"
    while j < n and regex[j] != "]":
        j += 2 if regex[j] == "\\" else 1
    return j + 1


def tokens(regex: str) -> list[str]:
    """``regex`` cut into escapes (``\\x41``, ``\\.``), whole classes (``[^a-z]``),
    counted repeats (``{2,5}``) and single characters."""
    out, i, n = [], 0, len(regex)
    while i < n:
        c = regex[i]
        if c == "\\":
            m = _HEX.match(regex, i)
            j = m.end() if m else i + 2
        elif c == "[":
            j = class_end(regex, i)
        elif c == "{" and (m := _REPEAT.match(regex, i)):
            j = m.end()
        else:
            j = i + 1
        out.append(regex[i:j])
        i = j
    return out


def compiled_size(regex: str) -> tuple[int, int]:
    """(estimated PCRE2 compiled size in bytes, deepest parenthesis nesting) of ``regex``.

    Measured on PCRE2 10.42 (8-bit, LINK_SIZE 2) and rounded up: a literal is 2 bytes, a
    class 33, a group 6 (8 when capturing) plus its content, an alternative 3; a counted
    repeat of a group copies the group once per repetition (a repeated single item is not
    copied)."""
    stack = [0]
    deepest = 0
    last, last_group, prev = 0, False, ""
    for tok in tokens(regex):
        if tok == "(":
            stack.append(5)  # a capturing group until a "?" says otherwise
            deepest = max(deepest, len(stack) - 1)
        elif tok == "?" and prev == "(":
            stack[-1] = 3  # (?:...), (?=...): no group number
        elif tok == ")" and len(stack) > 1:
            last, last_group = stack.pop() + 3, True
            stack[-1] += last
        elif tok == "|":
            stack[-1] += 3
        elif tok in ("*", "+", "?") or (tok[0] == "{" and _REPEAT.fullmatch(tok)):
            if prev not in ("*", "+", "?") and not prev.startswith("{"):
                stack[-1] += _repeat_cost(_REPEAT.fullmatch(tok), last, last_group)
        else:
            last, last_group = (1 if tok in ".^$" or tok[1:] in tuple("dDwWsSbB") else
                                33 if tok[0] == "[" else 2), False
            stack[-1] += last
        prev = tok
    while len(stack) > 1:  # unclosed groups (re.compile refuses them anyway)
        inner = stack.pop()
        stack[-1] += inner
    return stack[0] + 7, deepest


def _repeat_cost(m: re.Match[str] | None, last: int, group: bool) -> int:
    """Bytes a quantifier adds on top of the ``last`` atom it repeats."""
    if not group:
        return 6
    if m is None:  # *, + or ?
        return last + 1
    low = int(m.group(1))
    high = low if m.group(2) is None else (int(m.group(2)) if m.group(2) else low + 1)
    # the atom is already counted once; PCRE2 copies it once per mandatory repetition and
    # wraps each optional one
    return max(low - 1, 0) * last + max(high - low, 0) * (last + 7) + 1


def pcre2_refusal(regex: str) -> str | None:
    """Why PCRE2 (in Postfix) would refuse ``regex`` although Python compiles it, or None."""
    plain = _hide_escapes(regex)
    for m in _REPEAT.finditer(plain):
        if any(g and int(g) > MAX_REPEAT for g in m.groups()):
            return f"a repeat count above {MAX_REPEAT} ({m.group(0)})"
    bad = _posix_collating(plain)
    if bad:
        return f"a POSIX collating element or equivalence class ({bad})"
    size, deepest = compiled_size(regex)
    if deepest > MAX_NESTING:
        return f"parentheses nested {deepest} deep (PCRE2 allows {MAX_NESTING})"
    if size > MAX_COMPILED:
        return (f"a compiled size of about {size} bytes (PCRE2 refuses a regular "
                "expression over 64 KiB)")
    return None


def non_utf8_escape(regex: str) -> str | None:
    """The first run of ``\\xHH`` escapes (outside a class) whose bytes are not valid
    UTF-8, or None. Such a pattern only matches keys that Postfix refuses to look up."""
    run: list[str] = []
    for tok in [*tokens(regex), ""]:
        if _HEX.fullmatch(tok):
            run.append(tok)
            continue
        if run:
            try:
                bytes(int(t[2:], 16) for t in run).decode("utf-8")
            except UnicodeDecodeError:
                return "".join(run)
            run = []
    return None
