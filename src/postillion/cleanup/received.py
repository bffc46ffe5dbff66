"""The Received: header smtpd prepends to every message, in Postfix's exact layout.

Owns: ``received_header(...) -> bytes`` (folded with CRLF + TAB, ending in CRLF).
Must not import: server, queue, maillog (the session passes plain values).
Follows: Postfix smtpd(8) ``smtpd.c`` (the Received: lines written at DATA), RFC 5321
section 4.4 (trace information), RFC 3848 (ESMTPS/ESMTPA/ESMTPSA), smtpd_tls_received_header
and smtpd_sasl_authenticated_header in postconf(5).

Layout (each ``|`` line is one folded line)::

    Received: from HELO (NAME [ADDR])
    |	(using TLSv1.3 with cipher ... (256/256 bits)          } only with TLS and
    |	 key-exchange X25519 ...)                              } smtpd_tls_received_header
    |	(No client certificate requested)                      }
    |	(Authenticated sender: alice)          only with smtpd_sasl_authenticated_header
    |	by MYHOSTNAME (MAIL_NAME) with PROTOCOL id QUEUEID
    |	for <RCPT>; DATE                       with exactly one recipient, else:
    |	by MYHOSTNAME (MAIL_NAME) with PROTOCOL id QUEUEID;
    |	DATE
"""

from __future__ import annotations

import datetime

from postillion.cleanup.headers import mail_date, quote_822_local

_KEY_EXCHANGE = " key-exchange "


def _clean(text: str) -> str:
    """Client-supplied text inside the header: no control characters, no line breaks."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _comment(text: str) -> str:
    """Text safe inside an RFC 5322 comment: backslash-quote parentheses and backslashes."""
    return _clean(text).replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _rfc_addr(addr: str) -> str:
    return f"IPv6:{addr}" if ":" in addr and not addr.startswith("IPv6:") else addr


def received_header(
    *,
    helo: str | None,
    client_name: str | None,
    client_addr: str,
    tls_description: str | None,
    tls_received_header: bool,
    sasl_username: str | None,
    myhostname: str,
    mail_name: str = "Postfix",
    protocol: str,
    queue_id: str,
    single_recipient: str | None,
    now: datetime.datetime,
    tls_ask_ccert: bool = False,
) -> bytes:
    """The complete Received: header, CRLF-terminated.

    *client_name* None means the reverse lookup failed (``unknown``); *helo* None means the
    client sent none (the name is used, as Postfix does).  Pass *sasl_username* only when
    ``smtpd_sasl_authenticated_header = yes``; *tls_description* is
    ``server.tls.describe_session()``'s text or None without TLS.
    """
    name = _clean(client_name) if client_name else "unknown"
    lines = [f"Received: from {_comment(helo) if helo else name} ({name} [{_rfc_addr(client_addr)}])"]
    if tls_description and tls_received_header:
        main, sep, extra = tls_description.partition(_KEY_EXCHANGE)
        if sep:
            lines.append(f"\t(using {main}")
            lines.append(f"\t key-exchange {extra})")
        else:
            lines.append(f"\t(using {main})")
        if tls_ask_ccert:
            lines.append("\t(Client did not present a certificate)")
        else:
            lines.append("\t(No client certificate requested)")
    if sasl_username:
        lines.append(f"\t(Authenticated sender: {_comment(sasl_username)})")
    by = f"\tby {myhostname} ({mail_name}) with {protocol} id {queue_id}"
    if single_recipient is not None:
        lines.append(by)
        lines.append(f"\tfor <{_clean(quote_822_local(single_recipient))}>; {mail_date(now)}")
    else:
        lines.append(by + ";")
        lines.append(f"\t{mail_date(now)}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
