"""Our saslauthd client and verifier against the real Debian saslauthd (sasl2-bin).

Starts ``/usr/sbin/saslauthd -d`` on a private run directory (``-a pam`` and ``-a shadow``) for a
throw-away system user, checks the setup with ``testsaslauthd``, then checks postillion.
Needs root (useradd, saslauthd reading /etc/shadow); skipped otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pickle
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postillion.config import Params
from postillion.errors import AuthBackendError
from postillion.sasl.exchange import AuthExchange, Outcome, Verify
from postillion.sasl.verifiers import SaslauthdVerifier, make_sasl_server

SASLAUTHD = "/usr/sbin/saslauthd"
TESTSASLAUTHD = "/usr/sbin/testsaslauthd"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.root,
    pytest.mark.skipif(not Path(SASLAUTHD).exists(), reason=f"{SASLAUTHD} missing (apt install sasl2-bin)"),
    pytest.mark.skipif(not Path(TESTSASLAUTHD).exists(), reason=f"{TESTSASLAUTHD} missing"),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: useradd, and saslauthd reads /etc/shadow"),
]


@pytest.fixture(scope="module")
def account() -> Iterator[tuple[str, str]]:
    """A real local user with a password; deleted afterwards."""
    name = f"ptsasl{secrets.token_hex(3)}"
    password = f"pw-{secrets.token_urlsafe(9)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
        yield name, password
    finally:
        subprocess.run(["userdel", name], check=False)


@pytest.fixture(scope="module", params=["pam", "shadow"])
def mux(request: pytest.FixtureRequest, account: tuple[str, str]) -> Iterator[Path]:
    """A running saslauthd -a <param>; yields its socket path."""
    rundir = Path(tempfile.mkdtemp(prefix="sa", dir="/tmp"))  # short: AF_UNIX paths ≤ 108 bytes
    rundir.chmod(0o755)
    log = open(rundir.parent / f"{rundir.name}.log", "wb")
    proc = subprocess.Popen(
        [SASLAUTHD, "-a", request.param, "-d", "-n", "1", "-m", str(rundir)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    socket_path = rundir / "mux"
    try:
        deadline = time.monotonic() + 10
        while not socket_path.is_socket():
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"saslauthd did not start: {Path(log.name).read_text()}")
            time.sleep(0.05)
        yield socket_path
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the master and its workers
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        os.unlink(log.name)
        shutil.rmtree(rundir, ignore_errors=True)


def run_testsaslauthd(mux: Path, user: str, password: str) -> tuple[int, str]:
    done = subprocess.run([TESTSASLAUTHD, "-u", user, "-p", password, "-s", "smtp", "-f", str(mux)],
                          capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout


def test_setup_works_with_testsaslauthd(mux: Path, account: tuple[str, str]) -> None:
    name, password = account
    assert run_testsaslauthd(mux, name, password) == (0, '0: OK "Success."\n')
    code, out = run_testsaslauthd(mux, name, password + "x")
    assert (code != 0, out) == (True, '0: NO "authentication failed"\n')


def test_verifier_true_and_false(mux: Path, account: tuple[str, str]) -> None:
    name, password = account
    v = SaslauthdVerifier(mux, "smtp", "")

    async def checks() -> list[bool]:
        return [
            await v.verify(name, password),
            await v.verify(name, password + "x"),
            await v.verify(name, ""),  # saslauthd: "NO NULL password received"
            await v.verify("no-such-user-ptsasl", password),
            await v.verify(f"{name}@example.org", password),  # realm split off, login = name
        ]

    assert asyncio.run(checks()) == [True, False, False, False, True]


def test_whole_auth_exchange_through_smtpd_conf(mux: Path, account: tuple[str, str],
                                                tmp_path: Path) -> None:
    """smtpd.conf → make_sasl_server → AuthExchange: the replies Postfix gives."""
    name, password = account
    (tmp_path / "sasl").mkdir()
    (tmp_path / "sasl" / "smtpd.conf").write_text(
        f"pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\nsaslauthd_path: {mux}\n")
    server = make_sasl_server(Params.from_dict({"cyrus_sasl_config_path": "sasl"},
                                               config_dir=tmp_path))
    assert server.mechanisms == ["PLAIN", "LOGIN"]

    def auth(pw: str) -> Outcome:
        ex = AuthExchange("PLAIN", server.mechanisms)
        action = ex.start(base64.b64encode(f"\0{name}\0{pw}".encode()).decode())
        assert isinstance(action, Verify)
        return ex.verified(asyncio.run(server.verifier.verify(action.authcid, action.password)))

    ok = auth(password)
    assert (ok.reply.lines(), ok.username) == (["235 2.7.0 Authentication successful"], name)
    bad = auth("wrong")
    assert bad.reply.lines() == ["535 5.7.8 Error: authentication failed: authentication failure"]
    assert bad.log_warning == (
        f"SASL PLAIN authentication failed: authentication failure, sasl_username={name}")


def test_missing_socket(mux: Path, account: tuple[str, str]) -> None:
    path = mux.parent / "elsewhere" / "mux"
    with pytest.raises(AuthBackendError) as info:
        asyncio.run(SaslauthdVerifier(path).verify(*account))
    assert info.value.detail == (
        f"cannot connect to saslauthd server {path}: No such file or directory "
        "(is saslauthd running? check -m and saslauthd_path)"
    )


def test_closed_run_directory_seen_by_unprivileged_worker(mux: Path,
                                                          account: tuple[str, str]) -> None:
    """The Debian gotcha: a 0700 (or 0710 root:sasl) run directory and a user outside it."""
    nobody = pwd.getpwnam("nobody")
    mux.parent.chmod(0o700)
    try:
        with pytest.raises(AuthBackendError) as info:
            call_as("nobody", lambda: asyncio.run(SaslauthdVerifier(mux).verify(*account)))
    finally:
        mux.parent.chmod(0o755)
    assert info.value.detail == (
        f"cannot connect to saslauthd server {mux}: Permission denied (the user postillion "
        f"runs as, uid {nobody.pw_uid}, must be able to reach the socket: e.g. adduser nobody sasl)"
    )
    # ... and the same worker succeeds once it may reach the socket
    assert call_as("nobody", lambda: asyncio.run(SaslauthdVerifier(mux).verify(*account))) is True


def call_as(user: str, fn: Callable[[], object]) -> object:
    """fn() in a forked child running as ``user``; its result, or its exception re-raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            pw = pwd.getpwnam(user)
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            result: tuple[bool, object] = (True, fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the parent
            result = (False, exc)
        with os.fdopen(w, "wb") as f:
            pickle.dump(result, f)
        os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        ok, value = pickle.loads(f.read())
    os.waitpid(pid, 0)
    if not ok:
        raise value  # type: ignore[misc]
    return value
