"""The server certificate as clients see it and as the configuration names it.

Owns: the doctor steps ``certificate expiry``, ``certificate host name``, ``certificate chain``
and ``certificate and key`` (the configured smtpd_tls_chain_files, or smtpd_tls_cert_file and
smtpd_tls_key_file, must belong together, and must be what the running server presents).
Must not import: server, cli.
Follows: RFC 6125 §6.4 (DNS-ID in subjectAltName, CN only without one, "*." for one label),
RFC 5280 (validity), Postfix TLS_README ("Server-side certificate and private key
configuration": the key file defaults to the certificate file).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from postillion.certs import cert_matches_key
from postillion.doctor.report import Step, failed, passed, warned

if TYPE_CHECKING:
    from postillion.config import Params

EXPIRY_WARNING_DAYS = 14


@dataclass(frozen=True, slots=True)
class CertFiles:
    """The configured certificate and key, and the parameters that named them."""

    cert: Path
    key: Path
    cert_param: str
    key_param: str


def configured_files(params: Params) -> CertFiles | None:
    chain = params.get_list("smtpd_tls_chain_files")
    if chain:
        first = params.config_dir / chain[0]
        return CertFiles(first, first, "smtpd_tls_chain_files", "smtpd_tls_chain_files")
    cert = params.get("smtpd_tls_cert_file").strip()
    if not cert:
        return None
    key = params.get("smtpd_tls_key_file").strip() or cert
    return CertFiles(params.config_dir / cert, params.config_dir / key,
                     "smtpd_tls_cert_file", "smtpd_tls_key_file")


def check_expiry(cert: x509.Certificate, now: datetime.datetime | None = None) -> Step:
    name = "certificate expiry"
    now = now or datetime.datetime.now(datetime.UTC)
    until = cert.not_valid_after_utc
    when = until.strftime("%Y-%m-%d %H:%M UTC")
    fix = "renew the certificate (postillion init makes a self-signed one), then postillion reload"
    if now >= until:
        return failed(name, f"the certificate expired on {when}", fix)
    if now < cert.not_valid_before_utc:
        start = cert.not_valid_before_utc.strftime("%Y-%m-%d %H:%M UTC")
        return failed(name, f"the certificate is not valid before {start}",
                      "check the system clock, or use a certificate that is valid now")
    days = (until - now).days
    if days < EXPIRY_WARNING_DAYS:
        return warned(name, f"the certificate expires in {days} days ({when})", fix,
                      detail=f"valid until {when}")
    return passed(name, f"valid until {when}")


def cert_names(cert: x509.Certificate) -> list[str]:
    """DNS names of subjectAltName; the subject CN only when there is no such extension."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return list(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]


def _matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return pattern == host


def check_hostname(cert: x509.Certificate, myhostname: str) -> Step:
    name = "certificate host name"
    names = cert_names(cert)
    if any(_matches(n, myhostname) for n in names):
        return passed(name, myhostname)
    shown = ", ".join(names) or "no DNS name"
    return failed(name, f"the certificate is for {shown}, not for myhostname {myhostname}",
                  f"use a certificate for {myhostname}, or set myhostname to the name clients "
                  "connect to")


def check_chain(cert: x509.Certificate, verify_error: str | None) -> Step:
    """``verify_error`` is what a client with the system CA store said (None: it verified)."""
    name = "certificate chain"
    if cert.issuer == cert.subject:
        return passed(name, "self-signed: fine for the certificate postillion init made, but "
                            "mail clients warn until the user trusts it")
    if verify_error is None:
        return passed(name, "verified with the system CA certificates")
    return failed(name, f"clients cannot verify the chain: {verify_error}",
                  "put the intermediate CA certificates after the server certificate in the "
                  "certificate file (or smtpd_tls_chain_files), then postillion reload")


def _served_matches(served: x509.Certificate, path: Path) -> bool:
    try:
        first = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return False
    return first.public_bytes(serialization.Encoding.DER) == served.public_bytes(serialization.Encoding.DER)


def check_files(files: CertFiles | None, served: x509.Certificate | None, config_dir: Path) -> Step:
    name = "certificate and key"
    if files is None:
        return failed(name, "no server certificate is configured",
                      "set smtpd_tls_cert_file and smtpd_tls_key_file (or smtpd_tls_chain_files)")
    try:
        ok = cert_matches_key(files.cert, files.key)
    except (OSError, ValueError, TypeError) as exc:
        return failed(name, f"cannot read {files.cert_param} / {files.key_param}: {exc}",
                      f"point {files.cert_param} at a PEM certificate and {files.key_param} at "
                      "its unencrypted PEM private key")
    if not ok:
        return failed(name, f"{files.key_param} {files.key} does not match the certificate in "
                            f"{files.cert} ({files.cert_param})",
                      "use the private key the certificate was issued for (postillion -c "
                      f"{config_dir} check finds this too); the running server keeps its old pair "
                      "until a reload, which would fail now")
    if served is not None and not _served_matches(served, files.cert):
        return failed(name, f"the server presents another certificate than {files.cert}",
                      f"postillion -c {config_dir} reload, so that it loads the configured files")
    return passed(name, f"{files.cert} and {files.key}" if files.key != files.cert else str(files.cert))
