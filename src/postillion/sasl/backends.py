"""Password checks for our saslauthd: ``pam``, ``shadow``, ``userdb`` and ``rimap``.

Owns: one blocking ``authenticate(login, password, service, realm) -> str`` per mechanism,
answering in saslauthd's words (``"OK"`` or ``"NO <reason>"``, the reason texts of Cyrus
saslauthd 2.1.28), and parsing each mechanism's ``-O`` option.
Must not import: asyncio, config, server, cli (the server runs these in its thread pool; the
command line turns ``-O`` and the postillion configuration into constructor arguments).
Follows: cyrus-sasl 2.1.28 saslauthd/auth_pam.c, auth_shadow.c, auth_rimap.c; RFC 9051 §6.2.3
(IMAP LOGIN) and §4.3 (quoted strings and literals); shadow(5); crypt(5).

Every call is blocking and thread-safe: PAM and crypt go through ctypes, which releases the GIL,
so a slow PAM stack (pam_faildelay) holds one pool thread and nothing else.  Fields arrive as
bytes; ``login``/``password`` are ``str`` decoded with ``surrogateescape`` so the exact bytes can
be handed back to C.

crypt: the stdlib ``crypt`` and ``spwd`` modules are deprecated and removed in Python 3.13
(PEP 594), so shadow uses ``sasl.unixcrypt`` (crypt_rn from libxcrypt: yescrypt ``$y$``, sha512
``$6$``, ...) and ``getspnam_r`` from libc through ctypes, which work on 3.11 through 3.13.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hmac
import os
import pwd
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from postillion.errors import AuthBackendError
from postillion.sasl import unixcrypt

MECHANISMS = ("pam", "shadow", "userdb", "rimap")


class Backend(Protocol):
    """One saslauthd mechanism.  ``authenticate`` blocks; AuthBackendError = internal failure."""

    name: str

    def authenticate(self, login: str, password: str, service: str, realm: str) -> str: ...


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# --- pam ------------------------------------------------------------------------------------

PAM_NEW_AUTHTOK_REQD = 12  # <security/_pam_types.h>: only pam_acct_mgmt returns these two
PAM_ACCT_EXPIRED = 13


class PamBackend:
    """``pam_start(service, login)``, ``pam_authenticate``, ``pam_acct_mgmt`` (auth_pam.c).

    The PAM service is the request's service field (``smtp`` from Postfix, ``imap`` from
    testsaslauthd).  libpam itself falls back to ``/etc/pam.d/other`` when there is no file for
    that service, exactly as for Cyrus's saslauthd, which calls the same pam_start().
    """

    name = "pam"

    def __init__(self) -> None:
        import pam  # type: ignore[import-untyped]  # python-pam; imported here so the other mechanisms work without it

        self._pam = pam

    def authenticate(self, login: str, password: str, service: str, realm: str) -> str:
        handle = self._pam.PamAuthenticator()  # one per call: an instance is not thread-safe
        # resetcreds=False: Cyrus never calls pam_setcred, and some modules fail it for
        # accounts without a session (it is not a password check).
        ok = handle.authenticate(_raw(login), _raw(password), service=_raw(service),
                                 resetcreds=False)
        if ok:
            return "OK"
        if str(handle.reason).startswith("pam_start() failed"):
            return "NO PAM start error"
        if handle.code in (PAM_NEW_AUTHTOK_REQD, PAM_ACCT_EXPIRED):
            return "NO PAM acct error"
        return "NO PAM auth error"


# --- shadow ---------------------------------------------------------------------------------

class _Spwd(ctypes.Structure):
    _fields_ = [  # struct spwd, <shadow.h>
        ("sp_namp", ctypes.c_char_p),
        ("sp_pwdp", ctypes.c_char_p),
        ("sp_lstchg", ctypes.c_long),
        ("sp_min", ctypes.c_long),
        ("sp_max", ctypes.c_long),
        ("sp_warn", ctypes.c_long),
        ("sp_inact", ctypes.c_long),
        ("sp_expire", ctypes.c_long),
        ("sp_flag", ctypes.c_ulong),
    ]


@dataclass(frozen=True)
class ShadowEntry:
    password_hash: bytes
    last_change: int  # days since the epoch, -1 = unset
    max_days: int
    expire: int


class _Libs:
    """libc's getspnam_r, loaded once (crypt is ``sasl.unixcrypt``)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.getspnam_r = libc.getspnam_r
        self.getspnam_r.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Spwd), ctypes.c_char_p,
                                    ctypes.c_size_t, ctypes.POINTER(ctypes.POINTER(_Spwd))]
        self.getspnam_r.restype = ctypes.c_int


_libs: _Libs | None = None


def _lib() -> _Libs:
    global _libs
    if _libs is None:
        _libs = _Libs()
    return _libs




