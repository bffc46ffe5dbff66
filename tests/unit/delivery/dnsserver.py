"""A small authoritative DNS server for tests: asyncio UDP on 127.0.0.1, zones from a dict.

Owns: answering MX/A/AAAA queries from ``zones`` so delivery tests can exercise MX order, the
implicit MX, null MX, NXDOMAIN, NODATA and SERVFAIL without the outside world.
Must not import: postillion (it stands in for the Internet).
Follows: RFC 1035 (message format, via dnspython), RFC 7505 (null MX is ``(0, ".")``).

    zones = {
        "example.test": {"MX": [(10, "mx1.example.test")]},
        "mx1.example.test": {"A": ["127.0.0.1"]},
        "broken.test": "SERVFAIL",
    }
    async with serve_dns(zones) as server:     # server.address == "127.0.0.1:PORT"
        ...

A name missing from ``zones`` is NXDOMAIN; a name present without the asked type is NODATA.
``server.queries`` records (name, type) in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Zones = dict[str, Any]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.server.answer(data), addr)


class DnsServer:
    def __init__(self, zones: Zones) -> None:
        self.zones = {k.lower().rstrip("."): v for k, v in zones.items()}
        self.queries: list[tuple[str, str]] = []
        self.address = ""

    def answer(self, data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rtype))
        zone = self.zones.get(name)
        if zone is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif zone == "SERVFAIL":
            response.set_rcode(dns.rcode.SERVFAIL)
        else:
            values = zone.get(rtype, [])
            if values:
                if rtype == "MX":
                    texts = [f"{pref} {_fqdn(host)}" for pref, host in values]
                else:
                    texts = [str(v) for v in values]
                rrset = dns.rrset.from_text_list(question.name, 300, dns.rdataclass.IN, rtype, texts)
                response.answer.append(rrset)
        return response.to_wire()


def _fqdn(host: str) -> str:
    return "." if host in (".", "") else host.rstrip(".") + "."


@contextlib.asynccontextmanager
async def serve_dns(zones: Zones) -> AsyncIterator[DnsServer]:
    server = DnsServer(zones)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _Protocol(server), local_addr=("127.0.0.1", 0))
    host, port = transport.get_extra_info("sockname")[:2]
    server.address = f"{host}:{port}"
    try:
        yield server
    finally:
        transport.close()
