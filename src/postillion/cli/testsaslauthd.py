"""``postillion testsaslauthd -u USER -p PASS [-r REALM] [-s SERVICE] [-f SOCKET] [-R N]``.

Owns: testsaslauthd(8)'s command line, output and exit status, byte for byte: per attempt
``N: `` then ``OK "Success."`` (exit 0) or ``NO "authentication failed"`` (exit 255) on stdout;
transport failures on stderr (``connect() : <strerror>``, ``write failed``, ``size read
failed``, ``bad response from saslauthd``, ``read failed``) with exit 255.
Must not import: server, config.
Follows: cyrus-sasl 2.1.28 saslauthd/testsaslauthd.c; the request encoding is the mux
client's (``sasl.saslauthd.encode_request``).  As the original, it sends the user name as given
(no realm split) and defaults to service ``imap``.
"""

from __future__ import annotations

import getopt
import os
import socket
import struct
import sys
from typing import TextIO

from postillion.sasl.saslauthd import DEFAULT_SOCKET, RESPONSE_LIMIT, encode_request

DEFAULT_SERVICE = "imap"  # testsaslauthd.c: if(!service) service = "imap"
FAILED = 255  # the C program returns -1 from main


def usage(prog: str) -> str:
    return (f"{prog}: usage: {prog} -u username -p password\n"
            "              [-r realm] [-s servicename]\n"
            "              [-f socket path] [-R repeatnum]\n")


def main(argv: list[str], *, prog: str = "testsaslauthd", stdout: TextIO | None = None,
         stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        pairs, _rest = getopt.getopt(argv, "p:u:r:s:f:R:")
    except getopt.GetoptError as exc:
        err.write(f"{prog}: {exc.msg}\n{usage(prog)}")
        return 1
    opts = dict(pairs)
    if "-u" not in opts or "-p" not in opts:
        err.write(usage(prog))
        return 1
    try:
        repeat = int(opts.get("-R", "0"))
    except ValueError:
        repeat = 0  # atoi()
    result = FAILED
    for i in range(repeat or 1):
        out.write(f"{i}: ")  # not flushed: as in C, it may follow a stderr line on a tty
        result = verify(opts.get("-f", DEFAULT_SOCKET), opts["-u"], opts["-p"],
                        opts.get("-s", DEFAULT_SERVICE), opts.get("-r", ""), out, err)
    out.flush()
    return result


def verify(path: str, user: str, password: str, service: str, realm: str, out: TextIO,
           err: TextIO) -> int:
    """One attempt, as saslauthd_verify_password() in testsaslauthd.c: 0 or FAILED."""
    try:
        request = encode_request(user, password, service, realm)
    except ValueError:
        err.write("write failed\n")
        return FAILED
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError as exc:
            err.write(f"connect() : {exc.strerror or os.strerror(exc.errno or 0)}\n")
            return FAILED
        try:
            sock.sendall(request)
        except OSError:
            err.write("write failed\n")
            return FAILED
        header = _read(sock, 2)
        if len(header) < 2:
            err.write("size read failed\n")
            return FAILED
        (count,) = struct.unpack("!H", header)
        if count < 2:  # MUST have at least "OK" or "NO"
            err.write("bad response from saslauthd\n")
            return FAILED
        count = min(count, RESPONSE_LIMIT + 1)
        body = _read(sock, count)
        if len(body) < count:
            err.write("read failed\n")
            return FAILED
    if body.startswith(b"OK"):
        out.write('OK "Success."\n')
        return 0
    out.write('NO "authentication failed"\n')
    return FAILED


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        try:
            chunk = sock.recv(n - len(data))
        except InterruptedError:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data
