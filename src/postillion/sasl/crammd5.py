"""CRAM-MD5 (RFC 2195), server side, from Dovecot-style stored HMAC-MD5 contexts.

Owns: the CRAM-MD5 challenge and response check, and the stored secret: the two MD5 states
after HMAC-MD5 has absorbed the key XOR opad / ipad blocks (Dovecot's ``{CRAM-MD5}`` scheme,
64 hex digits: outer state then inner state, each as four little-endian 32-bit words).  The
secret is password-equivalent for CRAM-MD5 but does not reveal the password itself.
Must not import: asyncio, sockets, the user database (the session fetches the secret when the
mechanism asks for it with ``NeedSecret``).
Follows: RFC 2195, RFC 2104 (HMAC), RFC 1321 (MD5), Dovecot hmac-cram-md5.c (stored format),
Cyrus SASL 2.1.28 cram.c (challenge form ``<random.time@host>``, no initial response).

hashlib cannot start MD5 from a saved state, so the compression function is here in Python;
it runs on a few 64-byte blocks per login.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import struct
import time

from postillion.sasl.mechanisms import (
    AUTH_FAILURE,
    BAD_PROTOCOL,
    Authenticated,
    Failed,
    NeedMore,
    NeedSecret,
    Step,
)

SCHEME = "CRAM-MD5"
SECRET_SIZE = 32  # bytes: outer + inner MD5 state

_S = [7, 12, 17, 22] * 4 + [5, 9, 14, 20] * 4 + [4, 11, 16, 23] * 4 + [6, 10, 15, 21] * 4
_K = [int(abs(math.sin(i + 1)) * 2**32) & 0xFFFFFFFF for i in range(64)]
_IV = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)


def _rotl(x: int, c: int) -> int:
    return ((x << c) | (x >> (32 - c))) & 0xFFFFFFFF


def _compress(state: tuple[int, int, int, int], block: bytes) -> tuple[int, int, int, int]:
    """One MD5 block (RFC 1321 section 3.4)."""
    m = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f, g = (b & c) | (~b & d), i
        elif i < 32:
            f, g = (d & b) | (~d & c), (5 * i + 1) % 16
        elif i < 48:
            f, g = b ^ c ^ d, (3 * i + 5) % 16
        else:
            f, g = c ^ (b | ~d), (7 * i) % 16
        f = (f + a + _K[i] + m[g]) & 0xFFFFFFFF
        a, d, c = d, c, b
        b = (b + _rotl(f, _S[i])) & 0xFFFFFFFF
    return (
        (state[0] + a) & 0xFFFFFFFF,
        (state[1] + b) & 0xFFFFFFFF,
        (state[2] + c) & 0xFFFFFFFF,
        (state[3] + d) & 0xFFFFFFFF,
    )


def _md5_from(state: tuple[int, int, int, int], data: bytes) -> bytes:
    """MD5 of (one already-absorbed 64-byte block) + ``data``, starting at ``state``."""
    total = 64 + len(data)
    data = data + b"\x80" + b"\0" * ((55 - len(data)) % 64) + struct.pack("<Q", total * 8)
    for i in range(0, len(data), 64):
        state = _compress(state, data[i : i + 64])
    return struct.pack("<4I", *state)


def make_secret(password: str) -> bytes:
    """The stored CRAM-MD5 secret for ``password`` (Dovecot's byte layout, 32 bytes)."""
    key = password.encode("utf-8", "surrogatepass")
    if len(key) > 64:
        key = hashlib.md5(key, usedforsecurity=False).digest()  # RFC 2104: long keys are hashed
    key = key.ljust(64, b"\0")
    outer = _compress(_IV, bytes(k ^ 0x5C for k in key))
    inner = _compress(_IV, bytes(k ^ 0x36 for k in key))
    return struct.pack("<4I", *outer) + struct.pack("<4I", *inner)


def response_digest(secret: bytes, challenge: bytes) -> str:
    """HMAC-MD5(password, challenge) in lowercase hex, computed from the stored secret."""
    if len(secret) != SECRET_SIZE:
        raise ValueError("CRAM-MD5 secret must be 32 bytes")
    outer = struct.unpack("<4I", secret[:16])
    inner = struct.unpack("<4I", secret[16:])
    return _md5_from(outer, _md5_from(inner, challenge)).hex()  # type: ignore[arg-type]


class CramMd5:
    """RFC 2195: challenge ``<random.time@host>``, response ``name SP hex-digest``."""

    name = SCHEME

    def __init__(self, hostname: str = "localhost", *, challenge: bytes | None = None) -> None:
        self._challenge = challenge or (
            f"<{int.from_bytes(os.urandom(8), 'big')}.{int(time.time())}@{hostname}>".encode("ascii")
        )
        self._username: str | None = None
        self._digest = ""
        self._waiting = False

    def start(self, data: bytes | None) -> Step:
        if data:
            return Failed(reason=BAD_PROTOCOL)  # Cyrus: CRAM-MD5 takes no initial response
        return NeedMore(challenge=self._challenge)

    def step(self, data: bytes) -> Step:
        if self._username is not None:
            return Failed(reason=BAD_PROTOCOL, username=self._username)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return Failed(reason=BAD_PROTOCOL)
        name, sep, digest = text.rpartition(" ")
        if not sep or not name or len(digest) != 32 or not all(c in "0123456789abcdef" for c in digest):
            return Failed(reason=BAD_PROTOCOL)
        self._username, self._digest, self._waiting = name, digest, True
        return NeedSecret(authcid=name, authzid="", scheme=SCHEME)

    def with_secret(self, secret: object | None) -> Step:
        if not self._waiting:
            raise RuntimeError("CramMd5.with_secret: no secret was asked for")
        self._waiting = False
        assert self._username is not None
        if not isinstance(secret, bytes) or len(secret) != SECRET_SIZE:
            return Failed(reason=AUTH_FAILURE, username=self._username)
        if not hmac.compare_digest(response_digest(secret, self._challenge), self._digest):
            return Failed(reason=AUTH_FAILURE, username=self._username)
        return Authenticated(authcid=self._username, authzid="")
