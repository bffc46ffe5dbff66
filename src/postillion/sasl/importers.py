"""Reading users out of the stores people migrate from: Cyrus ``sasldb2`` and Dovecot passwd-file.

Owns: running the real Cyrus/Berkeley DB tools on a sasldb2 file and parsing their output, and
parsing a Dovecot passwd-file into (user, ``{SCHEME}hash``) pairs with file:line errors.
Must not import: config, server, the user database (the CLI writes what we return).
Follows: Cyrus SASL sasldblistusers2(8) and its sasldb key layout ``user NUL realm NUL
userPassword`` (plaintext secrets), Berkeley DB db_dump(1) ``-p`` printable format, Dovecot's
passwd-file format ``user:password:uid:gid:gecos:home:shell:extra_fields``.

sasldb2 keeps plaintext passwords (that is why Cyrus can offer CRAM-MD5 from it), so imported
users get fresh argon2id and SCRAM keys; passwd-file users keep their hashes as they are.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from postillion.errors import ConfigError
from postillion.sasl import schemes

_DB_DUMP = ("db5.3_dump", "db_dump")
_PASSWORD_PROPERTY = "userPassword"


@dataclass(frozen=True, slots=True)
class SasldbUser:
    user: str
    realm: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PasswdFileUser:
    user: str
    stored: str = field(repr=False)  # "{SCHEME}data", the scheme made explicit
    lineno: int


def read_sasldb(path: Path) -> list[SasldbUser]:
    """Every user with a ``userPassword`` in the sasldb2 file, in the order db_dump lists them.

    ``sasldblistusers2`` proves the file is a sasldb Cyrus itself can read; ``db_dump -p`` then
    gives the secrets (sasldblistusers2 never prints them).
    """
    if not path.is_file():
        raise ConfigError(f"{path}: no such file", fix="name the sasldb2 file, e.g. /etc/sasldb2")
    lister = shutil.which("sasldblistusers2")
    dumper = next((p for p in (shutil.which(n) for n in _DB_DUMP) if p), None)
    if lister is None or dumper is None:
        raise ConfigError(
            "reading sasldb2 needs sasldblistusers2 and db5.3_dump",
            fix="apt-get install sasl2-bin db5.3-util",
        )
    listed = _run([lister, "-f", str(path)])
    names = {line.rsplit(": ", 1)[0] for line in listed.splitlines()
             if line.endswith(": " + _PASSWORD_PROPERTY)}
    users = []
    for key, value in _db_dump_pairs(_run([dumper, "-p", str(path)])):
        parts = key.split(b"\0")
        if len(parts) != 3 or parts[2] != _PASSWORD_PROPERTY.encode():
            continue
        user, realm, password = (_text(path, parts[0], parts[1], what, raw) for what, raw in
                                 (("user name", parts[0]), ("realm", parts[1]),
                                  ("password", value)))
        if f"{user}@{realm}" in names:
            users.append(SasldbUser(user, realm, password))
    return users


def _text(path: Path, user: bytes, realm: bytes, what: str, raw: bytes) -> str:
    """``raw`` as UTF-8, or a ConfigError naming the entry (the user database keeps text)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        entry = (user + b"@" + realm).decode("utf-8", "backslashreplace")
        raise ConfigError(f"user {entry}: the {what} is not UTF-8", path=path,
                          fix="re-encode it with saslpasswd2, or leave the user out and add it "
                              "with postillion user add") from None


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, check=False, capture_output=True, text=True,
                            errors="surrogateescape")
    if result.returncode != 0:
        raise ConfigError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _db_dump_pairs(text: str) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of ``db_dump -p`` output: data lines start with one space; ``\\xx`` is a
    hex byte and ``\\\\`` a backslash."""
    lines = text.splitlines()
    try:
        start = lines.index("HEADER=END") + 1
    except ValueError:
        raise ConfigError("db_dump printed no header: not a Berkeley DB file?") from None
    data = [_unescape(line[1:]) for line in lines[start:] if line.startswith(" ")]
    return list(zip(data[0::2], data[1::2]))


def _unescape(text: str) -> bytes:
    out = bytearray()
    raw = text.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        if raw[i] == 0x5C and raw[i + 1 : i + 2] == b"\\":
            out.append(0x5C)
            i += 2
        elif raw[i] == 0x5C:
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def read_passwd_file(path: Path, default_scheme: str = schemes.DEFAULT_SCHEME) -> list[PasswdFileUser]:
    """Users of a Dovecot passwd-file; every unusable line is an error naming file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    users: list[PasswdFileUser] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, sep, rest = line.partition(":")
        password = rest.split(":", 1)[0]
        if not sep or not user:
            raise ConfigError("expected user:password:...", path=path, lineno=lineno)
        if not password:
            raise ConfigError(f"user {user} has no password", path=path, lineno=lineno,
                              fix="remove the line or give the user a password")
        if user in seen:
            raise ConfigError(f"user {user} is listed twice", path=path, lineno=lineno)
        try:
            scheme = schemes.check_supported(password, default_scheme)
        except schemes.SchemeError as exc:
            raise ConfigError(f"user {user}: {exc}", path=path, lineno=lineno,
                              fix="set a new password after the import: postillion user passwd "
                              + user) from None
        data = password if password.startswith("{") else "{" + scheme + "}" + password
        seen.add(user)
        users.append(PasswdFileUser(user, data, lineno))
    return users
