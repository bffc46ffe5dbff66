"""`postillion check` on broken configurations: each mistake is reported as `file:line` with a
fix, the exit status is 1, and `start` (foreground and background) refuses with the same
messages without binding anything.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from harness import HOSTNAME, postillion

MAIN_LINES = 32  # lines in the main.cf `postillion init` writes; appended lines follow


@pytest.fixture
def conf() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="postillion-check-", dir="/tmp"))
    config_dir = base / "etc"
    postillion(config_dir, "init", "--hostname", HOSTNAME, "--ports", "0")
    assert len((config_dir / "main.cf").read_text().splitlines()) == MAIN_LINES
    try:
        yield config_dir
    finally:
        shutil.rmtree(base, ignore_errors=True)


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def set_line(path: Path, name: str, value: str) -> int:
    """Replace `name = ...` in main.cf; its 1-based line number."""
    lines = path.read_text().splitlines()
    number = next(i for i, line in enumerate(lines) if line.split("=")[0].strip() == name)
    lines[number] = f"{name} = {value}"
    path.write_text("\n".join(lines) + "\n")
    return number + 1


def assert_refused(config_dir: Path, errors: list[str]) -> None:
    prefixed = [f"postillion: error: {e}" for e in errors]
    check = postillion(config_dir, "check", check=False)
    assert (check.returncode, check.stdout) == (1, "")
    assert check.stderr.splitlines() == [*prefixed, f"postillion: {len(errors)} error(s) in {config_dir}"]
    for argv in (["start", "--foreground"], ["start"]):
        start = postillion(config_dir, *argv, check=False)
        assert start.returncode == 1, argv
        assert [line for line in start.stderr.splitlines() if " error: " in line] == prefixed, argv
    assert not (config_dir / "data" / "run" / "master.pid").exists()


def test_unknown_parameter_with_suggestion(conf: Path) -> None:
    append(conf / "main.cf", "smtpd_tls_securty_level = may\n")
    assert_refused(conf, [
        (f'main.cf:{MAIN_LINES + 1}: smtpd_tls_securty_level: unknown parameter; '
         'did you mean "smtpd_tls_security_level"?'),
    ])


def test_bad_boolean(conf: Path) -> None:
    append(conf / "main.cf", "\n# a comment\nsmtpd_sasl_auth_enable = maybe\n")
    assert_refused(conf, [
        f'main.cf:{MAIN_LINES + 3}: smtpd_sasl_auth_enable: bad boolean value "maybe"; use "yes" or "no"',
    ])


def test_missing_certificate_file(conf: Path) -> None:
    line = set_line(conf / "main.cf", "smtpd_tls_cert_file", "/nonexistent/cert.pem")
    assert_refused(conf, [
        (f"main.cf:{line}: smtpd_tls_cert_file: certificate file not found: /nonexistent/cert.pem; "
         "fix the path, or create the file (e.g. with openssl req -x509)"),
    ])


def test_certificate_key_mismatch(conf: Path) -> None:
    other = conf / "tls" / "other-key.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    line = set_line(conf / "main.cf", "smtpd_tls_key_file", str(other))
    assert_refused(conf, [
        (f"main.cf:{line}: smtpd_tls_key_file: private key {other} does not match the certificate in "
         f"{conf / 'tls' / 'cert.pem'}; use the key the certificate was issued for"),
    ])


def test_unknown_restriction(conf: Path) -> None:
    append(conf / "main.cf", "smtpd_relay_restrictions = permit_mynetworks,\n"
                             "    permit_sasl_authenticatd, reject_unauth_destination\n")
    assert_refused(conf, [
        (f'main.cf:{MAIN_LINES + 1}: smtpd_relay_restrictions: unknown restriction '
         '"permit_sasl_authenticatd"; did you mean "permit_sasl_authenticated"?'),
    ])


def test_several_mistakes_are_all_reported(conf: Path) -> None:
    append(conf / "main.cf", "smtpd_tls_securty_level = may\nsmtpd_sasl_auth_enable = maybe\n")
    assert_refused(conf, [
        (f'main.cf:{MAIN_LINES + 1}: smtpd_tls_securty_level: unknown parameter; '
         'did you mean "smtpd_tls_security_level"?'),
        f'main.cf:{MAIN_LINES + 2}: smtpd_sasl_auth_enable: bad boolean value "maybe"; use "yes" or "no"',
    ])


def test_master_cf_override_mistake(conf: Path) -> None:
    master = conf / "master.cf"
    lines = master.read_text().splitlines()
    number = lines.index("  -o smtpd_tls_security_level=encrypt")
    lines[number] = "  -o smtpd_tls_security_levle=encrypt"
    master.write_text("\n".join(lines) + "\n")
    check = postillion(conf, "check", check=False)
    lines = check.stderr.splitlines()
    assert check.returncode == 1
    assert lines[0] == (
        f"postillion: error: master.cf:{number + 1}: smtpd_tls_security_levle: unknown parameter; "
        'did you mean "smtpd_tls_security_level"?')
    assert lines[-1] == f"postillion: 1 error(s) in {conf}"
    # (Without the encrypt level, AUTH on that service would go in cleartext: also warned about.)
    assert any("AUTH is offered without TLS" in line for line in lines[1:-1]), lines
