"""The SMTP side of the doctor: what a mail client sees, over a real connection (smtplib).

Owns: the steps ``no AUTH before TLS``, ``TLS handshake`` (STARTTLS, or implicit TLS for a
``smtpd_tls_wrappermode`` service) with the certificate it presents, ``AUTH PLAIN over TLS`` and
``AUTH LOGIN over TLS`` (235 expected), ``relay without AUTH refused`` (MAIL FROM:<doctor@
example.org> RCPT TO:<doctor@example.net>, or .com / .invalid when the server accepts mail for
example.net) and ``sender login mismatch refused``.  Nothing is
ever sent past RCPT: every transaction ends with RSET and QUIT.
Must not import: server, cli.
Follows: RFC 3207 (STARTTLS), RFC 8314 (implicit TLS), RFC 4954 (AUTH; 235, 535, 454),
Postfix SASL_README ("smtpd_tls_auth_only", "smtpd_sender_login_maps"), SMTPD_ACCESS_README
(open relay: reject_unauth_destination).
"""

from __future__ import annotations

import ipaddress
import smtplib
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509

from postillion.doctor.report import Step, failed, passed

if TYPE_CHECKING:
    from postillion.config import Params

EHLO_NAME = "doctor.postillion.invalid"
RELAY_SENDER = "doctor@example.org"
RELAY_RECIPIENT = "doctor@example.net"
TIMEOUT = 30.0  # a refused password waits out PAM's delay


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    wrapper: bool  # implicit TLS (smtpd_tls_wrappermode)
    label: str  # the master.cf service name, for fixes
    config_dir: str

    @property
    def reload(self) -> str:
        return f"postillion -c {self.config_dir} reload"


