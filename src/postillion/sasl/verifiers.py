"""Password verifiers for SMTP AUTH and the choice of one from the configuration.

Owns: the ``Verifier`` and ``SecretStore`` protocols, the user-database and saslauthd verifiers,
``make_sasl_server`` (main.cf + Cyrus ``smtpd.conf`` → verifier and mechanism list; SCRAM and
CRAM-MD5 only where stored secrets exist) and mechanism filtering by
``smtpd_sasl_security_options``.
Must not import: server, policy, queue, cli.
Follows: Postfix SASL_README ("Cyrus SASL configuration", "smtpd_sasl_security_options"),
Cyrus SASL options(5) (pwcheck_method, mech_list, auxprop_plugin), saslauthd(8).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from postillion.errors import AuthBackendError, ConfigError
from postillion.config.saslconf import (
    check_sasl_type,
    find_sasl_conf,
    param_error,
    parse_sasl_conf,
    sasl_conf_search_path,
)
from postillion.sasl.mechanisms import (
    CRAM_MD5,
    SECRET_MECHANISMS,
    SUPPORTED_MECHANISMS,
)
from postillion.sasl.saslauthd import DEFAULT_SOCKET, DEFAULT_TIMEOUT, saslauthd_check, split_realm
from postillion.sasl.scram import DEFAULT_ITERATIONS
from postillion.sasl.userdb import SuccessCache, UserDB, UserDBError

if TYPE_CHECKING:
    from postillion.config import Params


class Verifier(Protocol):
    """Checks a plaintext password; raises AuthBackendError(detail) when it cannot ask."""

    async def verify(
        self,
        username: str,
        password: str,
        *,
        service: str | None = None,
        realm: str | None = None,
        client_addr: str | None = None,
        local_addr: str | None = None,
        secured: bool = False,
    ) -> bool: ...


class SecretStore(Protocol):
    """Hands out stored secrets for SCRAM and CRAM-MD5 (only the user database can)."""

    async def lookup_secret(self, username: str, scheme: str) -> tuple[object | None, str | None]:
        """(secret or None, a log note saying why there is none when the user exists)."""
        ...


class UserDBVerifier:
    """Checks against the postillion user database (argon2 runs in a worker thread), and hands
    out the SCRAM keys and CRAM-MD5 secrets stored there."""

    def __init__(
        self, path: Path | str, *, cache_ttl: float = 0.0, scram_iterations: int = DEFAULT_ITERATIONS
    ) -> None:
        self.path = Path(path)
        # scram_iterations: what `postillion user` gives new users, shown to unknown ones too
        self._db = UserDB(self.path, readonly=True, scram_iterations=scram_iterations)
        self._cache = SuccessCache(cache_ttl) if cache_ttl > 0 else None

    async def verify(
        self,
        username: str,
        password: str,
        *,
        service: str | None = None,
        realm: str | None = None,
        client_addr: str | None = None,
        local_addr: str | None = None,
        secured: bool = False,
    ) -> bool:
        try:
            return await asyncio.to_thread(self._db.verify, username, password, cache=self._cache)
        except UserDBError as exc:
            raise AuthBackendError(str(exc)) from exc

    async def lookup_secret(self, username: str, scheme: str) -> tuple[object | None, str | None]:
        try:
            return await asyncio.to_thread(self._lookup, username, scheme)
        except UserDBError as exc:
            raise AuthBackendError(str(exc)) from exc

    def _lookup(self, username: str, scheme: str) -> tuple[object | None, str | None]:
        secret: object | None
        if scheme == CRAM_MD5:
            secret = self._db.cram_md5_secret(username)
        else:
            secret = self._db.scram_credentials(username, scheme)
        if secret is not None:
            return secret, None
        if scheme != CRAM_MD5:
            # SCRAM answers unknown users with made-up keys that must look like real ones.
            secret = self._db.scram_decoy()
        if not self._db.user_exists(username):
            return secret, None
        return secret, (
            f"no {scheme} secret for user {username} (its password was set before {scheme} was "
            f"stored; set it again with: postillion user passwd {username})"
        )

    def __repr__(self) -> str:
        return f"UserDBVerifier({str(self.path)!r})"


class SaslauthdVerifier:
    """Asks saslauthd over its mux socket (any saslauthd -a: pam, shadow, sasldb, ldap ...)."""

    def __init__(
        self,
        socket_path: Path | str = DEFAULT_SOCKET,
        service: str = "smtp",
        realm: str = "",
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.socket_path = str(socket_path)
        self.service = service
        self.realm = realm
        self.timeout = timeout

    async def verify(
        self,
        username: str,
        password: str,
        *,
        service: str | None = None,
        realm: str | None = None,
        client_addr: str | None = None,
        local_addr: str | None = None,
        secured: bool = False,
    ) -> bool:
        # saslauthd 2.1.28 reads exactly four fields, so client_addr is not sent.
        login, user_realm = split_realm(username, self.realm if realm is None else realm)
        ok, _text = await saslauthd_check(
            self.socket_path,
            login,
            password,
            service or self.service,
            user_realm,
            timeout=self.timeout,
        )
        return ok

    def __repr__(self) -> str:
        return f"SaslauthdVerifier({self.socket_path!r}, {self.service!r}, {self.realm!r})"


@dataclass(frozen=True, slots=True)
class SaslServerConfig:
    """What the session needs: who checks passwords, which mechanisms exist, and a description
    for the startup log (``notes`` are things worth a log line, such as ignored mechanisms)."""

    verifier: Verifier
    mechanisms: list[str]
    description: str
    notes: list[str] = field(default_factory=list)


def make_sasl_server(params: Params) -> SaslServerConfig:
    """Build the verifier from ``smtpd_sasl_type`` and the Cyrus application config file."""
    check_sasl_type(params)
    if params.get("smtpd_sasl_type").strip() == "dovecot":
        from postillion.sasl.dovecot_client import dovecot_sasl_server  # imports this module

        return dovecot_sasl_server(params)
    conf_path = find_sasl_conf(params)
    if conf_path is None:
        db = _user_database(params)
        dirs = ", ".join(str(d) for d in sasl_conf_search_path(params))
        app = params.get("smtpd_sasl_path") or "smtpd"
        return SaslServerConfig(
            verifier=_userdb_verifier(db, params),
            mechanisms=_usable(SUPPORTED_MECHANISMS, secrets=True, cram=_cram_enabled(params)),
            description=f"postillion user database {db} (no {app}.conf in {dirs})",
        )

    conf = parse_sasl_conf(conf_path)
    notes: list[str] = []
    method = conf.pwcheck_method[0]
    if len(conf.pwcheck_method) > 1:
        notes.append(
            f"{conf_path}: pwcheck_method: only the first method ({method}) is used; "
            f"ignored: {' '.join(conf.pwcheck_method[1:])}"
        )
    verifier: Verifier
    secrets = method != "saslauthd"
    if method == "saslauthd":
        socket_path = conf.saslauthd_path or DEFAULT_SOCKET
        verifier = SaslauthdVerifier(
            socket_path,
            params.get("smtpd_sasl_service") or "smtp",
            params.get("smtpd_sasl_local_domain"),
        )
        description = f"saslauthd {socket_path} (from {conf_path})"
    elif method == "auxprop":
        plugins = (conf.auxprop_plugin or "").split()
        if plugins and "postillion" not in plugins:
            raise ConfigError(
                f"auxprop_plugin {conf.auxprop_plugin} is not supported",
                path=conf_path,
                name="auxprop_plugin",
                fix="use auxprop_plugin: postillion (the postillion user database), or "
                "pwcheck_method: saslauthd with saslauthd -a sasldb",
            )
        db = _user_database(params)
        verifier = _userdb_verifier(db, params)
        description = f"postillion user database {db} (from {conf_path})"
    else:
        raise ConfigError(
            f"pwcheck_method {method} is not supported",
            path=conf_path,
            name="pwcheck_method",
            fix="use saslauthd or auxprop",
        )
    cram = _cram_enabled(params)
    return SaslServerConfig(
        verifier=verifier,
        mechanisms=_mechanisms(conf.mech_list, conf_path, notes, secrets=secrets, cram=cram),
        description=description,
        notes=notes,
    )


def _cram_enabled(params: Params) -> bool:
    return params.get_bool("postillion_cram_md5_enable")


def _usable(names: tuple[str, ...] | list[str], *, secrets: bool, cram: bool) -> list[str]:
    """SCRAM and CRAM-MD5 need stored secrets (the user database); CRAM-MD5 also the opt-in."""
    return [
        m for m in names
        if (secrets or m not in SECRET_MECHANISMS) and (cram or m != CRAM_MD5)
    ]


def _mechanisms(
    mech_list: tuple[str, ...] | None, path: Path, notes: list[str], *, secrets: bool, cram: bool
) -> list[str]:
    if mech_list is None:
        return _usable(SUPPORTED_MECHANISMS, secrets=secrets, cram=cram)
    chosen: list[str] = []
    for mech in mech_list:
        name = mech.upper()
        if name not in SUPPORTED_MECHANISMS:
            notes.append(f"{path}: mech_list: {mech} is not supported by postillion; ignored")
        elif not secrets and name in SECRET_MECHANISMS:
            notes.append(
                f"{path}: mech_list: {mech} needs stored secrets, but saslauthd checks only "
                "plaintext passwords; ignored (use pwcheck_method: auxprop)"
            )
        elif name == CRAM_MD5 and not cram:
            notes.append(
                f"{path}: mech_list: {mech} is not offered without postillion_cram_md5_enable = yes; "
                "ignored"
            )
        elif name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ConfigError(
            "mech_list names no mechanism postillion supports",
            path=path,
            name="mech_list",
            fix=f"add {' '.join(_usable(SUPPORTED_MECHANISMS, secrets=secrets, cram=False))}",
        )
    return chosen


def _userdb_verifier(path: Path, params: Params) -> UserDBVerifier:
    return UserDBVerifier(path, cache_ttl=params.get_time("postillion_auth_cache_ttl"),
                          scram_iterations=params.get_int("postillion_scram_iterations"))


def _user_database(params: Params) -> Path:
    path = params.path("postillion_user_database")
    if path is None:
        raise param_error(
            params,
            "postillion_user_database",
            "no user database configured",
            "set it to a file name, e.g. $data_directory/users.sqlite",
        )
    return path


# What each mechanism satisfies, as Cyrus SASL's security flags (sasl.h SASL_SEC_*); an option
# in smtpd_sasl_security_options removes every mechanism that lacks it.
_MECHANISM_PROPERTIES: dict[str, frozenset[str]] = {
    "PLAIN": frozenset({"noanonymous"}),
    "LOGIN": frozenset({"noanonymous"}),
    "ANONYMOUS": frozenset({"noplaintext"}),
    "CRAM-MD5": frozenset({"noanonymous", "noplaintext"}),
    "SCRAM-SHA-1": frozenset({"noanonymous", "noplaintext", "mutual_auth"}),
    "SCRAM-SHA-256": frozenset({"noanonymous", "noplaintext", "mutual_auth"}),
    "SCRAM-SHA-1-PLUS": frozenset({"noanonymous", "noplaintext", "mutual_auth"}),
    "SCRAM-SHA-256-PLUS": frozenset({"noanonymous", "noplaintext", "mutual_auth"}),
}
SECURITY_OPTIONS = frozenset(
    {"noanonymous", "noplaintext", "noactive", "nodictionary", "mutual_auth", "forward_secrecy"}
)


def offered_mechanisms(
    all_mechanisms: list[str], security_options: list[str], *, tls: bool = True
) -> list[str]:
    """The mechanisms allowed by ``smtpd_sasl_security_options`` (or the TLS variant).

    ``noplaintext`` removes PLAIN and LOGIN; ``noanonymous`` removes ANONYMOUS; ``noactive``,
    ``nodictionary``, ``mutual_auth`` and ``forward_secrecy`` remove every mechanism that cannot
    promise them (all plaintext ones), as in Cyrus SASL.  ``tls=False`` (the list offered before
    STARTTLS) also removes the -PLUS mechanisms: without TLS there is no channel to bind to.
    """
    wanted = set()
    for option in security_options:
        opt = option.strip().lower()
        if not opt:
            continue
        if opt not in SECURITY_OPTIONS:
            raise ConfigError(
                f"unknown SASL security option {option!r}",
                fix=f"use some of {', '.join(sorted(SECURITY_OPTIONS))}",
            )
        wanted.add(opt)
    return [
        m
        for m in all_mechanisms
        if wanted <= _MECHANISM_PROPERTIES.get(m.upper(), frozenset())
        and (tls or not m.upper().endswith("-PLUS"))
    ]
