"""Server certificates: make a self-signed one, and inspect one for ``postillion check``.

Owns: ``make_self_signed`` (used by ``postillion init``), ``cert_info`` and
``cert_matches_key``.
Must not import: server, config, cli (plain paths in, values out).
Follows: RFC 5280 (X.509 profile; the host name goes in subjectAltName, RFC 6125), Postfix
TLS_README ("Creating a self-signed certificate"): RSA 2048, key file readable by root only.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from postillion.queue.safeio import write_atomic

KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644
RSA_BITS = 2048  # widest client compatibility; what Postfix's docs generate

_KEY_PEM = re.compile(
    rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.*?-----END \1-----\r?\n?", re.S
)


@dataclass(frozen=True, slots=True)
class CertInfo:
    subject: str  # RFC 4514 string, e.g. "CN=mail.example.test"
    sans: tuple[str, ...]  # DNS names and IP addresses from subjectAltName
    not_before: datetime.datetime
    not_after: datetime.datetime  # timezone-aware UTC

    def expired(self, now: datetime.datetime | None = None) -> bool:
        return (now or datetime.datetime.now(datetime.UTC)) >= self.not_after


def make_self_signed(hostname: str, cert_path: Path, key_path: Path, *, days: int = 3650) -> None:
    """Write a new RSA key (mode 0600) and a self-signed certificate for *hostname* (0644).

    Both files are written atomically; an existing pair is replaced.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, content_commitment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(Path(key_path), key_pem, mode=KEY_FILE_MODE)
    write_atomic(Path(cert_path), cert.public_bytes(serialization.Encoding.PEM), mode=CERT_FILE_MODE)


def _load_certs(path: Path) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    if not certs:
        raise ValueError(f"{path}: no certificate found")
    return certs


def cert_info(path: Path) -> CertInfo:
    """Subject, subjectAltNames and validity of the first certificate in *path* (PEM).

    Raises OSError when unreadable and ValueError when there is no PEM certificate.
    """
    cert = _load_certs(path)[0]
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(
            [*san.get_values_for_type(x509.DNSName)]
            + [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
        )
    except x509.ExtensionNotFound:
        sans = ()
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        sans=sans,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def cert_matches_key(cert_path: Path, key_path: Path) -> bool:
    """Whether the first certificate in *cert_path* belongs to the first private key in
    *key_path* (which may be a chain file holding key and certificates)."""
    cert = _load_certs(cert_path)[0]
    match = _KEY_PEM.search(Path(key_path).read_bytes())
    if match is None:
        raise ValueError(f"{key_path}: no PEM private key found")
    key = serialization.load_pem_private_key(match.group(0), password=None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
