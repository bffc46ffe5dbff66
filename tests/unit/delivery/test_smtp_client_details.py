"""The smtp agent's connection cache, 8BITMIME downgrade and IPv6 handling, against a real
SMTP peer (smtppeer.py: postillion's server engine) and a real DNS server (dnsserver.py)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket

import pytest
from dnsserver import serve_dns
from smtppeer import QUEUE_ID, Policy, serve_smtp

from postillion.config import Params
from postillion.delivery import DeliveryRequest, RecipientResult
from postillion.delivery.conncache import ConnectionCache
from postillion.delivery.smtp import SmtpAgent
from postillion.queue.envelope import Envelope, Recipient
from postillion.smtp import MailFrom

QUEUED = f"250 2.0.0 Ok: queued as {QUEUE_ID}"
CONTENT = b"From: a@me.test\r\nSubject: hi\r\n\r\nhello\r\n"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def request(nexthop: str, *rcpts: str, content: bytes = CONTENT, queue_id: str = "4XYZ", **env) -> DeliveryRequest:
    envelope = Envelope(sender="a@me.test", recipients=[Recipient(address=r) for r in rcpts], **env)
    return DeliveryRequest(queue_id=queue_id, envelope=envelope, content=content,
                           recipients=list(enumerate(envelope.recipients)), transport="smtp", nexthop=nexthop)


def agent(dns: str = "", **params: str) -> SmtpAgent:
    base = {"myhostname": "me.test", "postillion_dns_servers": dns, "inet_protocols": "ipv4",
            "smtp_randomize_addresses": "no"}
    return SmtpAgent(Params.from_dict({**base, **params}))


def brief(results: list[RecipientResult]) -> list[tuple]:
    return [(r.status, r.dsn, r.relay, r.text, r.conn_use) for r in results]


# ---------------------------------------------------------------------------- connection reuse
def test_one_connection_carries_several_messages() -> None:
    async def go():
        async with serve_smtp() as peer:
            a = agent()
            out = [await a.deliver(request(f"[127.0.0.1]:{peer.port}", f"u{n}@x.test")) for n in range(3)]
            cached = len(a.cache)
            await a.aclose()
            return peer, out, cached

    peer, out, cached = run(go())
    relay = f"127.0.0.1[127.0.0.1]:{peer.port}"
    assert [brief(r) for r in out] == [[("sent", "2.0.0", relay, QUEUED, n)] for n in (1, 2, 3)]
    assert len(peer.sessions) == 1
    assert len(peer.messages) == 3
    assert cached == 1
    mails = [e.address for e in peer.sessions[0].events if isinstance(e, MailFrom)]
    assert mails == ["a@me.test"] * 3


def test_mx_destination_reused_by_nexthop_without_dns() -> None:
    async def go():
        async with serve_smtp() as peer, serve_dns({
            "x.test": {"MX": [(10, "mx.x.test")]}, "mx.x.test": {"A": ["127.0.0.1"]},
        }) as dns:
            a = agent(dns.address)
            first = await a.deliver(request(f"x.test:{peer.port}", "a@x.test"))
            queries = len(dns.queries)
            second = await a.deliver(request(f"x.test:{peer.port}", "b@x.test"))
            await a.aclose()
            return peer, dns, queries, first, second

    peer, dns, queries, first, second = run(go())
    relay = f"mx.x.test[127.0.0.1]:{peer.port}"
    assert brief(first) == [("sent", "2.0.0", relay, QUEUED, 1)]
    assert brief(second) == [("sent", "2.0.0", relay, QUEUED, 2)]
    assert len(peer.sessions) == 1
    assert len(dns.queries) == queries == 2  # smtp_reuse_nexthop() comes before the DNS lookup


def test_idle_connection_closed_with_quit_after_the_time_limit() -> None:
    async def go():
        async with serve_smtp() as peer:
            a = agent(smtp_connection_cache_time_limit="1s")
            await a.deliver(request(f"[127.0.0.1]:{peer.port}", "u@x.test"))
            assert len(a.cache) == 1
            for _ in range(200):
                if peer.sessions[0].quit:
                    break
                await asyncio.sleep(0.02)
            after = len(a.cache)
            second = await a.deliver(request(f"[127.0.0.1]:{peer.port}", "v@x.test"))
            await a.aclose()
            return peer, after, second

    peer, after, second = run(go())
    assert after == 0
    assert peer.sessions[0].quit
    assert len(peer.sessions) == 2
    assert second[0].conn_use == 1


@pytest.mark.parametrize("policy", [Policy(hangup_after_message=True), Policy(idle_timeout=0.1)],
                         ids=["hangup", "421-timeout"])
def test_dead_cached_connection_is_replaced_silently(policy: Policy) -> None:
    async def go():
        async with serve_smtp(policy) as peer:
            a = agent(smtp_connection_cache_time_limit="10s")
            first = await a.deliver(request(f"[127.0.0.1]:{peer.port}", "u@x.test"))
            await asyncio.sleep(0.3)  # the peer gives up on the idle connection meanwhile
            second = await a.deliver(request(f"[127.0.0.1]:{peer.port}", "v@x.test"))
            await a.aclose()
            return peer, first, second

    peer, first, second = run(go())
    relay = f"127.0.0.1[127.0.0.1]:{peer.port}"
    assert brief(first) == [("sent", "2.0.0", relay, QUEUED, 1)]
    assert brief(second) == [("sent", "2.0.0", relay, QUEUED, 1)]
    assert len(peer.sessions) == 2
    assert len(peer.messages) == 2


def test_reuse_count_limit_and_caching_off() -> None:
    async def go(**params: str):
        async with serve_smtp() as peer:
            a = agent(**params)
            out = [await a.deliver(request(f"[127.0.0.1]:{peer.port}", "u@x.test")) for _ in range(3)]
            await a.aclose()
            return len(peer.sessions), [r[0].conn_use for r in out]

    assert run(go(smtp_connection_reuse_count_limit="1")) == (2, [1, 2, 1])
    assert run(go(smtp_connection_cache_on_demand="no")) == (3, [1, 1, 1])
    assert run(go(smtp_connection_reuse_time_limit="0s")) == (3, [1, 1, 1])


def test_cache_destinations_enable_caching_when_on_demand_is_off() -> None:
    async def go():
        async with serve_smtp() as peer:
            nexthop = f"[127.0.0.1]:{peer.port}"
            a = agent(smtp_connection_cache_on_demand="no", smtp_connection_cache_destinations=nexthop)
            out = [await a.deliver(request(nexthop, "u@x.test")) for _ in range(2)]
            await a.aclose()
            return len(peer.sessions), [r[0].conn_use for r in out]

    assert run(go()) == (1, [1, 2])


def test_sasl_session_not_shared_between_nexthops_written_differently() -> None:
    # "[h]:port" and "h:port" may have different smtp_sasl_password_maps entries: a session
    # authenticated for one must not carry mail for the other, even to the same address.
    async def go():
        async with serve_smtp() as peer:
            a = agent(smtp_sasl_auth_enable="yes")
            hops = [f"[127.0.0.1]:{peer.port}", f"127.0.0.1:{peer.port}", f"[127.0.0.1]:{peer.port}"]
            out = [await a.deliver(request(hop, "u@x.test")) for hop in hops]
            await a.aclose()
            return len(peer.sessions), [r[0].conn_use for r in out]

    assert run(go()) == (2, [1, 1, 2])


def test_rejected_transaction_gets_a_final_rset_and_is_cached() -> None:
    from postillion.replies import R

    async def go():
        policy = Policy(rcpt={"bad@x.test": R(550, "5.1.1", "no")}, discard=frozenset({"pipelining"}))
        async with serve_smtp(policy) as peer:
            a = agent()
            first = await a.deliver(request(f"[127.0.0.1]:{peer.port}", "bad@x.test"))
            second = await a.deliver(request(f"[127.0.0.1]:{peer.port}", "ok@x.test"))
            await a.aclose()
            return peer, first, second

    peer, first, second = run(go())
    assert [(r.status, r.conn_use) for r in first + second] == [("bounced", 1), ("sent", 2)]
    assert len(peer.sessions) == 1


def test_cache_ignores_sessions_of_a_closed_loop() -> None:
    class Dummy:
        closed = 0

        async def aclose(self) -> None:
            Dummy.closed += 1

    cache: ConnectionCache[Dummy] = ConnectionCache(60)

    async def store() -> None:
        cache.store(Dummy(), ("a", "b"))

    asyncio.run(store())

    async def take():
        return cache.take("b"), len(cache)

    assert asyncio.run(take()) == (None, 0)


# ---------------------------------------------------------------------------- 8BITMIME
EIGHT_BIT = ("From: a@me.test\r\nSubject: Grüße\r\nMIME-Version: 1.0\r\n"
             "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
             "Grüße aus Köln, 100 % = schön.\r\n").encode()


def deliver_8bit(policy: Policy, **params: str):
    async def go():
        async with serve_smtp(policy) as peer:
            a = agent(**params)
            res = await a.deliver(request(f"[127.0.0.1]:{peer.port}", "u@x.test", content=EIGHT_BIT,
                                          body_type="8BITMIME"))
            await a.aclose()
            return peer, res

    return run(go())


def test_8bit_to_a_server_without_8bitmime_is_sent_quoted_printable() -> None:
    peer, res = deliver_8bit(Policy(discard=frozenset({"8bitmime"}), smtputf8=False))
    assert res[0].status == "sent"
    (received,) = peer.messages
    assert received.isascii() is False  # the 8-bit Subject header goes as it is
    body = received.split(b"\r\n\r\n", 1)[1]
    assert body == b"Gr=C3=BC=C3=9Fe aus K=C3=B6ln, 100 % =3D sch=C3=B6n.\r\n"
    msg = email.message_from_bytes(received, policy=email.policy.default)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content() == "Grüße aus Köln, 100 % = schön.\r\n"
    mail = next(e for e in peer.sessions[0].events if isinstance(e, MailFrom))
    assert mail.params.body is None


def test_8bit_kept_when_offered_or_conversion_disabled() -> None:
    peer, _ = deliver_8bit(Policy())
    assert peer.messages == [EIGHT_BIT]
    peer, _ = deliver_8bit(Policy(discard=frozenset({"8bitmime"}), smtputf8=False),
                           disable_mime_output_conversion="yes")
    assert peer.messages == [EIGHT_BIT]


# ---------------------------------------------------------------------------- IPv6
def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no ::1 on this host")


@needs_ipv6
@pytest.mark.parametrize("form", ["[::1]:{port}", "[ipv6:::1]:{port}", "[IPv6:::1]:{port}"])
def test_ipv6_literal_relayhost(form: str) -> None:
    async def go():
        async with serve_smtp(host="::1") as peer:
            a = agent(inet_protocols="all")
            res = await a.deliver(request(form.format(port=peer.port), "u@x.test"))
            await a.aclose()
            return peer, res

    peer, res = run(go())
    assert brief(res) == [("sent", "2.0.0", f"::1[::1]:{peer.port}", QUEUED, 1)]


@needs_ipv6
def test_mx_with_only_an_aaaa_record() -> None:
    zones = {"x.test": {"MX": [(10, "mx6.x.test")]}, "mx6.x.test": {"AAAA": ["::1"]}}

    async def go(**params: str):
        async with serve_smtp(host="::1") as peer, serve_dns(zones) as dns:
            a = agent(dns.address, **params)
            res = await a.deliver(request(f"x.test:{peer.port}", "u@x.test"))
            await a.aclose()
            return peer.port, res

    port, res = run(go(inet_protocols="all"))
    assert brief(res) == [("sent", "2.0.0", f"mx6.x.test[::1]:{port}", QUEUED, 1)]
    port, res = run(go(inet_protocols="ipv6"))
    assert res[0].status == "sent"
    text = ("Host or domain name not found. Name service error for name=mx6.x.test type=A: "
            "Host found but no data record of requested type")
    port, res = run(go(inet_protocols="ipv4"))
    assert brief(res) == [("bounced", "5.4.4", "none", text, 0)]
    port, res = run(go(inet_protocols="ipv4", smtp_defer_if_no_mx_address_found="yes"))
    assert brief(res) == [("deferred", "4.4.4", "none", text, 0)]


def test_ipv6_literal_with_ipv4_only() -> None:
    res = run(agent(inet_protocols="ipv4").deliver(request("[::1]:25", "u@x.test")))
    assert brief(res) == [("bounced", "5.4.4", "none",
                           "Name service error for ::1: invalid host or domain name", 0)]
