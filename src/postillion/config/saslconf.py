"""Cyrus SASL application configuration (``smtpd.conf``): where it is, what it says, is it sane.

Owns: the search path for ``<smtpd_sasl_path>.conf``, its ``key: value`` syntax, and the
``postillion check`` findings about it.
Must not import: sasl, server, cli (``sasl.verifiers`` turns the parsed file into a verifier).
Follows: Cyrus SASL 2.1.28 lib/config.c and options(5); Postfix SASL_README "Cyrus SASL
configuration file location" (Debian keeps it in /etc/postfix/sasl); saslauthd(8).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from postillion.config.check import ERROR, WARNING, Diagnostic
from postillion.errors import ConfigError

if TYPE_CHECKING:
    from postillion.config import Params

# libsasl's compiled-in places, Debian's Postfix patch first (README.Debian).
SYSTEM_CONF_DIRS = (Path("/etc/postfix/sasl"), Path("/usr/lib/sasl2"), Path("/etc/sasl2"))
DEFAULT_SASLAUTHD_PATH = "/var/run/saslauthd/mux"

# Every pwcheck_method Cyrus SASL knows; postillion implements saslauthd and auxprop.
PWCHECK_METHODS = frozenset(
    {"auxprop", "auxprop-hashed", "saslauthd", "authdaemond", "pwcheck", "alwaystrue"}
)
PLAINTEXT_MECHANISMS = ("PLAIN", "LOGIN")

_LINE = re.compile(r"^([A-Za-z0-9_.-]+)\s*:\s*(.*)$")


@dataclass(frozen=True, slots=True)
class SaslAppConfig:
    """A parsed ``smtpd.conf``; ``options`` holds every key (first occurrence wins, as in Cyrus)."""

    path: Path
    pwcheck_method: tuple[str, ...] = ("auxprop",)  # the Cyrus default
    mech_list: tuple[str, ...] | None = None  # None: every mechanism we have
    saslauthd_path: str | None = None
    log_level: int = 1  # SASL_LOG_ERR
    auxprop_plugin: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    linenos: dict[str, int] = field(default_factory=dict)  # key → line it was set on

    def error(self, key: str, message: str, fix: str) -> ConfigError:
        return ConfigError(message, path=self.path, lineno=self.linenos.get(key), name=key, fix=fix)


def sasl_conf_search_path(params: Params) -> list[Path]:
    """Directories searched for the application config file, in order, without duplicates.

    ``cyrus_sasl_config_path`` (colon-separated, relative entries against config_dir) replaces the
    system directories; ``config_dir/sasl`` is always searched too (first by default, last when
    the path is set explicitly, so the explicit setting wins).
    """
    own = params.config_dir / "sasl"
    configured = params.get("cyrus_sasl_config_path").strip()
    if configured:
        dirs = [params.config_dir / d for d in configured.split(":") if d.strip()]
        dirs.append(own)
    else:
        dirs = [own, *SYSTEM_CONF_DIRS]
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def param_error(params: Params, name: str, message: str, fix: str) -> ConfigError:
    """A ConfigError about main.cf/master.cf parameter ``name``, pointing at where it was set."""
    origin = params.origin(name)
    return ConfigError(
        message,
        path=origin.path if origin else None,
        lineno=origin.lineno if origin else None,
        name=name,
        fix=fix,
    )


def _app_name(params: Params) -> str:
    name = params.get("smtpd_sasl_path").strip() or "smtpd"
    if "/" in name or name.startswith("."):
        raise param_error(
            params,
            "smtpd_sasl_path",
            f"{name!r} is not a Cyrus SASL application name",
            "with smtpd_sasl_type = cyrus use a name such as smtpd (the file is smtpd.conf)",
        )
    return name


def find_sasl_conf(params: Params) -> Path | None:
    """The first ``<smtpd_sasl_path>.conf`` on the search path, or None."""
    filename = _app_name(params) + ".conf"
    for d in sasl_conf_search_path(params):
        candidate = d / filename
        if candidate.is_file():
            return candidate
    return None


def parse_sasl_conf(path: Path | str) -> SaslAppConfig:
    """Parse a Cyrus application config file; ConfigError(path, lineno) on anything bad."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("not valid UTF-8", path=path) from exc
    options: dict[str, str] = {}
    linenos: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise ConfigError(
                f"bad line {line[:60]!r}", path=path, lineno=lineno, fix="write key: value"
            )
        key, value = m.group(1), m.group(2).strip()
        if key not in options:
            options[key] = value
            linenos[key] = lineno

    raw_conf = SaslAppConfig(path=path, options=options, linenos=linenos)

    pwcheck: tuple[str, ...] = ("auxprop",)
    if "pwcheck_method" in options:
        pwcheck = tuple(options["pwcheck_method"].split())
        if not pwcheck:
            raise raw_conf.error("pwcheck_method", "empty value", "use saslauthd or auxprop")
        for method in pwcheck:
            if method not in PWCHECK_METHODS:
                raise raw_conf.error(
                    "pwcheck_method", f"unknown method {method!r}", "use saslauthd or auxprop"
                )
    log_level = 1
    if "log_level" in options:
        try:
            log_level = int(options["log_level"])
        except ValueError:
            raise raw_conf.error(
                "log_level",
                f"not a number: {options['log_level']!r}",
                "use 0 (none) to 7 (everything)",
            ) from None
    mech_list = tuple(options["mech_list"].split()) if "mech_list" in options else None
    return SaslAppConfig(
        path=path,
        pwcheck_method=pwcheck,
        mech_list=mech_list,
        saslauthd_path=options.get("saslauthd_path") or None,
        log_level=log_level,
        auxprop_plugin=options.get("auxprop_plugin") or None,
        options=options,
        linenos=linenos,
    )


