"""The SASL backend behind a service, checked directly (no SMTP): saslauthd or the user store.

Owns: the doctor steps about smtpd.conf and what it points at: ``SASL backend``, ``saslauthd``
(running, socket present, socket path equal to saslauthd's ``-m``), ``saslauthd socket
permissions`` (for mail_owner, and for the running workers' groups), ``mech_list``, ``PAM
service NAME``, ``saslauthd password check`` (testsaslauthd's request, through our mux client)
and, for the embedded store, ``user database`` and ``user database password check``.
Finding saslauthd: /proc/PID/comm and its command line (``-a MECH``, ``-m DIR``).
Must not import: cli, server.session.
Follows: saslauthd(8) and testsaslauthd(8) (cyrus-sasl 2.1.28), Cyrus options(5), Debian's
README.Debian for sasl2-bin (root:sasl 0710 run directory, ``adduser postfix sasl``, the
chroot socket in /var/spool/postfix/var/run/saslauthd), pam.d(5) (the ``other`` fallback).
"""

from __future__ import annotations

import asyncio
import errno
import grp
import json
import os
import pwd
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from postillion.config.saslconf import (
    SaslAppConfig,
    check_sasl_type,
    find_sasl_conf,
    parse_sasl_conf,
)
from postillion.doctor.network import PROC, command_line
from postillion.doctor.report import Step, failed, passed, warned
from postillion.errors import AuthBackendError, AuthRejected, ConfigError
from postillion.sasl import dovecot_client
from postillion.sasl.mechanisms import SUPPORTED_MECHANISMS
from postillion.sasl.saslauthd import DEFAULT_SOCKET, saslauthd_check, split_realm
from postillion.sasl.userdb import UserDB, UserDBError
from postillion.server.privileges import MailOwner, lookup_mail_owner, permits
from postillion.server.runstate import RunPaths

if TYPE_CHECKING:
    from postillion.config import Params

SASLAUTHD_RUNDIR = "/var/run/saslauthd"  # Debian's compiled-in PATH_SASLAUTHD_RUNDIR
PAM_DIR = Path("/etc/pam.d")
CHROOT_MARK = "/var/spool/postfix/"  # Debian's chrooted smtpd sees the socket below here
CHECK_TIMEOUT = 30.0  # pam_faildelay: a refused password takes about 2 s


@dataclass(frozen=True, slots=True)
class SaslauthdProcess:
    pid: int
    mech: str
    rundir: str
    command: str

    @property
    def mux(self) -> str:
        return os.path.join(self.rundir, "mux")


def running_saslauthd(proc: Path = PROC) -> list[SaslauthdProcess]:
    """One entry per saslauthd run directory (its lowest pid: the master)."""
    found: dict[str, SaslauthdProcess] = {}
    for entry in sorted((e for e in proc.iterdir() if e.name.isdigit()), key=lambda e: int(e.name)):
        try:
            if (entry / "comm").read_text().strip() != "saslauthd":
                continue
            args = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        mech, rundir = "", SASLAUTHD_RUNDIR
        for i, arg in enumerate(args):
            nxt = args[i + 1] if i + 1 < len(args) else ""
            if arg == "-a":
                mech = nxt
            elif arg.startswith("-a") and len(arg) > 2:
                mech = arg[2:]
            elif arg == "-m":
                rundir = nxt
            elif arg.startswith("-m") and len(arg) > 2:
                rundir = arg[2:]
        rundir = rundir.rstrip("/") or "/"
        found.setdefault(os.path.realpath(rundir), SaslauthdProcess(int(entry.name), mech, rundir,
                                                                    command_line(int(entry.name), proc)))
    return list(found.values())


