"""crypt(3) through the system's libxcrypt: yescrypt, sha512-crypt, sha256-crypt, bcrypt, md5-crypt.

Owns: calling ``crypt_rn`` (the reentrant form, so threads may verify at once) and a
constant-time comparison of the result with a stored hash.
Must not import: config, server, asyncio.
Follows: crypt(5) and crypt(3) of libxcrypt (Debian 12's libcrypt1), which understands every
prefix a Linux /etc/shadow or a Dovecot ``{*-CRYPT}`` password uses: ``$y$`` yescrypt, ``$6$``
sha512-crypt, ``$5$`` sha256-crypt, ``$2b$``/``$2y$`` bcrypt, ``$1$`` md5-crypt, DES.

Why ctypes and not the ``crypt`` module: that module is deprecated in 3.11 and gone in 3.13,
while libcrypt.so.1 is on every glibc system (PAM itself links it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hmac
from functools import cache

# sizeof(struct crypt_data) in libxcrypt; crypt_rn is told the size, so a larger buffer is safe.
_DATA_SIZE = 32768


class CryptUnavailable(RuntimeError):
    """libcrypt could not be loaded (not a glibc/libxcrypt system)."""


@cache
def _crypt_rn() -> ctypes._CFuncPtr:  # type: ignore[name-defined]
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
        func = lib.crypt_rn
    except (OSError, AttributeError) as exc:
        raise CryptUnavailable(f"cannot use crypt_rn from {name}: {exc}") from exc
    func.restype = ctypes.c_char_p
    func.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    return func


def crypt_bytes(phrase: bytes, setting: bytes) -> bytes | None:
    """``crypt(phrase, setting)`` on raw bytes (a shadow entry, a password as the client sent
    it); None when libxcrypt rejects the setting: it answers with a ``*0``/``*1`` failure token
    for unknown prefixes and locked (``*``, ``!``) hashes, never with a hash."""
    if b"\0" in phrase:
        return None
    buf = ctypes.create_string_buffer(_DATA_SIZE)  # zeroed, as crypt_rn wants it
    out = _crypt_rn()(phrase, setting, buf, _DATA_SIZE)
    if out is None or out.startswith(b"*"):
        return None
    return bytes(out)


def crypt(phrase: str, setting: str) -> str | None:
    """``crypt(phrase, setting)`` for text; see crypt_bytes."""
    out = crypt_bytes(phrase.encode("utf-8"), setting.encode("ascii", "replace"))
    return None if out is None else out.decode("ascii")


def verify(phrase: str, stored: str) -> bool:
    """True when ``phrase`` hashes to ``stored`` (a full crypt string, setting included)."""
    if not stored or stored[0] in "*!":
        return False  # locked or disabled account, as shadow(5) says
    result = crypt(phrase, stored)
    return result is not None and hmac.compare_digest(result, stored)
