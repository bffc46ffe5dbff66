"""Dovecot password schemes: checking ``{SCHEME}hash`` strings brought over from a passwd-file.

Owns: parsing the ``{SCHEME}`` prefix (and Dovecot's ``.HEX``/``.B64`` encoding suffixes), the
list of schemes we can check a plaintext password against, and that check.
Must not import: config, server, asyncio (blocking; callers run it in a thread).
Follows: Dovecot 2.3 "Password Schemes" (doc.dovecot.org/configuration_manual/authentication/
password_schemes), passdb passwd-file (``default_pass_scheme = CRYPT``), RFC 5802 (SCRAM keys).

Users imported from Dovecot keep their hashes as they are; a successful login proves the
password, so nobody has to reset it on the day of the move.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from postillion.sasl import unixcrypt

DEFAULT_SCHEME = "CRYPT"  # passwd-file's default_pass_scheme

_CRYPT = frozenset({"CRYPT", "DES-CRYPT", "MD5-CRYPT", "SHA256-CRYPT", "SHA512-CRYPT",
                    "BLF-CRYPT"})
_MD5 = "MD5"  # Dovecot: MD5-CRYPT when the data starts with $1$, else PLAIN-MD5
_PLAIN = frozenset({"PLAIN", "CLEAR", "CLEARTEXT"})
_DIGESTS = {"SHA": "sha1", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512",
            "LDAP-MD5": "md5", "PLAIN-MD5": "md5"}
_SALTED = {"SSHA": "sha1", "SSHA256": "sha256", "SSHA512": "sha512", "SMD5": "md5"}
_ARGON2 = frozenset({"ARGON2I", "ARGON2ID"})
_SCRAM = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
MAX_SCRAM_ITERATIONS = 10_000_000  # as sasl.scram: a stored count must not make a login take minutes

SUPPORTED_SCHEMES: frozenset[str] = (
    _CRYPT | {_MD5} | _PLAIN | frozenset(_DIGESTS) | frozenset(_SALTED) | _ARGON2 | frozenset(_SCRAM)
)


class SchemeError(ValueError):
    """A stored password names a scheme we cannot check, or is malformed."""


def split_scheme(stored: str, default: str = DEFAULT_SCHEME) -> tuple[str, str, str | None]:
    """``{SHA256.HEX}abc`` → ("SHA256", "abc", "hex"); no prefix → (default, stored, None)."""
    if stored.startswith("{") and "}" in stored:
        name, _, rest = stored[1:].partition("}")
        scheme, _, encoding = name.upper().partition(".")
        enc = {"": None, "HEX": "hex", "B64": "b64", "BASE64": "b64"}.get(encoding)
        if encoding and enc is None:
            raise SchemeError(f"unknown encoding .{encoding} in {{{name}}}")
        return scheme, rest, enc
    return default.upper(), stored, None


def check_supported(stored: str, default: str = DEFAULT_SCHEME) -> str:
    """The scheme of ``stored``; raises SchemeError naming it when we cannot check it."""
    scheme, _, _ = split_scheme(stored, default)
    if scheme not in SUPPORTED_SCHEMES:
        raise SchemeError(
            f"password scheme {scheme} is not supported (supported: "
            f"{' '.join(sorted(SUPPORTED_SCHEMES))})"
        )
    return scheme


def verify(stored: str, password: str, default: str = DEFAULT_SCHEME) -> bool:
    """True when ``password`` matches ``stored`` (``{SCHEME}data``).  Blocking."""
    scheme, data, encoding = split_scheme(stored, default)
    if scheme in _PLAIN:
        # PLAIN is stored as it is, unless a .HEX/.B64 suffix says otherwise.
        raw = _decode(data, encoding) if encoding else data.encode("utf-8")
        return hmac.compare_digest(raw, password.encode("utf-8"))
    if scheme in _CRYPT or (scheme == _MD5 and data.startswith("$1$")):
        return unixcrypt.verify(password, data)
    if scheme == _MD5:  # Dovecot's md5_verify: not MD5-CRYPT, so PLAIN-MD5
        raw = _decode_digest(data, encoding, "md5")
        return hmac.compare_digest(raw, hashlib.md5(password.encode()).digest())
    if scheme in _ARGON2:
        try:
            return PasswordHasher().verify(data, password)
        except (VerificationError, InvalidHashError):
            return False
    if scheme in _DIGESTS:
        raw = _decode_digest(data, encoding, _DIGESTS[scheme])
        return hmac.compare_digest(raw, hashlib.new(_DIGESTS[scheme], password.encode()).digest())
    if scheme in _SALTED:
        algo = _SALTED[scheme]
        raw = _decode(data, encoding or "b64")
        size = hashlib.new(algo).digest_size
        digest, salt = raw[:size], raw[size:]
        return hmac.compare_digest(digest, hashlib.new(algo, password.encode() + salt).digest())
    if scheme in _SCRAM:
        keys = scram_keys(data)
        algo = _SCRAM[scheme]
        salted = hashlib.pbkdf2_hmac(algo, password.encode(), keys.salt, keys.iterations)
        client_key = hmac.new(salted, b"Client Key", algo).digest()
        return hmac.compare_digest(hashlib.new(algo, client_key).digest(), keys.stored_key)
    raise SchemeError(f"password scheme {scheme} is not supported")


class DovecotScramKeys:
    """Dovecot's ``{SCRAM-SHA-256}iterations,salt,StoredKey,ServerKey`` (base64 fields)."""

    __slots__ = ("iterations", "salt", "stored_key", "server_key")

    def __init__(self, iterations: int, salt: bytes, stored_key: bytes, server_key: bytes) -> None:
        self.iterations = iterations
        self.salt = salt
        self.stored_key = stored_key
        self.server_key = server_key


def scram_keys(data: str) -> DovecotScramKeys:
    """Parse the part after ``{SCRAM-SHA-*}``."""
    fields = data.split(",")
    if len(fields) != 4 or not (fields[0].isascii() and fields[0].isdigit()):
        raise SchemeError("SCRAM password is not iterations,salt,StoredKey,ServerKey")
    if not 1 <= int(fields[0]) <= MAX_SCRAM_ITERATIONS:
        raise SchemeError(f"SCRAM password has an iteration count out of range: {fields[0]}")
    try:
        salt, stored, server = (base64.b64decode(f, validate=True) for f in fields[1:])
    except binascii.Error as exc:
        raise SchemeError(f"SCRAM password has bad base64: {exc}") from exc
    return DovecotScramKeys(int(fields[0]), salt, stored, server)


def _decode_digest(data: str, encoding: str | None, algo: str) -> bytes:
    """A fixed-size digest as Dovecot's password_decode() reads it: with no .HEX/.B64 suffix,
    hex when the text is exactly twice the digest size long (and is hex), else base64."""
    if encoding is None and len(data) == 2 * hashlib.new(algo).digest_size:
        try:
            return bytes.fromhex(data)
        except ValueError:
            pass  # Dovecot falls through to base64 too
    return _decode(data, encoding or "b64")


def _decode(data: str, encoding: str) -> bytes:
    try:
        if encoding == "hex":
            return bytes.fromhex(data)
        return base64.b64decode(data, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise SchemeError(f"stored password is not valid {encoding}: {exc}") from exc
