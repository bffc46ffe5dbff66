"""`postillion doctor` against the real saslauthd (sasl2-bin), broken the ways the recipe breaks.

Each test walks the recipe (docs/recipe.md, fixtures shared with test_recipe.py: a throw-away
system user, ``saslauthd -a pam`` on a private root:sasl 0710 run directory, postillion from
``init`` with the submission entry and a ``pwcheck_method: saslauthd`` smtpd.conf), breaks one
thing, and compares the doctor's exact ✘ lines and fixes: saslauthd stopped (socket gone) or
killed (socket left behind), the worker user outside group sasl, the Postfix chroot socket
path, a mech_list without PLAIN; the all-green run shows the PAM ``other`` fallback warning.
Needs root and sasl2-bin; skipped otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from test_recipe import (  # noqa: F401 - fixtures
    MAIL_OWNER,
    SASL_GROUP,
    SASLAUTHD,
    SASLAUTHD_CONF,
    Postillion,
    Saslauthd,
    SaslGroup,
    _stop_group,
    account,
    cleanups,
    make_postillion,
    needs_saslauthd,
    postillion,
    sasl_group,
    start_saslauthd,
    wait_until,
)

pytestmark = [pytest.mark.interop, pytest.mark.root, needs_saslauthd,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root: useradd, group sasl, saslauthd")]


def doctor(server: Postillion, user: str, password: str) -> tuple[int, list[str]]:
    done = postillion(server.config_dir, "doctor", "--user", user, "--password-stdin",
                      input=password + "\n", check=False)
    assert done.stderr == ""
    return done.returncode, done.stdout.splitlines()


def saslauthd_lines(lines: list[str]) -> list[str]:
    """From the SASL backend step up to (not including) mech_list."""
    first = next(i for i, line in enumerate(lines) if line.startswith("✔ SASL backend"))
    last = next(i for i, line in enumerate(lines) if line[2:].startswith("mech_list"))
    return lines[first:last]


def pam_other() -> str:
    said = [ln.strip() for ln in Path("/etc/pam.d/other").read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]
    return "; ".join(said)


@pytest.fixture
def recipe(account: tuple[str, str], sasl_group: SaslGroup, start_saslauthd: Callable[[str], Saslauthd],
           make_postillion: Callable[[str | None], Postillion]) -> tuple[Postillion, Saslauthd]:
    """The recipe done right: saslauthd -a pam, postillion in group sasl, started."""
    if Path("/etc/pam.d/smtp").exists():
        pytest.skip("/etc/pam.d/smtp exists: the PAM fallback lines differ")
    daemon = start_saslauthd("pam")
    sasl_group.add_mail_owner()
    server = make_postillion(SASLAUTHD_CONF.format(mux=daemon.mux))
    server.start()
    return server, daemon


def test_all_green_with_pam_fallback_warning(recipe: tuple[Postillion, Saslauthd],
                                             account: tuple[str, str]) -> None:
    server, daemon = recipe
    user, password = account
    code, lines = doctor(server, user, password)
    conf = server.config_dir / "sasl" / "smtpd.conf"
    assert code == 0, "\n".join(lines)
    assert saslauthd_lines(lines) == [
        f"✔ SASL backend (saslauthd {daemon.mux}, from {conf})",
        f"✔ saslauthd (pid {daemon.proc.pid}: {SASLAUTHD} -a pam -m {daemon.rundir} -n 2 -d)",
        f"✔ saslauthd socket permissions ({MAIL_OWNER} can open {daemon.mux})",
        "✔ PAM service smtp",
        (f"    warning: no /etc/pam.d/smtp: saslauthd -a pam checks passwords with /etc/pam.d/other "
        f"({pam_other()}), so every system account with a password can send mail"),
        ("    fix: create /etc/pam.d/smtp to say where passwords come from (e.g. the line "
        "`@include common-auth`), or leave it if system accounts should send mail"),
        f"✔ saslauthd password check ({user}, service smtp: OK)",
    ]
    assert lines[-4:] == [
        "✔ mech_list (plain login)",
        "✔ AUTH PLAIN over TLS (235 2.7.0 Authentication successful)",
        "✔ AUTH LOGIN over TLS (235 2.7.0 Authentication successful)",
        ("✔ relay without AUTH refused (554 5.7.1 <localhost[127.0.0.1]>: Client host rejected: "
        "Access denied)"),
    ]


@pytest.mark.parametrize("how", ["stopped", "killed"])
def test_saslauthd_not_running(recipe: tuple[Postillion, Saslauthd], account: tuple[str, str],
                               how: str) -> None:
    server, daemon = recipe
    if how == "stopped":
        _stop_group(daemon.proc)  # SIGTERM: saslauthd removes its socket
        why = f"{daemon.mux} does not exist"
    else:
        os.killpg(daemon.proc.pid, signal.SIGKILL)  # the socket file stays behind
        daemon.proc.wait()
        why = f"{daemon.mux} refuses connections (a socket left behind by a saslauthd that is gone)"
    code, lines = doctor(server, *account)
    assert code == 1
    assert saslauthd_lines(lines)[1:] == [
        "✘ saslauthd",
        f"    saslauthd is not running: {why}",
        f"    fix: start saslauthd: saslauthd -a pam -m {daemon.rundir} (Debian: service saslauthd start)",
    ]
    assert [line for line in lines if line.startswith("✘")] == [
        "✘ saslauthd", "✘ AUTH PLAIN over TLS", "✘ AUTH LOGIN over TLS"]
    assert lines[lines.index("✘ AUTH PLAIN over TLS") + 1] == (
        "    454 4.7.0 Temporary authentication failure: generic failure: the server cannot ask "
        "its password backend")


def test_worker_user_not_in_group_sasl(account: tuple[str, str], sasl_group: SaslGroup,
                                       start_saslauthd: Callable[[str], Saslauthd],
                                       make_postillion: Callable[[str | None], Postillion]) -> None:
    daemon = start_saslauthd("pam")  # root:sasl 0710, and postillion is not in sasl
    server = make_postillion(SASLAUTHD_CONF.format(mux=daemon.mux))
    server.start()
    code, lines = doctor(server, *account)
    assert code == 1
    i = lines.index("✘ saslauthd socket permissions")
    assert lines[i:i + 3] == [
        "✘ saslauthd socket permissions",
        f"    the worker user `{MAIL_OWNER}` is not in group `{SASL_GROUP}`, so it cannot open {daemon.mux}",
        f"    fix: run `adduser {MAIL_OWNER} {SASL_GROUP}`, then `postillion -c {server.config_dir} reload`",
    ]
    # adduser without the reload: the running worker still has its old groups.
    sasl_group.add_mail_owner()
    code, lines = doctor(server, *account)
    i = lines.index("✘ saslauthd socket permissions")
    assert lines[i + 1].startswith("    the running worker pid ")
    assert lines[i + 1].endswith(f" started before `{MAIL_OWNER}` could reach {daemon.mux} (its groups "
                                 "are older)")
    assert lines[i + 2] == f"    fix: postillion -c {server.config_dir} reload"
    server.reload()
    code, lines = doctor(server, *account)
    assert code == 0, "\n".join(lines)


def test_postfix_chroot_socket_path(account: tuple[str, str], sasl_group: SaslGroup,
                                    cleanups: contextlib.ExitStack,
                                    make_postillion: Callable[[str | None], Postillion]) -> None:
    """Debian's chrooted-Postfix advice: saslauthd -m /var/spool/postfix/var/run/saslauthd,
    while smtpd.conf names the path as seen inside the chroot."""
    base = Path(tempfile.mkdtemp(prefix="sa", dir="/tmp"))
    cleanups.callback(shutil.rmtree, base, ignore_errors=True)
    rundir = base / "var/spool/postfix/var/run/saslauthd"
    rundir.mkdir(parents=True)
    for d in (base, *rundir.relative_to(base).parents):
        (base / d).chmod(0o755)
    log = base / "saslauthd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([SASLAUTHD, "-a", "pam", "-m", str(rundir), "-n", "1", "-d"],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    cleanups.callback(_stop_group, proc)
    wait_until("saslauthd", lambda: (rundir / "mux").is_socket())
    inside = base / "var/run/saslauthd/mux"
    sasl_group.add_mail_owner()
    server = make_postillion(SASLAUTHD_CONF.format(mux=inside))
    server.start()
    code, lines = doctor(server, *account)
    conf = server.config_dir / "sasl" / "smtpd.conf"
    assert code == 1
    i = lines.index("✘ saslauthd")
    assert lines[i:i + 3] == [
        "✘ saslauthd",
        (f"    {conf} says saslauthd_path: {inside}, but saslauthd (pid {proc.pid}) listens on "
        f"{rundir}/mux (the Postfix chroot layout: postillion does not chroot, so both must name the "
        "same real path)"),
        (f"    fix: write saslauthd_path: {rundir}/mux in {conf}, then postillion -c {server.config_dir} "
        f"reload (or start saslauthd with -m {inside.parent})"),
    ]


def test_mech_list_without_plain(account: tuple[str, str], sasl_group: SaslGroup,
                                 start_saslauthd: Callable[[str], Saslauthd],
                                 make_postillion: Callable[[str | None], Postillion]) -> None:
    daemon = start_saslauthd("pam")
    sasl_group.add_mail_owner()
    conf_text = SASLAUTHD_CONF.format(mux=daemon.mux).replace("mech_list: plain login", "mech_list: login")
    server = make_postillion(conf_text)
    server.start()
    code, lines = doctor(server, *account)
    conf = server.config_dir / "sasl" / "smtpd.conf"
    assert code == 1
    assert [line for line in lines if line.startswith("✘")] == ["✘ mech_list", "✘ AUTH PLAIN over TLS"]
    i = lines.index("✘ mech_list")
    assert lines[i:i + 3] == [
        "✘ mech_list",
        f"    mech_list in {conf} does not list PLAIN (it says: login)",
        f"    fix: write mech_list: PLAIN LOGIN in {conf}, then postillion -c {server.config_dir} reload",
    ]
    i = lines.index("✘ AUTH PLAIN over TLS")
    assert lines[i + 1:i + 3] == [
        "    PLAIN is not offered after TLS (AUTH LOGIN)",
        (f"    fix: list it in mech_list of smtpd.conf (mech_list: PLAIN LOGIN), then postillion -c "
        f"{server.config_dir} reload"),
    ]