def getspnam(login: bytes) -> ShadowEntry | None:
    """getspnam_r(3): the shadow entry, None when there is none; OSError on lookup failure."""
    size = 1024
    while True:
        entry = _Spwd()
        buf = ctypes.create_string_buffer(size)
        result = ctypes.POINTER(_Spwd)()
        rc = _lib().getspnam_r(login, ctypes.byref(entry), buf, size, ctypes.byref(result))
        if rc == errno.ERANGE and size < 1 << 20:
            size *= 4
            continue
        if rc not in (0, errno.ENOENT):
            raise OSError(rc, os.strerror(rc))
        if not result:
            return None
        return ShadowEntry(entry.sp_pwdp or b"", entry.sp_lstchg, entry.sp_max, entry.sp_expire)


class ShadowBackend:
    """getpwnam + getspnam + crypt, then the shadow(5) expiry fields (auth_shadow.c).  Root."""

    name = "shadow"

    def __init__(self, *, now: Callable[[], float] = time.time) -> None:
        self._time = now
        _lib()  # fail at start-up, not at the first login, if libc or libcrypt is missing
        unixcrypt.crypt_bytes(b"", b"$6$probe$")

    def authenticate(self, login: str, password: str, service: str, realm: str) -> str:
        try:
            pwd.getpwnam(login)
        except KeyError:
            return "NO Invalid username"
        try:
            sp = getspnam(_raw(login))
        except OSError as exc:
            return f"NO Username shadow lookup failure: {exc.strerror}"
        if sp is None:
            return "NO Invalid shadow username"
        if sp.password_hash == b"*NP*":
            return "NO Insufficient permission to access NIS authentication database (saslauthd)"
        hashed = unixcrypt.crypt_bytes(_raw(password), sp.password_hash)
        if hashed is None or not hmac.compare_digest(hashed, sp.password_hash):
            return "NO Incorrect password"
        today = int(self._time()) // 86400
        if sp.expire != -1 and today > sp.expire:
            return "NO Account expired"
        if sp.last_change != -1 and sp.max_days != -1 and sp.last_change + sp.max_days < today:
            return "NO Password expired"
        return "OK"


# --- userdb ---------------------------------------------------------------------------------


class UserDBBackend:
    """postillion's own user store (``postillion_user_database``), read-only.

    Failures answer a bare ``NO``, as Cyrus's sasldb (the nearest Cyrus mechanism) does:
    unknown user and wrong password look the same, and cost the same argon2 time.
    """

    name = "userdb"

    def __init__(self, path: Path | str) -> None:
        from postillion.sasl.userdb import UserDB, UserDBError

        self._error = UserDBError
        self.db = UserDB(path, readonly=True)

    def authenticate(self, login: str, password: str, service: str, realm: str) -> str:
        try:
            ok = self.db.verify(login, password)
        except UnicodeEncodeError:
            return "NO"  # not UTF-8: no such name can be stored
        except self._error as exc:
            raise AuthBackendError(str(exc)) from exc
        return "OK" if ok else "NO"


# --- rimap ----------------------------------------------------------------------------------

RIMAP_TAG = b"saslauthd"  # auth_rimap.c TAG
NETWORK_IO_TIMEOUT = 30.0  # auth_rimap.c NETWORK_IO_TIMEOUT (seconds)
# Ours: all of one check (connect, banner, LOGIN, answer) must end within this.  Cyrus arms its
# alarm per read(), which ends with the first bytes, so a server dribbling a byte at a time could
# hold a worker for ever; we read whole lines, so we bound them as a whole.
RIMAP_DEADLINE = 30.0
RESP_IERROR = "NO [ALERT] saslauthd internal error"
RESP_SYNC = "NO [ALERT] error synchronizing with remote authentication server"  # banner read failed
RESP_UNAVAILABLE = "NO [ALERT] The remote authentication server is currently unavailable"
RESP_UNEXPECTED = "NO [ALERT] Unexpected response from remote authentication server"


def parse_rimap_option(option: str) -> tuple[str, int]:
    """``-O host``, ``host/port`` (Cyrus), ``host:port`` or ``[v6]:port``; port may be a name."""
    host, port = option, "imap"
    if "/" in option:
        host, _, port = option.partition("/")
    elif option.startswith("["):
        host, _, rest = option[1:].partition("]")
        if rest.startswith(":"):
            port = rest[1:]
    elif option.count(":") == 1:
        host, _, port = option.partition(":")
    if not host:
        raise ValueError(f"rimap: no host name in -O {option!r}")
    if port.isdigit():
        return host, int(port)
    try:
        return host, socket.getservbyname(port, "tcp")
    except OSError:
        raise ValueError(f"rimap: unknown service {port}/tcp") from None


