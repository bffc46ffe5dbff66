"""Listening addresses of the smtpd services, and binding them.

Owns: turning a master.cf inet service plus ``inet_interfaces``/``inet_protocols`` into
endpoints (``all`` → 0.0.0.0 and, where IPv6 exists, :: with IPV6_V6ONLY; ``loopback-only`` →
127.0.0.1 and ::1), and binding one listening socket with Postfix's error text.
Must not import: server.supervisor, cli; it reads only the Service and Params it is given.
Follows: postconf(5) inet_interfaces / inet_protocols, master(5) ``[host:]port`` service names,
inet_listen(3) (SO_REUSEADDR, ``bind ADDR port N: ERROR``; backlog as master's 128).
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from postillion.errors import ConfigError

if TYPE_CHECKING:
    from postillion.config import Service

BACKLOG = 128  # inet_listen() backlog in master


@dataclass(frozen=True, order=True)
class Endpoint:
    host: str
    port: int
    family: int = socket.AF_INET

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.family == socket.AF_INET6 else f"{self.host}:{self.port}"


def is_smtpd_service(service: Service) -> bool:
    return service.type == "inet" and os.path.basename(service.command) == "smtpd"


def is_qmgr_service(service: Service) -> bool:
    """master.cf's ``qmgr unix n - n 300 1 qmgr``: one queue manager process, no listener."""
    return os.path.basename(service.command) == "qmgr"


def _protocols(params: Any) -> set[int]:
    names = {p.lower() for p in params.get_list("inet_protocols")} or {"all"}
    families: set[int] = set()
    if names & {"all", "ipv4"}:
        families.add(socket.AF_INET)
    if names & {"all", "ipv6"} and socket.has_ipv6:
        families.add(socket.AF_INET6)
    return families


def endpoints_for(service: Service, params: Any) -> list[tuple[Endpoint, bool]]:
    """The (endpoint, optional) pairs a service listens on.  Optional ones (IPv6 picked by a
    keyword such as ``all``) are skipped when the host has no IPv6."""
    port = service.listen_port
    families = _protocols(params)
    host = service.listen_host
    hosts = [host] if host else params.get_list("inet_interfaces") or ["all"]
    result: list[tuple[Endpoint, bool]] = []
    for h in hosts:
        h = h[1:-1] if h.startswith("[") and h.endswith("]") else h
        keyword = h.lower()
        if keyword in ("all", "loopback-only"):
            pairs = ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")) if keyword == "all" \
                else ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
            result += [(Endpoint(a, port, f), f == socket.AF_INET6) for f, a in pairs if f in families]
            continue
        try:
            infos = socket.getaddrinfo(h, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise ConfigError(f"host/address lookup of {h} failed: {exc.strerror}",
                              path=getattr(service, "path", None), lineno=service.lineno,
                              name=service.name, fix="use a numeric address") from None
        numeric = _is_numeric(h)
        for family, _type, _proto, _canon, sockaddr in infos:
            if family in families:
                ep = Endpoint(str(sockaddr[0]), port, family)
                if all(ep != e for e, _ in result):
                    result.append((ep, family == socket.AF_INET6 and not numeric))
    return result


def _is_numeric(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    return False


def bind_endpoint(endpoint: Endpoint) -> socket.socket:
    """A listening, non-blocking socket on ``endpoint`` (OSError as the kernel says)."""
    sock = socket.socket(endpoint.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if endpoint.family == socket.AF_INET6:
            # Without it "::" would also take the IPv4 port that "0.0.0.0" binds.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((endpoint.host, endpoint.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


_BIND_FIXES = {
    errno.EADDRINUSE: "another program (or another postillion instance) listens there; "
                      "stop it or change the service's port in master.cf",
    errno.EACCES: "ports below 1024 need root; start postillion as root or use a higher port",
    errno.EADDRNOTAVAIL: "the address is not configured on this host; fix inet_interfaces "
                         "or the service name",
}


def bind_failure(service: Service, endpoint: Endpoint, exc: OSError) -> ConfigError:
    return ConfigError(f"bind {endpoint.host} port {endpoint.port}: {exc.strerror}",
                       path=getattr(service, "path", None), lineno=service.lineno,
                       name=service.name, fix=_BIND_FIXES.get(exc.errno or 0))
