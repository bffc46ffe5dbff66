"""Dropping root: worker processes run as ``mail_owner`` with that user's groups.

Owns: resolving ``mail_owner`` to uid/gid/supplementary groups, the irreversible switch
(initgroups, setresgid, setresuid, then a check that root cannot be regained), and creating
the system account for ``postillion init``.
Must not import: config, server.supervisor, cli; callers pass names and the main.cf path.
Follows: Postfix mail_params.c ``check_mail_owner`` (its fatal texts) and set_ugid(3):
supplementary groups come from the group database, so membership in group ``sasl`` is what
gives smtpd access to saslauthd's socket, as on Debian.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from postillion.errors import ConfigError, PostillionError

DEFAULT_MAIL_OWNER = "postillion"  # mail_owner default (Postfix: "postfix")
NOLOGIN_SHELL = "/usr/sbin/nologin"


class PrivilegeDropError(PostillionError):
    """The process could not become ``mail_owner``, or could still become root afterwards."""


@dataclass(frozen=True)
class MailOwner:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def is_root() -> bool:
    return os.geteuid() == 0


def lookup_mail_owner(name: str, *, main_cf: Path | str | None = None) -> MailOwner:
    """Resolve ``mail_owner``; ConfigError with Postfix's texts when unknown or privileged."""
    name = name.strip() or DEFAULT_MAIL_OWNER
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"unknown user name value: {name}", path=main_cf, name="mail_owner",
                          fix="run 'postillion init' to create the account, or set mail_owner") from None
    if pw.pw_uid == 0 or pw.pw_gid == 0:
        raise ConfigError(f"user {name} has privileged user ID", path=main_cf, name="mail_owner",
                          fix="use an unprivileged account such as postillion") from None
    # getgrouplist() is initgroups()'s source (NSS-aware); resolving it here, in the
    # supervisor, keeps group-database lookups out of freshly forked children.
    groups = set(os.getgrouplist(name, pw.pw_gid))
    return MailOwner(name=name, uid=pw.pw_uid, gid=pw.pw_gid, groups=tuple(sorted(groups)))


def drop_privileges(owner: MailOwner) -> None:
    """Become ``owner`` for good.  Only call in a process that is about to run untrusted input."""
    if owner.uid == 0 or owner.gid == 0:
        raise PrivilegeDropError(f"refusing to run as privileged user {owner.name}")
    try:
        os.setgroups(list(owner.groups))
        os.setresgid(owner.gid, owner.gid, owner.gid)
        os.setresuid(owner.uid, owner.uid, owner.uid)
    except OSError as exc:
        raise PrivilegeDropError(f"cannot become {owner.name}: {exc.strerror}") from exc
    _verify_dropped(owner)


def _verify_dropped(owner: MailOwner) -> None:
    if os.getresuid() != (owner.uid,) * 3 or os.getresgid() != (owner.gid,) * 3:
        raise PrivilegeDropError(f"user ids did not change to {owner.name}")
    for regain in (lambda: os.setuid(0), lambda: os.seteuid(0), lambda: os.setgid(0)):
        try:
            regain()
        except PermissionError:
            continue
        raise PrivilegeDropError(f"could regain root after switching to {owner.name}")
    if 0 in os.getgroups() and 0 not in owner.groups:
        raise PrivilegeDropError("group root is still a supplementary group")


def ensure_mail_owner(name: str = DEFAULT_MAIL_OWNER) -> MailOwner:
    """Create ``name`` as a system account without home or login shell if it is missing."""
    name = name.strip() or DEFAULT_MAIL_OWNER
    if name == "root":
        raise ConfigError(f"user {name} has privileged user ID", name="mail_owner",
                          fix="use an unprivileged account such as postillion")
    try:
        pwd.getpwnam(name)
    except KeyError:
        if not is_root():
            raise ConfigError(f"unknown user name value: {name}", name="mail_owner",
                              fix="run 'postillion init' as root to create the account") from None
        proc = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", NOLOGIN_SHELL, name],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise ConfigError(f"cannot create user {name}: {proc.stderr.strip()}", name="mail_owner",
                              fix="create the account with useradd --system") from None
    return lookup_mail_owner(name)


def chown_tree(path: Path, owner_name: str) -> None:
    """Give ``path`` (and everything below it) to ``owner_name``, so the unprivileged
    workers can write the spool and read the user store and TLS key."""
    owner = lookup_mail_owner(owner_name)
    targets = [path] if not path.is_dir() else [path, *path.rglob("*")]
    for p in targets:
        os.chown(p, owner.uid, owner.gid, follow_symlinks=False)


def permits(st: os.stat_result, uid: int, groups: set[int], bit: int) -> bool:
    """Whether a process with ``uid`` and ``groups`` has permission ``bit`` (1 search/execute,
    2 write, 4 read) on a file with status ``st``: the owner class, else the group class, else
    the others, as the kernel decides (no fallthrough between classes)."""
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in groups:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def unreadable_for(owner: MailOwner, paths: list[Path]) -> str | None:
    """The first directory on the way to one of ``paths`` that ``owner`` cannot enter, as a
    sentence with the fix, or None.  Workers import code after dropping privileges, so the
    Python installation and postillion itself must be reachable by mail_owner."""
    for target in paths:
        current = Path("/")
        for part in target.resolve().parts[1:]:
            current = current / part
            try:
                st = current.stat()
            except OSError:
                break
            if not current.is_dir():
                break
            if not permits(st, owner.uid, {owner.gid, *owner.groups}, 1):
                return (
                    f"mail_owner {owner.name} cannot enter {current} (mode {st.st_mode & 0o7777:04o}), "
                    f"so worker processes cannot load {target}; fix: chmod o+x {current}, "
                    "or install postillion with a Python that is readable by other users"
                )
    return None
