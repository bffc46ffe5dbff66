"""The SMTP server's TLS context, built from Postfix's smtpd_tls_* parameters.

Owns: ``make_server_context(params)`` (security level, certificate/key loading, protocol
floor, ciphers) and ``describe_session(ssl_object)``, the ``TLSv1.3 with cipher ...`` text that
the log and the Received: header share.
Must not import: server.session, server.listener, cli (it takes a Params and returns a context).
Follows: Postfix TLS_README and postconf(5): smtpd_tls_security_level (and the obsolete
smtpd_use_tls / smtpd_enforce_tls), smtpd_tls_cert_file, smtpd_tls_key_file,
smtpd_tls_chain_files, smtpd_tls_eccert_file/eckey_file, smtpd_tls_protocols,
smtpd_tls_mandatory_protocols, smtpd_tls_wrappermode; ``tls/tls_misc.c`` (protocol syntax)
and ``tls/tls_session.c`` log text.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

from postillion.errors import ConfigError

LEVELS = ("none", "may", "encrypt")

# Postfix protocol names in order; TLSv1.2 is the floor we fall back to when nothing is said.
_PROTOCOLS = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_SSL_VERSIONS = {
    "SSLv3": ssl.TLSVersion.SSLv3,
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
DEFAULT_FLOOR = "TLSv1.2"
_MISMATCH_REASONS = frozenset({"KEY_VALUES_MISMATCH", "KEY_TYPE_MISMATCH", "NO_CERTIFICATE_ASSIGNED"})


class TLSParams(Protocol):
    """The part of ``postillion.config.Params`` this module reads."""

    @property
    def config_dir(self) -> Path: ...

    def get(self, name: str) -> str: ...

    def get_bool(self, name: str) -> bool: ...

    def get_list(self, name: str) -> list[str]: ...


def _flag(params: TLSParams, name: str) -> bool:
    # Parameters the registry may not know read as "" (= Postfix's default "no").
    return bool(params.get(name).strip()) and params.get_bool(name)


def security_level(params: TLSParams) -> str:
    """``smtpd_tls_security_level``, or the obsolete smtpd_enforce_tls / smtpd_use_tls."""
    level = params.get("smtpd_tls_security_level").strip().lower()
    if level:
        if level not in LEVELS:
            raise ConfigError(
                f"unsupported TLS security level {level!r}",
                name="smtpd_tls_security_level",
                fix="use none, may or encrypt",
            )
        return level
    if _flag(params, "smtpd_enforce_tls"):
        return "encrypt"
    if _flag(params, "smtpd_use_tls"):
        return "may"
    return "none"


def parse_protocols(value: list[str] | str, *, name: str) -> tuple[str, str]:
    """Postfix protocol syntax → (lowest, highest) allowed protocol name.

    Accepts ``>=TLSv1.2``, ``<=TLSv1.3``, exclusions ``!SSLv2, !SSLv3, !TLSv1, !TLSv1.1`` and an
    inclusion list ``TLSv1.2, TLSv1.3`` (tls_misc.c tls_protocol_mask).  OpenSSL only supports
    a contiguous range, so a hole in the middle is refused rather than silently widened.
    """
    text = " ".join(value) if isinstance(value, list) else value
    items = text.replace(",", " ").replace(":", " ").split()  # Postfix also allows "!SSLv2:!SSLv3"
    allowed = set(_PROTOCOLS)
    included: set[str] = set()
    low, high = 0, len(_PROTOCOLS) - 1

    def index(proto: str) -> int:
        for i, p in enumerate(_PROTOCOLS):
            if p.lower() == proto.lower():
                return i
        raise ConfigError(
            f"unknown TLS protocol {proto!r}", name=name, fix="use e.g. >=TLSv1.2 or !SSLv2, !SSLv3"
        )

    for item in items:
        item = item.strip()
        if not item:
            continue
        if item.startswith(">="):
            low = max(low, index(item[2:]))
        elif item.startswith("<="):
            high = min(high, index(item[2:]))
        elif item.startswith("!"):
            allowed.discard(_PROTOCOLS[index(item[1:])])
        else:
            included.add(_PROTOCOLS[index(item)])
    if included:
        allowed &= included
    # Python/OpenSSL cannot speak SSLv2 at all.
    chosen = [i for i, p in enumerate(_PROTOCOLS) if p in allowed and low <= i <= high and p != "SSLv2"]
    if not chosen:
        raise ConfigError("no TLS protocol left enabled", name=name, fix="use e.g. >=TLSv1.2")
    if chosen != list(range(chosen[0], chosen[-1] + 1)):
        raise ConfigError(
            "TLS protocols must form a contiguous range", name=name, fix="use e.g. >=TLSv1.2"
        )
    return _PROTOCOLS[chosen[0]], _PROTOCOLS[chosen[-1]]


def _resolve(params: TLSParams, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else params.config_dir / path


def _load(context: ssl.SSLContext, cert: Path, key: Path | None, *, cert_param: str, key_param: str) -> None:
    for param, path in ((cert_param, cert), (key_param, key)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(
                f"cannot read {path}: {exc.strerror or exc}",
                name=param,
                path=path,
                fix="check the file name and permissions",
            ) from exc
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key) if key is not None else None)
    except ssl.SSLError as exc:
        # A key of another type than the certificate's shows as NO_CERTIFICATE_ASSIGNED.
        mismatch = exc.reason in _MISMATCH_REASONS
        if mismatch:
            what = "private key does not match the certificate"
        else:
            what = f"cannot load certificate/key: {exc.reason or exc}"
        files = str(cert) if key is None or key == cert else f"{cert}, {key}"
        raise ConfigError(
            f"{what} ({files})",
            name=key_param if mismatch else cert_param,
            path=key if mismatch and key is not None else cert,
            fix="use a PEM certificate chain and the private key that belongs to it",
        ) from exc


def make_server_context(params: TLSParams) -> ssl.SSLContext | None:
    """The server SSLContext, or None when TLS is off (level none and not wrappermode).

    Raises ConfigError naming the parameter and file for unreadable, unparsable or
    mismatched certificates and keys.
    """
    level = security_level(params)
    wrapper = _flag(params, "smtpd_tls_wrappermode")
    if level == "none" and not wrapper:
        return None

    # Mandatory TLS uses the mandatory protocol list (Postfix: smtpd_tls_mandatory_protocols).
    proto_param = "smtpd_tls_mandatory_protocols" if level == "encrypt" else "smtpd_tls_protocols"
    proto_value = params.get_list(proto_param)
    low, high = parse_protocols(proto_value, name=proto_param) if proto_value else (DEFAULT_FLOOR, "TLSv1.3")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # OpenSSL's secure default cipher list
    context.minimum_version = _SSL_VERSIONS[low]
    context.maximum_version = _SSL_VERSIONS[high]
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_SINGLE_ECDH_USE
    context.verify_mode = ssl.CERT_NONE  # smtpd does not ask for client certificates

    loaded = False
    for chain in params.get_list("smtpd_tls_chain_files"):
        path = _resolve(params, chain)
        # Each chain file holds the private key followed by its certificate chain.
        _load(context, path, None, cert_param="smtpd_tls_chain_files", key_param="smtpd_tls_chain_files")
        loaded = True
    if not loaded:
        for cert_param, key_param in (
            ("smtpd_tls_cert_file", "smtpd_tls_key_file"),
            ("smtpd_tls_eccert_file", "smtpd_tls_eckey_file"),
        ):
            cert_value = params.get(cert_param).strip()
            if not cert_value:
                continue
            key_value = params.get(key_param).strip() or cert_value
            _load(
                context,
                _resolve(params, cert_value),
                _resolve(params, key_value),
                cert_param=cert_param,
                key_param=key_param,
            )
            loaded = True
    if not loaded:
        raise ConfigError(
            f"TLS security level {level!r} needs a server certificate",
            name="smtpd_tls_cert_file",
            fix="set smtpd_tls_chain_files or smtpd_tls_cert_file/smtpd_tls_key_file "
            "(postillion init can make a self-signed one)",
        )
    return context


def _alg_bits(ssl_object: ssl.SSLObject | ssl.SSLSocket, cipher_name: str, fallback: int) -> int:
    try:
        for c in ssl_object.context.get_ciphers():
            if c.get("name") == cipher_name:
                return int(c.get("alg_bits", fallback))
    except (ssl.SSLError, AttributeError):
        pass
    return fallback


def describe_session(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str:
    """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)``.

    Postfix appends ``key-exchange X25519 server-signature ...``; Python only exposes the key
    exchange group from 3.13 on (``SSLSocket.group()``), so that part appears only there and
    the signature part never.
    """
    cipher = ssl_object.cipher()
    version = ssl_object.version() or "unknown"
    if cipher is None:
        return version
    name, _proto, secret_bits = cipher
    use_bits = secret_bits or 0
    text = f"{version} with cipher {name} ({use_bits}/{_alg_bits(ssl_object, name, use_bits)} bits)"
    group = getattr(ssl_object, "group", None)
    if callable(group):
        try:
            g = group()
        except (ssl.SSLError, ValueError):
            g = None
        if g:
            text += f" key-exchange {g}"
    return text