def check_sasl_type(params: Params) -> None:
    """Raise ConfigError unless ``smtpd_sasl_type`` names a SASL server postillion has."""
    sasl_type = params.get("smtpd_sasl_type").strip() or "cyrus"
    if sasl_type not in ("cyrus", "dovecot"):
        raise param_error(
            params,
            "smtpd_sasl_type",
            f"unknown SASL server type {sasl_type!r}",
            "use cyrus or dovecot",
        )


def check(params: Params) -> list[Diagnostic]:
    """``postillion check`` findings for the SASL setup (none when SMTP AUTH is off).

    An unreadable or malformed file is an error (smtpd would refuse AUTH); everything else is
    a warning.
    """
    try:
        if not params.get_bool("smtpd_sasl_auth_enable"):
            return []
        # The verdict make_sasl_server gives at startup: `check` must refuse what would
        # make every smtpd worker exit.
        check_sasl_type(params)
        if params.get("smtpd_sasl_type").strip() == "dovecot":
            return _dovecot_socket_check(params)  # a socket, not a Cyrus application name
        path = find_sasl_conf(params)
        if path is None:
            return []
        conf = parse_sasl_conf(path)
    except ConfigError as exc:
        return [Diagnostic.from_error(exc, ERROR)]
    found: list[ConfigError] = []
    if conf.pwcheck_method[0] == "saslauthd":
        if conf.mech_list is not None and not any(
            m.upper() in PLAINTEXT_MECHANISMS for m in conf.mech_list
        ):
            found.append(
                conf.error(
                    "mech_list",
                    "offers neither PLAIN nor LOGIN, but saslauthd can only check plaintext "
                    "mechanisms: no client will be able to log in",
                    "mech_list: PLAIN LOGIN",
                )
            )
        socket_path = conf.saslauthd_path or DEFAULT_SASLAUTHD_PATH
        problem = _socket_problem(socket_path)
        if problem:
            found.append(
                conf.error(
                    "saslauthd_path",
                    f"saslauthd socket {socket_path}: {problem}",
                    f"start it with saslauthd -a pam -m {os.path.dirname(socket_path)}",
                )
            )
    return [Diagnostic.from_error(exc, WARNING) for exc in found]


def _dovecot_socket_check(params: Params) -> list[Diagnostic]:
    """A UNIX ``smtpd_sasl_path`` must name Dovecot's auth socket (relative paths are under
    queue_directory, as for Postfix's chrooted smtpd).  A warning: Dovecot may start later."""
    spec = params.get("smtpd_sasl_path").strip()
    if spec.startswith("inet:"):
        return []
    path = spec.removeprefix("unix:")
    if not os.path.isabs(path):
        queue_directory = params.path("queue_directory") or params.config_dir
        path = os.path.join(queue_directory, path)
    problem = _socket_problem(path)
    if problem is None:
        return []
    if problem.startswith("does not exist"):
        problem = "does not exist (is Dovecot running, with an auth unix_listener there?)"
    return [Diagnostic.from_error(param_error(
        params, "smtpd_sasl_path", f"Dovecot auth socket {path}: {problem}",
        "point it at Dovecot's auth listener (Postfix's convention: private/auth, with "
        "service auth { unix_listener " + path + " { mode = 0660 } } in Dovecot's 10-master.conf)",
    ), WARNING)]


def _socket_problem(socket_path: str) -> str | None:
    try:
        mode = os.stat(socket_path).st_mode
    except FileNotFoundError:
        return "does not exist (is saslauthd running?)"
    except PermissionError:
        return None  # the directory hides it from us; the workers' user may still reach it
    except OSError as exc:
        return exc.strerror or str(exc)
    if not stat.S_ISSOCK(mode):
        return "is not a socket"
    return None
