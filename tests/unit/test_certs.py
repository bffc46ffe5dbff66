"""certs.py: self-signed certificate generation and inspection."""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path

import trustme

from postillion.certs import cert_info, cert_matches_key, make_self_signed


def test_self_signed_cert_is_usable_and_described(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    make_self_signed("mail.example.test", cert, key, days=30)
    assert key.stat().st_mode & 0o777 == 0o600
    assert cert.stat().st_mode & 0o777 == 0o644
    info = cert_info(cert)
    assert info.subject == "CN=mail.example.test"
    assert info.sans == ("mail.example.test",)
    left = info.not_after - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=29) < left <= datetime.timedelta(days=30)
    assert not info.expired()
    assert cert_matches_key(cert, key)
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)  # OpenSSL accepts the pair


def test_cert_matches_key_detects_mismatch_and_reads_chain_files(tmp_path: Path) -> None:
    ca = trustme.CA()
    a, b = ca.issue_cert("a.test"), ca.issue_cert("b.test")
    a.cert_chain_pems[0].write_to_path(tmp_path / "a.pem")
    b.private_key_pem.write_to_path(tmp_path / "bkey.pem")
    chain = tmp_path / "chain.pem"
    chain.write_bytes(a.private_key_pem.bytes() + b"".join(p.bytes() for p in a.cert_chain_pems))
    assert not cert_matches_key(tmp_path / "a.pem", tmp_path / "bkey.pem")
    assert cert_matches_key(chain, chain)
    assert cert_info(chain).sans == ("a.test",)