def imap_string(value: bytes) -> tuple[bytes, bool]:
    """An IMAP astring for LOGIN: quoted when possible, else a literal; (bytes, is_literal)."""
    if all(0x20 <= b < 0x7F for b in value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"', False
    return b"{%d}\r\n" % len(value), True


class _DeadlineSocket:
    """Line reads and writes on the rimap connection: each under the per-I/O ``timeout``, all
    of them together before ``end`` (time.monotonic()); TimeoutError when either runs out."""

    def __init__(self, sock: socket.socket, end: float, timeout: float) -> None:
        self.sock, self.end, self.timeout = sock, end, timeout
        self._buf = b""
        self._eof = False

    def _arm(self) -> None:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("rimap check deadline passed")
        self.sock.settimeout(min(self.timeout, left))

    def readline(self, limit: int) -> bytes:
        """Up to and including LF, at most ``limit`` bytes; b"" at EOF (as file.readline)."""
        while True:
            lf = self._buf.find(b"\n", 0, limit)
            if lf >= 0:
                cut = lf + 1
            elif len(self._buf) >= limit or self._eof:
                cut = min(limit, len(self._buf))
            else:
                self._arm()
                chunk = self.sock.recv(4096)
                self._eof = not chunk
                self._buf += chunk
                continue
            line, self._buf = self._buf[:cut], self._buf[cut:]
            return line

    def sendall(self, data: bytes) -> None:
        self._arm()
        self.sock.sendall(data)  # the timeout bounds the whole sendall (Python >= 3.5)


class RimapBackend:
    """``LOGIN`` against a remote IMAP server (auth_rimap.c): its ``OK``/``NO`` is the answer."""

    name = "rimap"

    def __init__(self, host: str, port: int, *, timeout: float = NETWORK_IO_TIMEOUT,
                 deadline: float = RIMAP_DEADLINE) -> None:
        self.host, self.port, self.timeout, self.deadline = host, port, timeout, deadline

    def authenticate(self, login: str, password: str, service: str, realm: str) -> str:
        end = time.monotonic() + self.deadline
        try:
            sock = socket.create_connection((self.host, self.port),
                                            timeout=min(self.timeout, self.deadline))
        except ConnectionRefusedError:
            return "NO [ALERT] Remote authentication server refused connection request"
        except TimeoutError:
            return "NO [ALERT] Timed out while trying to contact remote authentication server"
        except OSError as exc:
            if exc.errno == errno.ENETUNREACH:
                return "NO [ALERT] Remote authentication server is on an unreachable network"
            return "NO [ALERT] Couldn't contact remote authentication server"
        with sock:
            conn = _DeadlineSocket(sock, end, self.timeout)
            try:
                banner = conn.readline(1000)
            except OSError:  # includes timeouts; auth_rimap.c's text for a failed banner read
                return RESP_SYNC
            try:
                return self._dialogue(conn, banner, _raw(login), _raw(password))
            except OSError:  # includes timeouts and the deadline
                return RESP_IERROR

    def _dialogue(self, conn: _DeadlineSocket, banner: bytes, login: bytes,
                  password: bytes) -> str:
        if banner.startswith((b"* NO", b"* BYE")):
            return RESP_UNAVAILABLE
        if not banner.startswith(b"* OK"):
            return RESP_UNEXPECTED
        pending = RIMAP_TAG + b" LOGIN "
        for i, value in enumerate((login, password)):
            text, literal = imap_string(value)
            pending += text
            if literal:
                conn.sendall(pending)
                reply = conn.readline(1000)
                if not reply.startswith(b"+"):
                    return RESP_UNEXPECTED
                pending = value
            if i == 0:
                pending += b" "
        conn.sendall(pending + b"\r\n")
        while True:
            line = conn.readline(8192)
            if not line:
                return RESP_IERROR
            if line.startswith(b"* "):
                continue  # untagged data (CAPABILITY ...) before the tagged answer
            if line.startswith(RIMAP_TAG + b" OK"):
                outcome = "OK remote authentication successful"
            elif line.startswith(RIMAP_TAG + b" NO"):
                outcome = "NO remote server rejected your credentials"
            else:
                return RESP_UNEXPECTED
            try:
                conn.sendall(RIMAP_TAG + b" LOGOUT\r\n")
            except OSError:
                pass
            return outcome


def make_backend(mech: str, option: str | None, *, userdb_path: Path | None = None) -> Backend:
    """The backend for ``-a mech -O option``; ValueError with an operator's message."""
    if mech == "pam":
        return PamBackend()
    if mech == "shadow":
        return ShadowBackend()
    if mech == "userdb":
        path = Path(option) if option else userdb_path
        if path is None:
            raise ValueError("userdb: no user database: give -O PATH or postillion -c CONFIG_DIR")
        return UserDBBackend(path)
    if mech == "rimap":
        if not option:
            raise ValueError("rimap: no hostname specified (use -O host[/port])")
        return RimapBackend(*parse_rimap_option(option))
    raise ValueError(f"unknown authentication mechanism: {mech}")
