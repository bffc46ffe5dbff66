"""Async client for the saslauthd "mux" socket protocol.

Owns: the wire format (counted strings), realm splitting as libsasl does it, and turning socket
errors into AuthBackendError details an operator can act on.
Must not import: config, server, exchange (the verifier in ``sasl.verifiers`` wraps this).
Follows: cyrus-sasl 2.1.28 lib/checkpw.c (saslauthd_verify_password) and saslauthd/ipc_unix.c;
testsaslauthd(8).

One request per connection: four counted strings (2-byte big-endian length, then the bytes, no
NUL): login, password, service, realm.  The answer is one counted string starting with ``OK`` or
``NO`` (anything other than ``OK`` is a failure, as in libsasl), then saslauthd closes.
"""

from __future__ import annotations

import asyncio
import errno
import grp
import os
import pwd
import struct
from pathlib import Path

from postillion.errors import AuthBackendError

DEFAULT_SOCKET = "/var/run/saslauthd/mux"  # Debian's PATH_SASLAUTHD_RUNDIR "/mux"
DEFAULT_TIMEOUT = 60.0  # PAM may sleep seconds after a failure (pam_faildelay)
RESPONSE_LIMIT = 1023  # libsasl reads at most this much of the answer
_FIELD_MAX = 0xFFFF


def split_realm(login: str, default_realm: str) -> tuple[str, str]:
    """``user@realm`` → (user, realm), split at the LAST ``@`` (libsasl); else the default realm."""
    user, at, realm = login.rpartition("@")
    if not at:
        return login, default_realm
    return user, realm


def encode_request(login: str, password: str, service: str, realm: str) -> bytes:
    """The request bytes; ValueError if a field does not fit a 16-bit count."""
    out = bytearray()
    for value in (login, password, service, realm):
        raw = value.encode("utf-8")
        if len(raw) > _FIELD_MAX:
            raise ValueError("saslauthd request field longer than 65535 bytes")
        out += struct.pack("!H", len(raw)) + raw
    return bytes(out)


async def saslauthd_check(
    socket_path: str | Path,
    login: str,
    password: str,
    service: str,
    realm: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[bool, str]:
    """Ask saslauthd; returns (ok, answer text such as ``"OK"`` or ``"NO authentication failed"``).

    ``login`` and ``realm`` are sent as given (call split_realm first).  Raises AuthBackendError
    when saslauthd cannot be asked or gives no well-formed answer.
    """
    path = str(socket_path)
    try:
        request = encode_request(login, password, service, realm)
    except ValueError:
        # saslauthd itself refuses fields over 256 bytes with "NO"; answer the same way.
        return False, "NO request field too long"
    try:
        async with asyncio.timeout(timeout):
            return await _exchange(path, request)
    except TimeoutError:
        raise AuthBackendError(
            f"saslauthd server {path} did not answer within {timeout:g} seconds"
        ) from None


async def _exchange(path: str, request: bytes) -> tuple[bool, str]:
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    except OSError as exc:
        raise AuthBackendError(connect_error_detail(path, exc)) from exc
    try:
        writer.write(request)
        await writer.drain()
        header = await reader.readexactly(2)
        (count,) = struct.unpack("!H", header)
        body = await reader.readexactly(count)
    except asyncio.IncompleteReadError as exc:
        raise AuthBackendError(
            f"bad response from saslauthd server {path}: connection closed after "
            f"{len(exc.partial)} of {exc.expected} bytes"
        ) from None
    except OSError as exc:
        raise AuthBackendError(
            f"cannot talk to saslauthd server {path}: {exc.strerror or exc}"
        ) from exc
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    text = body[:RESPONSE_LIMIT].decode("utf-8", "replace")
    if len(text) < 2:
        raise AuthBackendError(
            f"bad response from saslauthd server {path}: {text!r} (expected OK or NO)"
        )
    return text.startswith("OK"), text


def connect_error_detail(path: str, exc: OSError) -> str:
    """The log detail for a failed connect: path, errno text and the likely fix."""
    head = f"cannot connect to saslauthd server {path}: {exc.strerror or exc}"
    if exc.errno == errno.ENOENT:
        return f"{head} (is saslauthd running? check -m and saslauthd_path)"
    if exc.errno == errno.EACCES:
        uid = os.geteuid()
        return (
            f"{head} (the user postillion runs as, uid {uid}, must be able to reach the "
            f"socket: e.g. adduser {_user_name(uid)} {_socket_group(path)})"
        )
    if exc.errno == errno.ECONNREFUSED:
        return f"{head} (a socket file is there but nothing listens: is saslauthd running?)"
    if exc.errno == errno.ENOTSOCK:
        return f"{head} (saslauthd_path must name the socket itself, e.g. {DEFAULT_SOCKET})"
    return head


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _socket_group(path: str) -> str:
    """The group owning the socket directory (Debian: ``sasl``), which the user must join."""
    try:
        gid = os.stat(os.path.dirname(path) or ".").st_gid
        # A root-group directory has to be opened up first; Debian's convention is root:sasl 0710.
        return grp.getgrgid(gid).gr_name if gid != 0 else "sasl"
    except (OSError, KeyError):
        return "sasl"
