"""RFC 5321 paths and ESMTP parameters of MAIL FROM / RCPT TO.

Owns: splitting ``FROM:<path> params``, path syntax, xtext, SIZE/BODY/SMTPUTF8/AUTH/RET/
ENVID/NOTIFY/ORCPT.  Parsers return a value or raise ``ParamError`` carrying the Postfix reply.
Must not import: anything above ``replies``.
Follows: RFC 5321 §4.1.2, RFC 1870, RFC 6152, RFC 6531, RFC 4954 §5, RFC 3461 §4.
"""

from __future__ import annotations

import re

from postillion import replies
from postillion.replies import Reply
from postillion.smtp._events import MailParams, RcptParams


class ParamError(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


_OFF_T_MAX = 2**63 - 1  # Postfix off_cvt_string() overflows beyond this

_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_STRING = rf"{_ATOM}(?:\.{_ATOM})*"
_QUOTED = r'"(?:[^"\\\r\n]|\\[\x20-\x7e])*"'
_LOCAL = re.compile(rf"^(?:{_DOT_STRING}|{_QUOTED})$")
_LOCAL_UTF8 = re.compile(rf"^(?:(?:[^\x00-\x20\x7f.@<>()\[\]\\,;:\"]+)(?:\.[^\x00-\x20\x7f.@<>()\[\]\\,;:\"]+)*|{_QUOTED})$")
_DOMAIN_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_ADDR_LITERAL = re.compile(r"^\[(?:\d{1,3}(?:\.\d{1,3}){3}|IPv6:[0-9A-Fa-f:.]+)\]$")


def xtext_decode(value: str) -> str:
    """RFC 3461 xtext: ``+XX`` hex escapes; raises ValueError on bad syntax."""
    if any(c == "+" for c in _XTEXT_HEX.sub("", value)):
        raise ValueError("bad xtext")
    if any(ord(c) < 33 or ord(c) > 126 or c == "=" for c in value):
        raise ValueError("bad xtext")
    return _XTEXT_HEX.sub(lambda m: chr(int(m.group(1), 16)), value)


def split_path_and_params(arg: str, keyword: str) -> tuple[str, list[str]] | None:
    """``FROM:<a@b> SIZE=1`` → (``<a@b>``, [``SIZE=1``]); None when ``keyword:`` is missing.

    Like Postfix (without strict_rfc821_envelopes), whitespace after the colon and a path
    without angle brackets are tolerated.
    """
    if arg[: len(keyword) + 1].upper() != keyword + ":":
        return None
    rest = arg[len(keyword) + 1 :].lstrip(" ")
    if not rest:
        return None
    if rest.startswith("<"):
        i, quoted = 1, False
        while i < len(rest):
            c = rest[i]
            if c == "\\" and quoted:
                i += 2
                continue
            if c == '"':
                quoted = not quoted
            elif c == ">" and not quoted:
                break
            i += 1
        else:
            return rest, []  # unclosed "<": parse_path() rejects it as a bad address
        path, tail = rest[: i + 1], rest[i + 1 :]
        if tail and not tail.startswith(" "):
            return None
    else:
        path, _, tail = rest.partition(" ")
    return path, tail.split()


def parse_path(path: str, *, allow_null: bool, utf8: bool) -> str:
    """Validate ``<local@domain>`` (source route dropped) and return the bare address.

    Raises ValueError on bad syntax; the caller picks the reply text.
    """
    inner = path[1:-1] if path.startswith("<") and path.endswith(">") else path
    if path.startswith("<") != path.endswith(">"):
        raise ValueError("unbalanced angle brackets")
    if inner.startswith("@"):  # RFC 5321 source route: <@a,@b:user@c>
        _, colon, inner = inner.partition(":")
        if not colon:
            raise ValueError("bad source route")
    if inner == "":
        if allow_null:
            return ""
        raise ValueError("null address")
    if len(inner.encode("utf-8")) > 512:
        raise ValueError("address too long")
    local, at, domain = inner.rpartition("@")
    if not at:
        local, domain = inner, ""
    local_re = _LOCAL_UTF8 if utf8 else _LOCAL
    if not local or not local_re.match(local):
        raise ValueError("bad local part")
    if at:
        if not domain:
            raise ValueError("empty domain")
        if not _ADDR_LITERAL.match(domain):
            if domain.endswith("."):
                raise ValueError("bad domain")
            for label in domain.split("."):
                if utf8 and not label.isascii():
                    continue
                if not _DOMAIN_LABEL.match(label):
                    raise ValueError("bad domain")
    return inner


def parse_mail_params(
    words: list[str], *, size_limit: int, smtputf8_enable: bool
) -> MailParams:
    size = body = auth = ret = envid = None
    smtputf8 = False
    for word in words:
        name, eq, value = word.partition("=")
        key = name.upper()
        if key == "SIZE" and eq:
            if not value.isascii() or not value.isdigit():
                raise ParamError(replies.BAD_SIZE)
            # (digits counted first: int() refuses strings of more than 4300 digits)
            if len(value.lstrip("0")) > 19 or int(value) > _OFF_T_MAX:
                raise ParamError(replies.R(552, "5.3.4", "Message size exceeds file system imposed limit"))
            size = int(value)
        elif key == "BODY" and eq and value.upper() in ("7BIT", "8BITMIME"):
            body = value.upper()
        elif key == "SMTPUTF8" and not eq and smtputf8_enable:
            smtputf8 = True
        elif key == "AUTH" and eq:
            if auth is not None and auth != "<>":  # Postfix does not store AUTH=<>
                raise ParamError(replies.MULTIPLE_AUTH_PARAM)
            try:
                auth = xtext_decode(value)
            except ValueError:
                raise ParamError(replies.R(501, "5.5.4", "Syntax: MAIL FROM:<address> AUTH=<address>")) from None
        elif key == "RET" and eq:
            if ret is not None or value.upper() not in ("FULL", "HDRS"):
                raise ParamError(replies.R(501, "5.5.4", "Bad RET parameter syntax"))
            ret = value.upper()
        elif key == "ENVID" and eq:
            try:
                decoded = xtext_decode(value)
            except ValueError:
                decoded = None
            if envid is not None or not decoded or len(decoded) > 100:
                raise ParamError(replies.R(501, "5.5.4", "Bad ENVID parameter syntax"))
            envid = decoded
        else:
            raise ParamError(replies.unsupported_option(word))
    if size is not None and size_limit > 0 and size > size_limit:
        raise ParamError(replies.SIZE_EXCEEDED)
    return MailParams(size=size, body=body, smtputf8=smtputf8, auth=auth, ret=ret, envid=envid)


_NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})


def parse_rcpt_params(words: list[str]) -> RcptParams:
    notify: tuple[str, ...] | None = None
    orcpt = None
    for word in words:
        name, eq, value = word.partition("=")
        key = name.upper()
        if key == "NOTIFY" and eq:
            items = tuple(v.upper() for v in value.split(","))
            ok = items == ("NEVER",) or (items and set(items) <= _NOTIFY_WORDS and len(set(items)) == len(items))
            if notify is not None or not ok:
                raise ParamError(replies.R(501, "5.5.4", "Error: Bad NOTIFY parameter syntax"))
            notify = items
        elif key == "ORCPT" and eq:
            addr_type, semi, addr = value.partition(";")
            try:
                decoded = xtext_decode(addr) if semi else None
            except ValueError:
                decoded = None
            if orcpt is not None or not decoded or not addr_type or not addr_type.isascii():
                raise ParamError(replies.R(501, "5.5.4", "Error: Bad ORCPT parameter syntax"))
            orcpt = f"{addr_type.lower()};{decoded}"
        else:
            raise ParamError(replies.unsupported_option(word))
    return RcptParams(notify=notify, orcpt=orcpt)