def check_backend(params: Params, service_label: str, *, user: str | None,
                  password: str | None) -> list[Step]:
    if not params.get_bool("smtpd_sasl_auth_enable"):
        return [failed("SASL backend", f"smtpd_sasl_auth_enable = no on service {service_label}: AUTH "
                                       "is not offered",
                       f"in master.cf under {service_label}: -o smtpd_sasl_auth_enable=yes")]
    try:
        check_sasl_type(params)
        if params.get("smtpd_sasl_type").strip().lower() == "dovecot":
            return _dovecot_steps(params, user, password)
        conf_path = find_sasl_conf(params)
        conf = parse_sasl_conf(conf_path) if conf_path is not None else None
    except ConfigError as exc:
        where = f"{exc.path}: " if exc.path else ""
        return [failed("SASL backend", f"{where}{exc.message}", exc.fix or "see postillion check")]
    steps: list[Step] = []
    if conf is not None and conf.pwcheck_method[0] == "saslauthd":
        socket_path = conf.saslauthd_path or DEFAULT_SOCKET
        steps.append(passed("SASL backend", f"saslauthd {socket_path}, from {conf.path}"))
        steps += _saslauthd_steps(params, conf, socket_path, user, password)
    else:
        steps += _userdb_steps(params, conf, user, password)
    if conf is not None:
        steps.append(check_mech_list(conf, params.config_dir))
    return steps


def check_mech_list(conf: SaslAppConfig, config_dir: Path) -> Step:
    name = "mech_list"
    if conf.mech_list is None:
        return passed(name, f"not set: {' '.join(SUPPORTED_MECHANISMS)}")
    said = " ".join(conf.mech_list)
    upper = [m.upper() for m in conf.mech_list]
    fix = f"write mech_list: PLAIN LOGIN in {conf.path}, then postillion -c {config_dir} reload"
    if "PLAIN" not in upper:
        return failed(name, f"mech_list in {conf.path} does not list PLAIN (it says: {said})", fix)
    unknown = [m for m in conf.mech_list if m.upper() not in SUPPORTED_MECHANISMS]
    if unknown:
        return warned(name, f"mech_list in {conf.path} lists {' '.join(unknown)}, which postillion "
                            "does not support: they are not offered", fix, detail=said)
    return passed(name, said)


# --- saslauthd ------------------------------------------------------------------------------

def _connect_error(path: str) -> OSError | None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            s.connect(path)
        except OSError as exc:
            return exc
    return None


def _unchroot(path: str) -> str:
    return os.path.realpath(path.replace(CHROOT_MARK.rstrip("/"), "", 1))


def _start_fix(sock_dir: str) -> str:
    return f"start saslauthd: saslauthd -a pam -m {sock_dir} (Debian: service saslauthd start)"


