"""``postillion user``: commands, messages, exit codes, password input, file ownership."""

from __future__ import annotations

import io
import os
import pty
import pwd
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from postillion.cli.user import main
from postillion.sasl.userdb import UserDB


class Pipe(io.StringIO):
    """Standard input that is not a terminal (as with ``echo pw | postillion user add``)."""

    def isatty(self) -> bool:
        return False


def run(config: Path, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(config, list(argv), stdin=Pipe(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "main.cf").write_text(
        "postillion_user_database = $config_directory/db/users.sqlite\n"
        "mail_owner = nobody\n"
    )
    return tmp_path


def test_add_list_passwd_del(config: Path) -> None:
    db = UserDB(config / "db" / "users.sqlite", readonly=True)
    assert run(config, "add", "alice", stdin="secret\n") == (0, "", "")
    assert run(config, "add", "bob", stdin="pw two\r\n") == (0, "", "")
    assert db.verify("alice", "secret")
    assert db.verify("bob", "pw two")
    assert run(config, "list") == (0, "alice\nbob\n", "")
    assert run(config, "passwd", "alice", stdin="new") == (0, "", "")
    assert db.verify("alice", "new") and not db.verify("alice", "secret")
    assert run(config, "del", "bob") == (0, "", "")
    assert run(config, "list") == (0, "alice\n", "")


def test_errors_are_one_clear_line_and_exit_1(config: Path) -> None:
    run(config, "add", "alice", stdin="secret\n")
    assert run(config, "add", "alice", stdin="x\n") == (
        1, "", "postillion: user alice already exists\n")
    assert run(config, "del", "bob") == (1, "", "postillion: user bob does not exist\n")
    assert run(config, "passwd", "bob", stdin="x\n") == (1, "", "postillion: user bob does not exist\n")
    assert run(config, "add", "carol", stdin="\n") == (1, "", "postillion: empty password\n")
    assert run(config, "add", "carol", stdin="") == (1, "", "postillion: empty password\n")
    assert run(config, "add", "ca rol", stdin="x\n") == (
        1, "", "postillion: user name 'ca rol' must not contain spaces or control characters\n")


def test_usage(config: Path) -> None:
    usage = ("usage: postillion -c DIR user add NAME | del NAME | passwd NAME | list\n"
             "       postillion -c DIR user import-sasldb FILE | import-passwd-file FILE\n")
    assert run(config) == (2, "", usage)
    assert run(config, "frob") == (2, "", "postillion: unknown user command 'frob'\n" + usage)
    assert run(config, "add") == (2, "", "postillion: user add takes one user name\n" + usage)
    assert run(config, "list", "x") == (2, "", "postillion: user list takes no arguments\n" + usage)


def test_config_error_is_reported(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("postillion_user_database =\n")
    code, out, err = run(tmp_path, "list")
    assert (code, out) == (1, "")
    assert err.startswith("postillion: postillion_user_database: is empty")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_root_gives_database_to_mail_owner(config: Path) -> None:
    assert run(config, "add", "alice", stdin="secret\n") == (0, "", "")
    st = (config / "db" / "users.sqlite").stat()
    nobody = pwd.getpwnam("nobody")
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_root_warns_when_mail_owner_is_missing(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("postillion_user_database = u.sqlite\n"
                                      "mail_owner = no-such-user-here\n")
    code, _, err = run(tmp_path, "add", "alice", stdin="x\n")
    assert code == 0
    assert err == (
        f"postillion: warning: mail_owner no-such-user-here does not exist: {tmp_path}/u.sqlite "
        "stays readable by root only, so smtpd workers running as another user cannot check "
        "passwords\n"
    )


def _on_terminal(config: Path, argv: list[str], answers: list[str]) -> tuple[int, str]:
    """Run main() in a child whose standard input is a pseudo-terminal; type ``answers``."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - child: a fresh interpreter, free of pytest's capture
        code = ("import sys; from pathlib import Path; from postillion.cli.user import main;"
                "sys.exit(main(Path(sys.argv[1]), sys.argv[2:]))")
        os.execv(sys.executable, [sys.executable, "-c", code, str(config), *argv])
    transcript = b""
    typed = 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        transcript += chunk
        # Answer each prompt once, after it is shown: getpass flushes earlier type-ahead.
        if typed < len(answers) and transcript.lower().count(b"password: ") > typed:
            os.write(fd, answers[typed].encode() + b"\n")
            typed += 1
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), transcript.decode().replace("\r\n", "\n")


def test_terminal_asks_twice(config: Path) -> None:
    code, shown = _on_terminal(config, ["add", "alice"], ["s3cret", "s3cret"])
    assert code == 0
    assert shown == "Password: \nRetype password: \n"  # echo off: the password is not shown
    assert UserDB(config / "db" / "users.sqlite").verify("alice", "s3cret")


def test_terminal_mismatch(config: Path) -> None:
    code, shown = _on_terminal(config, ["add", "alice"], ["one", "two"])
    assert code == 1
    assert shown == "Password: \nRetype password: \npostillion: passwords do not match\n"
    assert not (config / "db" / "users.sqlite").exists()