def _context(verify: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context() if verify else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if not verify:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _connect(t: Target, ctx: ssl.SSLContext | None = None) -> smtplib.SMTP:
    if t.wrapper:
        return smtplib.SMTP_SSL(t.host, t.port, local_hostname=EHLO_NAME, timeout=TIMEOUT,
                                context=ctx or _context())
    return smtplib.SMTP(t.host, t.port, local_hostname=EHLO_NAME, timeout=TIMEOUT)


def _tls_session(t: Target, ctx: ssl.SSLContext | None = None) -> smtplib.SMTP:
    """Connected, in TLS, after EHLO.  smtplib's exceptions pass through."""
    smtp = _connect(t, ctx)
    smtp.ehlo()
    if not t.wrapper:
        smtp.starttls(context=ctx or _context())
        smtp.ehlo()
    return smtp


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return f"{code} {text}".replace("\n", " ")


@dataclass
class TlsResult:
    steps: list[Step]
    certificate: x509.Certificate | None


def probe_tls(t: Target, params: Params) -> TlsResult:
    """EHLO in clear text (AUTH must not be there), then the TLS handshake."""
    steps: list[Step] = []
    try:
        smtp = _connect(t)
    except (OSError, smtplib.SMTPException) as exc:
        name = "TLS handshake" if t.wrapper else "SMTP greeting"
        return TlsResult([failed(name, f"cannot talk SMTP to {t.host}:{t.port}: {exc}",
                                 f"look at the maillog of postillion -c {t.config_dir}")], None)
    try:
        if t.wrapper:
            steps.append(passed("no AUTH before TLS", "implicit TLS: nothing is sent in clear text"))
        else:
            smtp.ehlo()
            auth = smtp.esmtp_features.get("auth")
            if auth is not None:
                steps.append(failed(
                    "no AUTH before TLS",
                    f"AUTH offered before TLS (250-AUTH {auth.strip()}): passwords can cross the "
                    "network in clear text",
                    f"smtpd_tls_auth_only = yes or smtpd_tls_security_level = encrypt on that service "
                    f"(master.cf, under {t.label}: -o smtpd_tls_auth_only=yes), then {t.reload}"))
            else:
                steps.append(passed("no AUTH before TLS", "EHLO in clear text does not offer AUTH"))
            if not smtp.has_extn("starttls"):
                steps.append(failed("TLS handshake", "STARTTLS is not offered",
                                    f"set smtpd_tls_security_level = encrypt on {t.label} (master.cf "
                                    "-o) and smtpd_tls_cert_file / smtpd_tls_key_file, then "
                                    f"{t.reload}"))
                return TlsResult(steps, None)
            smtp.starttls(context=_context())
        sock = smtp.sock
        assert isinstance(sock, ssl.SSLSocket)
        from postillion.server.tls import describe_session

        how = "implicit TLS" if t.wrapper else "STARTTLS"
        steps.append(passed("TLS handshake", f"{how}, {describe_session(sock)}"))
        der = sock.getpeercert(binary_form=True)
        cert = x509.load_der_x509_certificate(der) if der else None
        return TlsResult(steps, cert)
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        steps.append(failed("TLS handshake", f"TLS failed: {exc}",
                            f"check smtpd_tls_* for {t.label} with postillion -c {t.config_dir} check "
                            "and look at the maillog"))
        return TlsResult(steps, None)
    finally:
        _quit(smtp)


def chain_error(t: Target) -> str | None:
    """What a client verifying with the system CA store says about the chain (None: fine)."""
    try:
        smtp = _tls_session(t, _context(verify=True))
    except ssl.SSLCertVerificationError as exc:
        return exc.verify_message or str(exc)
    except (OSError, smtplib.SMTPException) as exc:
        return str(exc)
    _quit(smtp)
    return None


def check_auth(t: Target, mechanism: str, user: str, password: str) -> Step:
    name = f"AUTH {mechanism} over TLS"
    try:
        smtp = _tls_session(t)
    except (OSError, smtplib.SMTPException) as exc:
        return failed(name, f"no TLS session: {exc}", "see the TLS steps above")
    try:
        offered = (smtp.esmtp_features.get("auth") or "").upper().split()
        if mechanism not in offered:
            return failed(name, f"{mechanism} is not offered after TLS (AUTH {' '.join(offered) or 'missing'})",
                          f"list it in mech_list of smtpd.conf (mech_list: PLAIN LOGIN), then {t.reload}")
        smtp.user, smtp.password = user, password
        authobject = smtp.auth_plain if mechanism == "PLAIN" else smtp.auth_login
        text: bytes | str
        try:
            code, text = smtp.auth(mechanism, authobject, initial_response_ok=mechanism == "PLAIN")
        except smtplib.SMTPAuthenticationError as exc:
            code, text = exc.smtp_code, exc.smtp_error
        reply = _reply(code, text)
        if code == 235:
            return passed(name, reply)
        if code == 454:
            return failed(name, f"{reply}: the server cannot ask its password backend",
                          "see the SASL steps above and the warning in the maillog")
        return failed(name, f"{reply}: the password was refused",
                      "see the password check above; the maillog names the reason")
    except (OSError, smtplib.SMTPException) as exc:
        return failed(name, f"the session broke: {exc}", "look at the maillog")
    finally:
        _quit(smtp)


def _transaction(smtp: smtplib.SMTP, sender: str, recipient: str) -> tuple[bool | None, str]:
    """(accepted, last reply) for MAIL + RCPT; never DATA.  None: MAIL FROM was refused,
    so RCPT was not tried and nothing is known about the recipient."""
    code, text = smtp.mail(sender)
    if code != 250:
        return None, _reply(code, text)
    code, text = smtp.rcpt(recipient)
    smtp.rset()
    return code == 250, _reply(code, text)


def _listed(domain: str, params: Params, names: tuple[str, ...]) -> bool:
    """Is ``domain`` (or a parent, as ".parent" or parent_domain_matches_subdomains does)
    named in one of these domain-list parameters?  Only names count: tables and files are
    not opened (virtual_alias_domains defaults to $virtual_alias_maps, which lists addresses)."""
    for pname in names:
        for item in params.get_list(pname):
            item = item.lower()
            if ":" in item or item.startswith("/"):
                continue
            if domain == item or domain.endswith("." + item.lstrip(".")):
                return True
    return False


_LOCAL_DOMAIN_LISTS = ("mydestination", "relay_domains", "virtual_alias_domains",
                       "virtual_mailbox_domains")


def relay_recipient(params: Params) -> str | None:
    """An address outside every domain this server accepts mail for: only such a recipient
    tests relaying.  None when every candidate is listed (or hidden in a table)."""
    for domain in ("example.net", "example.com", "doctor.invalid"):
        if not _listed(domain, params, _LOCAL_DOMAIN_LISTS):
            return f"doctor@{domain}"
    return None


def _in_mynetworks(params: Params, client: str) -> bool:
    try:
        addr = ipaddress.ip_address(client)
    except ValueError:
        return False
    for item in params.get_list("mynetworks"):
        item = item.replace("[", "").replace("]", "")
        try:
            if addr in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue  # a lookup table or a host name
    return False


def check_relay(t: Target, params: Params) -> Step:
    name = "relay without AUTH refused"
    recipient = relay_recipient(params)
    if recipient is None:
        return failed(name, "cannot pick a recipient outside mydestination, relay_domains and "
                            "virtual_*_domains (they list example.net, example.com and "
                            "doctor.invalid)",
                      "try by hand: MAIL FROM:<you@example.org> and RCPT TO: an outside address "
                      "without AUTH must be refused")
    try:
        smtp = _tls_session(t)
    except (OSError, smtplib.SMTPException) as exc:
        return failed(name, f"no TLS session: {exc}", "see the TLS steps above")
    try:
        client = smtp.sock.getsockname()[0] if smtp.sock else ""
        accepted, reply = _transaction(smtp, RELAY_SENDER, recipient)
    except (OSError, smtplib.SMTPException) as exc:
        return failed(name, f"the session broke: {exc}", "look at the maillog")
    finally:
        _quit(smtp)
    if accepted is None:
        return failed(name, f"MAIL FROM:<{RELAY_SENDER}> was refused ({reply}), so relaying could "
                            "not be tried", "look at smtpd_sender_restrictions and the maillog")
    if not accepted:
        return passed(name, reply)
    cause = (f"open relay: RCPT TO:<{recipient}> from {client} without AUTH got {reply}")
    lists = params.get_list("smtpd_relay_restrictions") + params.get_list("smtpd_recipient_restrictions")
    if "permit_mynetworks" in lists and _in_mynetworks(params, client):
        cause += f" (permit_mynetworks: {client} is in mynetworks = {params.get('mynetworks')})"
    fix = (f"on {t.label} (master.cf): -o smtpd_relay_restrictions=permit_sasl_authenticated,"
           f"reject_unauth_destination -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject; "
           f"anywhere else end the list with reject_unauth_destination; then {t.reload}")
    return failed(name, cause, fix)


def login_mismatch_settings(params: Params) -> list[str]:
    """What says senders must own their MAIL FROM: the maps and the restrictions using them."""
    found = ["smtpd_sender_login_maps"] if params.get_list("smtpd_sender_login_maps") else []
    for pname in ("smtpd_sender_restrictions", "smtpd_relay_restrictions", "smtpd_recipient_restrictions"):
        found += [r for r in params.get_list(pname) if r.endswith("_sender_login_mismatch")]
    return found


def check_sender_mismatch(t: Target, params: Params, user: str, password: str) -> Step:
    name = "sender login mismatch refused"
    settings = login_mismatch_settings(params)
    try:
        smtp = _tls_session(t)
    except (OSError, smtplib.SMTPException) as exc:
        return failed(name, f"no TLS session: {exc}", "see the TLS steps above")
    try:
        smtp.user, smtp.password = user, password
        try:
            smtp.auth("PLAIN", smtp.auth_plain)
        except smtplib.SMTPException as exc:
            return failed(name, f"cannot log in as {user}: {exc}", "see the AUTH steps above")
        accepted, reply = _transaction(smtp, RELAY_SENDER, RELAY_RECIPIENT)
    except (OSError, smtplib.SMTPException) as exc:
        return failed(name, f"the session broke: {exc}", "look at the maillog")
    finally:
        _quit(smtp)
    if not accepted:
        return passed(name, reply)
    what = " and ".join(settings)
    if not any(s.endswith("_sender_login_mismatch") for s in settings):
        fix = (f"add reject_sender_login_mismatch to smtpd_sender_restrictions on {t.label} "
               f"(master.cf: -o smtpd_sender_restrictions=reject_sender_login_mismatch), then {t.reload}")
    else:
        fix = f"check that smtpd_sender_login_maps does not give {user} the address {RELAY_SENDER}"
    return failed(name, f"{user} may send as MAIL FROM:<{RELAY_SENDER}> ({reply}) although {what} "
                        "is set", fix)
