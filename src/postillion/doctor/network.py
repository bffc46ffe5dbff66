"""Who listens on a TCP port: /proc/net/tcp{,6} for the socket, /proc/*/fd for its owners.

Owns: ``listeners(host, port)`` (the listening sockets that accept connections for host:port,
wildcards included), ``socket_owners(inode)`` (pids holding it, with their command lines) and
``check_port``, the doctor step that names the owner or says nothing listens.
Must not import: server, cli (plain values in, a Step out).
Follows: proc(5) (/proc/net/tcp: little-endian hex addresses, state 0A = LISTEN, inode column;
/proc/PID/fd links ``socket:[INODE]``).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from postillion.doctor.report import Step, failed, passed

PROC = Path("/proc")
TCP_LISTEN = "0A"  # include/net/tcp_states.h TCP_LISTEN


@dataclass(frozen=True, slots=True)
class Listener:
    address: str  # "127.0.0.1", "0.0.0.0", "::"
    port: int
    inode: int


@dataclass(frozen=True, slots=True)
class Owner:
    pid: int
    command: str  # the command line, arguments joined by spaces


def _decode_address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    # The kernel prints each 32-bit word in host order (little-endian here).
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def all_listeners(proc: Path = PROC) -> list[Listener]:
    found: list[Listener] = []
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != TCP_LISTEN:
                continue
            addr, _, port = fields[1].partition(":")
            found.append(Listener(_decode_address(addr), int(port, 16), int(fields[9])))
    return found


def listeners(host: str, port: int, proc: Path = PROC) -> list[Listener]:
    """Listening sockets that take connections to host:port (exact address or a wildcard)."""
    want = ipaddress.ip_address(host)
    out = []
    for lst in all_listeners(proc):
        if lst.port != port:
            continue
        addr = ipaddress.ip_address(lst.address)
        mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
        if addr == want or mapped == want or addr.is_unspecified:
            out.append(lst)
    return out


def command_line(pid: int, proc: Path = PROC) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a) or "?"


def socket_owners(inode: int, proc: Path = PROC) -> tuple[list[Owner], bool]:
    """Processes holding socket ``inode``, and whether some /proc/PID/fd could not be read
    (as a normal user, other users' descriptors are hidden)."""
    target = f"socket:[{inode}]"
    owners: list[Owner] = []
    hidden = False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except PermissionError:
            hidden = True
            continue
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(entry / "fd" / fd) == target:
                    owners.append(Owner(int(entry.name), command_line(int(entry.name), proc)))
                    break
            except OSError:
                continue
    owners.sort(key=lambda o: o.pid)
    return owners, hidden


def resolve_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return socket.gethostbyname(host)


def check_port(host: str, port: int, *, config_dir: Path, supervisor_pid: int | None) -> Step:
    """``port HOST:PORT``: something listens, and it is this postillion."""
    name = f"port {host}:{port}"
    try:
        found = listeners(resolve_host(host), port)
    except (OSError, ValueError) as exc:
        return failed(name, f"cannot resolve {host}: {exc}", "give --host as an IP address")
    if not found:
        return failed(name, f"nothing listens on {host}:{port}",
                      f"start postillion: postillion -c {config_dir} start")
    owners, hidden = socket_owners(found[0].inode)
    if not owners:
        why = "run the doctor as root to see its owner" if hidden else "its owner is not visible"
        return passed(name, f"listening; {why}")
    pids = {o.pid for o in owners}
    if supervisor_pid is not None and supervisor_pid in pids:
        return passed(name, f"postillion, pid {supervisor_pid}")
    first = owners[0]
    if "postillion" in first.command and str(config_dir) in first.command:
        return passed(name, f"postillion, pid {first.pid}")
    if "postillion" in first.command:
        return failed(name, f"{host}:{port} is held by another postillion: pid {first.pid} ({first.command})",
                      f"stop it (kill {first.pid}), or give this service another port in "
                      f"{config_dir / 'master.cf'}")
    return failed(name, f"{host}:{port} is held by another program: pid {first.pid} ({first.command})",
                  f"stop that program (kill {first.pid}), or give this service another port in "
                  f"{config_dir / 'master.cf'}")
