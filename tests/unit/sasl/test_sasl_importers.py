"""Reading Cyrus sasldb2 (with the real saslpasswd2/db_dump) and Dovecot passwd-files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from postillion.errors import ConfigError
from postillion.sasl import importers, schemes


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("saslpasswd2") is None or shutil.which("db5.3_dump") is None,
                    reason="needs sasl2-bin and db5.3-util")
def test_sasldb_made_by_real_saslpasswd2(tmp_path: Path) -> None:
    db = tmp_path / "sasldb2"
    for user, realm, password in [("alice", "example.org", "sec:ret\\"), ("bob", "other.test", "x y"),
                                  ("carol", "example.org", "pä\tss")]:
        subprocess.run(["saslpasswd2", "-f", str(db), "-c", "-p", "-u", realm, user],
                       input=password.encode(), check=True)
    users = importers.read_sasldb(db)
    assert sorted((u.user, u.realm, u.password) for u in users) == [
        ("alice", "example.org", "sec:ret\\"), ("bob", "other.test", "x y"),
        ("carol", "example.org", "pä\tss")]


def test_sasldb_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        importers.read_sasldb(tmp_path / "nope")


def test_passwd_file_keeps_hashes_and_makes_the_default_scheme_explicit(tmp_path: Path) -> None:
    crypt = "$6$LRcy/qNsvxegcKFi$KypscvRDPoB0imnRK8Ac6QcVbUFpC8sxVGb9MWpOJCXse42Py5Gm3dIC0oGG290PSPZuWSYCEKUNdIFD4pKQX1"
    f = tmp_path / "users"
    f.write_text(
        "# Dovecot users\n"
        f"alice@example.org:{{SHA512-CRYPT}}{crypt}:1000:1000::/home/alice::userdb_quota_rule=*:storage=1G\n"
        "\n"
        f"bob:{crypt}::::\n"
        "carol:{PLAIN}secret\n"
    )
    users = importers.read_passwd_file(f)
    assert [(u.user, u.lineno) for u in users] == [("alice@example.org", 2), ("bob", 4), ("carol", 5)]
    assert users[1].stored == "{CRYPT}" + crypt
    assert all(schemes.verify(u.stored, "secret") for u in users)


@pytest.mark.parametrize("line, message", [
    ("dave", "expected user:password"),
    ("dave::1000:1000", "user dave has no password"),
    ("dave:{CRAM-MD5}abcd", "user dave: password scheme CRAM-MD5 is not supported"),
])
def test_passwd_file_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "users"
    f.write_text("carol:{PLAIN}x\n" + line + "\n")
    with pytest.raises(ConfigError) as info:
        importers.read_passwd_file(f)
    assert info.value.lineno == 2
    assert str(info.value.path) == str(f)
    assert message in info.value.message


def test_passwd_file_duplicate_user(tmp_path: Path) -> None:
    f = tmp_path / "users"
    f.write_text("carol:{PLAIN}x\ncarol:{PLAIN}y\n")
    with pytest.raises(ConfigError, match="listed twice"):
        importers.read_passwd_file(f)


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("saslpasswd2") is None or shutil.which("db5.3_dump") is None,
                    reason="needs sasl2-bin and db5.3-util")
def test_sasldb_latin1_password_is_an_error_naming_the_user(tmp_path: Path) -> None:
    db = tmp_path / "sasldb2"
    for user, password in [("alice", b"fine"), ("bob", b"p\xe4ss")]:  # bob's is ISO-8859-1
        subprocess.run(["saslpasswd2", "-f", str(db), "-c", "-p", "-u", "example.org", user],
                       input=password, check=True)
    with pytest.raises(ConfigError) as info:
        importers.read_sasldb(db)
    assert info.value.message == "user bob@example.org: the password is not UTF-8"
    assert info.value.path == db


def test_sasldb_non_utf8_name_is_shown_escaped(tmp_path: Path) -> None:
    db = tmp_path / "sasldb2"
    assert importers._text(db, b"carl", b"example.org", "password", "pä".encode()) == "pä"
    with pytest.raises(ConfigError) as info:
        importers._text(db, b"j\xf6rg", b"example.org", "user name", b"j\xf6rg")
    assert str(info.value).startswith(
        f"{db}: user j\\xf6rg@example.org: the user name is not UTF-8; re-encode it")