def _saslauthd_steps(params: Params, conf: SaslAppConfig, socket_path: str, user: str | None,
                     password: str | None) -> list[Step]:
    sock_dir = os.path.dirname(socket_path)
    procs = running_saslauthd()
    same = [p for p in procs if os.path.realpath(p.rundir) == os.path.realpath(sock_dir)]
    daemon = same[0] if same else None
    try:
        mode: int | None = os.stat(socket_path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError:
        mode = 0  # hidden from us (not root): the connect below tells more
    name = "saslauthd"
    config_dir = params.config_dir
    if mode is None:
        # Another saslauthd is the one meant only when the paths differ by the chroot prefix
        # (Debian: -m /var/spool/postfix/var/run/saslauthd, smtpd.conf: /var/run/saslauthd/mux).
        chrooted = [p for p in procs if p not in same and _unchroot(p.rundir) == _unchroot(sock_dir)]
        if chrooted:
            other = chrooted[0]
            cause = (f"{conf.path} says saslauthd_path: {socket_path}, but saslauthd (pid {other.pid}) "
                     f"listens on {other.mux} (the Postfix chroot layout: postillion does not chroot, "
                     "so both must name the same real path)")
            return [failed(name, cause, f"write saslauthd_path: {other.mux} in {conf.path}, then "
                                        f"postillion -c {config_dir} reload (or start saslauthd "
                                        f"with -m {sock_dir})")]
        return [failed(name, f"saslauthd is not running: {socket_path} does not exist",
                       _start_fix(sock_dir))]
    if mode and not stat.S_ISSOCK(mode):
        return [failed(name, f"{socket_path} is not a socket",
                       f"saslauthd_path in {conf.path} must name the socket itself, e.g. {DEFAULT_SOCKET}")]
    error = _connect_error(socket_path)
    if error is not None and error.errno == errno.ECONNREFUSED:
        return [failed(name, f"saslauthd is not running: {socket_path} refuses connections (a socket "
                             "left behind by a saslauthd that is gone)", _start_fix(sock_dir))]
    if error is not None and error.errno != errno.EACCES:
        return [failed(name, f"cannot connect to {socket_path}: {error.strerror or error}",
                       _start_fix(sock_dir))]
    steps = [passed(name, f"pid {daemon.pid}: {daemon.command}" if daemon else socket_path)]
    steps.append(check_socket_access(params, socket_path))
    if daemon is not None and daemon.mech == "pam":
        steps.append(check_pam_service(params.get("smtpd_sasl_service") or "smtp"))
    if user is not None and password is not None and error is None:
        steps.append(_saslauthd_password(params, socket_path, user, password))
    return steps


def _blocked(owner: MailOwner, groups: set[int], socket_path: str) -> tuple[Path, os.stat_result] | None:
    """The first path element ``owner`` (with ``groups``) cannot pass: a directory without
    search permission, or the socket without write permission (connect(2) needs it)."""
    current = Path("/")
    parts = Path(socket_path).parts[1:]
    for i, part in enumerate(parts):
        current = current / part
        try:
            st = os.stat(current)
        except OSError:
            return None
        bit = 2 if i == len(parts) - 1 else 1  # w on the socket, x on directories
        if not permits(st, owner.uid, groups, bit):
            return current, st
    return None


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _worker_pids(params: Params) -> list[int]:
    data_dir = params.path("data_directory")
    if data_dir is None:
        return []
    try:
        status = json.loads(RunPaths.for_data_directory(data_dir).status_file.read_text())
    except (OSError, ValueError):
        return []
    return [int(w["pid"]) for w in status.get("workers", []) if not w.get("retiring")]


def _process_groups(pid: int) -> set[int] | None:
    """The effective gid and supplementary groups of a running process."""
    try:
        fields = dict(line.split(":", 1) for line in (PROC / str(pid) / "status").read_text().splitlines()
                      if ":" in line)
        return {int(fields["Gid"].split()[1])} | {int(g) for g in fields["Groups"].split()}
    except (OSError, ValueError, KeyError, IndexError):
        return None


def check_socket_access(params: Params, socket_path: str) -> Step:
    name = "saslauthd socket permissions"
    config_dir = params.config_dir
    try:
        owner = lookup_mail_owner(params.get("mail_owner"))
    except ConfigError as exc:
        return failed(name, exc.message, exc.fix or "set mail_owner")
    blocked = _blocked(owner, set(owner.groups) | {owner.gid}, socket_path)
    if blocked is not None:
        where, st = blocked
        perms = st.st_mode & 0o7777
        group = _group_name(st.st_gid)
        if st.st_gid != 0 and perms & 0o010 and where != Path(socket_path):
            return failed(name, f"the worker user `{owner.name}` is not in group `{group}`, so it "
                                f"cannot open {socket_path}",
                          f"run `adduser {owner.name} {group}`, then `postillion -c {config_dir} reload`")
        return failed(name, f"the worker user `{owner.name}` cannot pass {where} (mode {perms:04o}, "
                            f"{_user_name(st.st_uid)}:{group}), so it cannot open {socket_path}",
                      f"run `chgrp sasl {where}; chmod {'0777' if where == Path(socket_path) else '0710'} "
                      f"{where}; adduser {owner.name} sasl`, then `postillion -c {config_dir} reload`")
    # Group membership counts from the moment a worker starts: check the running ones too.
    for pid in _worker_pids(params):
        groups = _process_groups(pid)
        if groups is not None and _blocked(owner, groups, socket_path) is not None:
            return failed(name, f"the running worker pid {pid} started before `{owner.name}` could "
                                f"reach {socket_path} (its groups are older)",
                          f"postillion -c {config_dir} reload")
    return passed(name, f"{owner.name} can open {socket_path}")


def check_pam_service(service: str, pam_dir: Path = PAM_DIR) -> Step:
    name = f"PAM service {service}"
    own = pam_dir / service
    if own.exists():
        return passed(name, str(own))
    other = pam_dir / "other"
    try:
        lines = [ln.strip() for ln in other.read_text().splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
    except OSError:
        lines = []
    fix = (f"create {own} to say where passwords come from (e.g. the line `@include common-auth`), "
           "or leave it if system accounts should send mail")
    if any("pam_deny" in ln for ln in lines):
        return failed(name, f"no {own}: PAM falls back to {other}, which denies every login (pam_deny)",
                      fix)
    said = "; ".join(lines) or "empty"
    return warned(name, f"no {own}: saslauthd -a pam checks passwords with {other} ({said}), so "
                        "every system account with a password can send mail", fix)


def _saslauthd_password(params: Params, socket_path: str, user: str, password: str) -> Step:
    name = "saslauthd password check"
    service = params.get("smtpd_sasl_service") or "smtp"
    login, realm = split_realm(user, params.get("smtpd_sasl_local_domain"))
    try:
        ok, text = asyncio.run(saslauthd_check(socket_path, login, password, service, realm,
                                               timeout=CHECK_TIMEOUT))
    except AuthBackendError as exc:
        return failed(name, exc.detail, _start_fix(os.path.dirname(socket_path)))
    if ok:
        return passed(name, f"{user}, service {service}: {text}")
    return failed(name, f"saslauthd refused {user} (service {service}): {text}",
                  f"check it by hand: testsaslauthd -u {login} -p PASSWORD -s {service} -f {socket_path}")


# --- the embedded user store ---------------------------------------------------------------

def _userdb_steps(params: Params, conf: SaslAppConfig | None, user: str | None,
                  password: str | None) -> list[Step]:
    path = params.path("postillion_user_database")
    origin = f", from {conf.path}" if conf is not None else ""
    if path is None:
        return [failed("SASL backend", "no user database: postillion_user_database is empty",
                       "set postillion_user_database = $data_directory/users.sqlite in main.cf")]
    steps = [passed("SASL backend", f"postillion user database {path}{origin}")]
    db = UserDB(path, readonly=True)
    name = "user database"
    add = f"postillion -c {params.config_dir} user add NAME"
    if not path.exists():
        steps.append(failed(name, f"{path} does not exist: nobody can log in", add))
        return steps
    try:
        names = db.list_names()
    except UserDBError as exc:
        steps.append(failed(name, str(exc), "restore the file, or make a new one with " + add))
        return steps
    steps.append(passed(name, f"{len(names)} user{'s' if len(names) != 1 else ''}") if names
                 else failed(name, f"{path} has no users: nobody can log in", add))
    if user is not None and password is not None and names:
        check = "user database password check"
        if user not in names:
            steps.append(failed(check, f"user {user} is not in {path}",
                                f"postillion -c {params.config_dir} user add {user}"))
        elif db.verify(user, password):
            steps.append(passed(check, user))
        else:
            steps.append(failed(check, f"wrong password for {user} in {path}",
                                f"postillion -c {params.config_dir} user passwd {user}"))
    return steps


# --- Dovecot --------------------------------------------------------------------------------

def _dovecot_steps(params: Params, user: str | None, password: str | None) -> list[Step]:
    """smtpd_sasl_type = dovecot: the socket, who may open it, Dovecot's mechanisms, a login."""
    spec = params.get("smtpd_sasl_path").strip()
    queue_directory = Path(params.get("queue_directory") or ".")
    if not queue_directory.is_absolute():
        queue_directory = params.config_dir / queue_directory
    try:
        endpoint = dovecot_client.parse_endpoint(spec, queue_directory)
    except ValueError as exc:
        return [failed("SASL backend", f"smtpd_sasl_path = {spec} is not a Dovecot auth socket: {exc}",
                       "use private/auth (relative to queue_directory), unix:/path or inet:host:port")]
    where = endpoint.path or endpoint.name
    steps = [passed("SASL backend", f"Dovecot auth {where}")]
    owner_name = params.get("mail_owner")
    listener_fix = (
        f"in Dovecot's conf.d/10-master.conf: service auth {{ unix_listener {where} {{ mode = 0660  "
        f"user = {owner_name}  group = {owner_name} }} }}, then `systemctl restart dovecot`"
        if endpoint.path else
        f"in Dovecot's conf.d/10-master.conf: service auth {{ inet_listener {{ address = "
        f"{endpoint.host}  port = {endpoint.port} }} }}, then `systemctl restart dovecot`")
    name = "Dovecot auth socket"
    if endpoint.path is not None:
        if not os.path.exists(endpoint.path):
            steps.append(failed(name, f"{endpoint.path} does not exist: Dovecot is not running, or "
                                      "its auth service does not listen there", listener_fix))
            return steps
        try:
            owner = lookup_mail_owner(owner_name)
        except ConfigError as exc:
            steps.append(failed(name, exc.message, exc.fix or "set mail_owner"))
            return steps
        blocked = _blocked(owner, set(owner.groups) | {owner.gid}, endpoint.path)
        if blocked is not None:
            path, st = blocked
            steps.append(failed(
                name, f"the worker user `{owner.name}` cannot open {endpoint.path}: {path} is "
                      f"{_user_name(st.st_uid)}:{_group_name(st.st_gid)} mode {st.st_mode & 0o7777:04o}",
                listener_fix))
            return steps
    try:
        handshake = dovecot_client.handshake_sync(endpoint, timeout=5)
    except AuthBackendError as exc:
        steps.append(failed(name, exc.detail, "start Dovecot (`systemctl start dovecot`); "
                                              + listener_fix))
        return steps
    steps.append(passed(name, f"{where} answers"))
    offered = handshake.mechanism_names
    if not dovecot_client.relayed_mechanisms(offered):
        steps.append(failed("Dovecot mechanisms", f"Dovecot offers {' '.join(offered) or 'nothing'}; "
                                                  "postillion passes on PLAIN and LOGIN only",
                            "auth_mechanisms = plain login in Dovecot's conf.d/10-auth.conf"))
        return steps
    steps.append(passed("Dovecot mechanisms", " ".join(offered)))
    if user is not None and password is not None:
        steps.append(_dovecot_password(params, endpoint, user, password))
    return steps


def _dovecot_password(params: Params, endpoint: dovecot_client.Endpoint, user: str,
                      password: str) -> Step:
    name = "Dovecot password check"

    async def ask() -> bool:
        client = dovecot_client.DovecotAuthClient(endpoint)
        try:
            return await dovecot_client.DovecotVerifier(
                client, params.get("smtpd_sasl_service") or "smtp"
            ).verify(user, password, client_addr="127.0.0.1", local_addr="127.0.0.1", secured=True)
        finally:
            client.close()

    try:
        ok = asyncio.run(ask())
    except AuthRejected as exc:
        return failed(name, f"Dovecot refused {user}: {exc.reason}",
                      f"check {user}'s password in Dovecot's passdb: `doveadm auth test {user}`")
    except AuthBackendError as exc:
        return failed(name, exc.detail, "see Dovecot's log (`doveadm log errors`)")
    return passed(name, user) if ok else failed(
        name, f"Dovecot refused {user}", f"`doveadm auth test {user}`")
