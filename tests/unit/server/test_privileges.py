"""mail_owner lookup texts, the irreversible drop (in a forked child), and account creation."""

from __future__ import annotations

import os
import pwd
import subprocess

import pytest

from postillion.errors import ConfigError
from postillion.server.privileges import (
    MailOwner,
    PrivilegeDropError,
    drop_privileges,
    ensure_mail_owner,
    lookup_mail_owner,
)

ROOT = os.geteuid() == 0


def test_root_is_refused_with_postfix_text() -> None:
    with pytest.raises(ConfigError) as info:
        lookup_mail_owner("root", main_cf="/etc/postillion/main.cf")
    assert info.value.render() == ("/etc/postillion/main.cf: mail_owner: user root has privileged "
                                   "user ID; use an unprivileged account such as postillion")


def test_unknown_user_is_refused_with_postfix_text() -> None:
    with pytest.raises(ConfigError) as info:
        lookup_mail_owner("no-such-user-xyz")
    assert info.value.render().startswith("mail_owner: unknown user name value: no-such-user-xyz; ")


def test_lookup_includes_supplementary_groups() -> None:
    owner = lookup_mail_owner("nobody")
    pw = pwd.getpwnam("nobody")
    assert (owner.uid, owner.gid) == (pw.pw_uid, pw.pw_gid)
    assert owner.groups == tuple(sorted(set(os.getgrouplist("nobody", pw.pw_gid))))


def test_drop_refuses_a_privileged_target() -> None:
    with pytest.raises(PrivilegeDropError):
        drop_privileges(MailOwner("toor", 0, 0, (0,)))


@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="needs root")
def test_drop_is_irreversible() -> None:
    owner = lookup_mail_owner("nobody")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports what it became, then tries to get root back
        try:
            drop_privileges(owner)
            regained = []
            for attempt in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.setgroups([0])):
                try:
                    attempt()
                    regained.append("yes")
                except PermissionError:
                    regained.append("no")
            text = f"{os.getresuid()} {os.getresgid()} {sorted(os.getgroups())} {regained}"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            text = repr(exc)
        os.write(w, text.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        reported = f.read()
    os.waitpid(pid, 0)
    u, g = owner.uid, owner.gid
    assert reported == f"{(u, u, u)} {(g, g, g)} {sorted(owner.groups)} ['no', 'no', 'no']"


@pytest.mark.root
@pytest.mark.skipif(not ROOT, reason="needs root")
def test_ensure_mail_owner_creates_a_system_account() -> None:
    name = "postillion-mk"
    subprocess.run(["userdel", name], capture_output=True, check=False)
    try:
        owner = ensure_mail_owner(name)
        pw = pwd.getpwnam(name)
        assert (owner.uid, pw.pw_shell) == (pw.pw_uid, "/usr/sbin/nologin")
        assert pw.pw_uid < 1000  # --system
        assert ensure_mail_owner(name) == owner  # idempotent
    finally:
        subprocess.run(["userdel", name], capture_output=True, check=False)
        subprocess.run(["groupdel", name], capture_output=True, check=False)


def test_ensure_mail_owner_refuses_root() -> None:
    with pytest.raises(ConfigError):
        ensure_mail_owner("root")
