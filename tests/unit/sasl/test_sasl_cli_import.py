"""``postillion user import-sasldb`` / ``import-passwd-file``: users moved from Cyrus and Dovecot
log in with their old passwords, over PLAIN and (where the source allows) SCRAM."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pytest

from postillion.cli.user import main
from postillion.sasl.userdb import UserDB


class Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


def run(config: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(config, list(argv), stdin=Pipe(""), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text(
        "postillion_user_database = $config_directory/db/users.sqlite\n"
        "mail_owner = nobody\nmyhostname = mx.example.org\n"
    )
    return tmp_path


def db(config: Path) -> UserDB:
    return UserDB(config / "db" / "users.sqlite", readonly=True)


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("saslpasswd2") is None or shutil.which("db5.3_dump") is None,
                    reason="needs sasl2-bin and db5.3-util")
def test_import_sasldb_bare_names_in_the_default_realm(config: Path, tmp_path: Path) -> None:
    sasldb = tmp_path / "sasldb2"
    for user, realm, password in [("alice", "mx.example.org", "a-pw"), ("bob", "other.test", "b:pw")]:
        subprocess.run(["saslpasswd2", "-f", str(sasldb), "-c", "-p", "-u", realm, user],
                       input=password.encode(), check=True)
    assert run(config, "import-sasldb", str(sasldb)) == (
        0, f"postillion: imported 2 users from {sasldb}\n", "")
    users = db(config)
    assert users.list_names() == ["alice", "bob@other.test"]
    assert users.verify("alice", "a-pw") and users.verify("bob@other.test", "b:pw")
    assert not users.verify("alice", "b:pw")
    # plaintext came in, so SCRAM keys were made as for a new password
    assert users.scram_credentials("alice", "SCRAM-SHA-256") is not None
    # a second run changes nothing and says so
    code, out, err = run(config, "import-sasldb", str(sasldb))
    assert (code, out) == (1, f"postillion: imported 0 users from {sasldb}, 2 already present\n")
    assert err == ("postillion: user alice already exists; not changed\n"
                   "postillion: user bob@other.test already exists; not changed\n")


def test_import_passwd_file_keeps_hashes(config: Path, tmp_path: Path) -> None:
    scram = ("4096,cZb3Ojm3Si8DPlCZiKB8FQ==,jfXChmXoWX1ARNTiBbnoF+/knPkxMIFyY/GEyARkqS0=,"
             "vuOl9m7vjAbCnPVZhvt5pnWKAcE0Xp0Vpu6tNg5V5GI=")
    users_file = tmp_path / "users"
    users_file.write_text(
        "carol@example.org:{BLF-CRYPT}$2y$05$BogBId3bNvnljorjHdfJfeVbdjqSWSd77wJIQLP2tGSM///HmraYi::::\n"
        f"dave:{{SCRAM-SHA-256}}{scram}\n"
    )
    assert run(config, "import-passwd-file", str(users_file)) == (
        0, f"postillion: imported 2 users from {users_file}\n", "")
    users = db(config)
    assert users.verify("carol@example.org", "secret") and not users.verify("carol@example.org", "x")
    assert users.verify("dave", "secret")
    creds = users.scram_credentials("dave", "SCRAM-SHA-256")
    assert creds is not None and creds.to_text() == scram
    assert users.scram_credentials("carol@example.org", "SCRAM-SHA-256") is None


def test_import_passwd_file_error_names_the_line(config: Path, tmp_path: Path) -> None:
    users_file = tmp_path / "users"
    users_file.write_text("carol:{PLAIN}x\ndave:{CRAM-MD5}00\n")
    code, out, err = run(config, "import-passwd-file", str(users_file))
    assert (code, out) == (1, "")
    assert err.startswith(f"postillion: {users_file}:2: user dave: password scheme CRAM-MD5 is not supported")
    # the file is read before anything is written: nobody was imported
    path = config / "db" / "users.sqlite"
    assert not path.exists() or db(config).list_names() == []
