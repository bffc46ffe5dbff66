"""The smtp delivery agent against a real SMTP peer (postillion's server engine over loopback)
and a real DNS server (dnsserver.py): MX order, null MX, DNS errors, STARTTLS, AUTH, and
Postfix's exact status texts."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
import trustme
from dnsserver import serve_dns
from smtppeer import QUEUE_ID, Policy, closed_port, serve_smtp

from postillion.config import Params
from postillion.delivery import DeliveryRequest, RecipientResult
from postillion.delivery.dns import Nexthop, parse_nexthop
from postillion.delivery.smtp import SmtpAgent, cert_matches
from postillion.queue.envelope import Envelope, Recipient
from postillion.replies import R
from postillion.smtp import MailFrom, RcptTo, StartTls

QUEUED = f"250 2.0.0 Ok: queued as {QUEUE_ID}"
CONTENT = b"From: a@me.test\r\nSubject: hi\r\n\r\nhello\r\n.dot line\r\n"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def request(nexthop: str, *rcpts: str, content: bytes = CONTENT, **env) -> DeliveryRequest:
    envelope = Envelope(sender=env.pop("sender", "a@me.test"),
                        recipients=[r if isinstance(r, Recipient) else Recipient(address=r) for r in rcpts],
                        **env)
    return DeliveryRequest(queue_id="4XYZ", envelope=envelope, content=content,
                           recipients=list(enumerate(envelope.recipients)), transport="smtp",
                           nexthop=nexthop)


def agent(dns: str = "", **params: str) -> SmtpAgent:
    base = {"myhostname": "me.test", "postillion_dns_servers": dns, "inet_protocols": "ipv4",
            "smtp_randomize_addresses": "no"}
    return SmtpAgent(Params.from_dict({**base, **params}))


def brief(results: list[RecipientResult]) -> list[tuple[int, str, str, str, str]]:
    return [(r.rcpt, r.status, r.dsn, r.relay, r.text) for r in results]


# ---------------------------------------------------------------------------- nexthop syntax
@pytest.mark.parametrize(("text", "parsed"), [
    ("example.org", Nexthop("example.org", 25, True)),
    ("example.org:2525", Nexthop("example.org", 2525, True)),
    ("[mail.example.org]:587", Nexthop("mail.example.org", 587, False)),
    ("[mail.example.org]:submission", Nexthop("mail.example.org", 587, False)),
    ("[192.0.2.1]", Nexthop("192.0.2.1", 25, False)),
    ("[ipv6:2001:db8::1]:26", Nexthop("2001:db8::1", 26, False)),
])
def test_parse_nexthop(text: str, parsed: Nexthop) -> None:
    assert parse_nexthop(text) == parsed


# ---------------------------------------------------------------------------- MX and DNS
def test_mx_delivery_per_recipient_results() -> None:
    async def go():
        policy = Policy(rcpt={"bad@x.test": R(550, "5.1.1", "<bad@x.test>: Recipient address rejected: User unknown"),
                              "later@x.test": R(450, "4.2.0", "<later@x.test>: Recipient address rejected: Greylisted")})
        async with serve_smtp(policy) as peer, serve_dns({
            "x.test": {"MX": [(10, "mx.x.test")]}, "mx.x.test": {"A": ["127.0.0.1"]},
        }) as dns:
            results = await agent(dns.address).deliver(
                request(f"x.test:{peer.port}", "ok@x.test", "bad@x.test", "later@x.test"))
            return peer, dns, results

    peer, dns, results = run(go())
    relay = f"mx.x.test[127.0.0.1]:{peer.port}"
    assert brief(results) == [
        (0, "sent", "2.0.0", relay, QUEUED),
        (1, "bounced", "5.1.1", relay, "host mx.x.test[127.0.0.1] said: 550 5.1.1 <bad@x.test>: "
                                       "Recipient address rejected: User unknown (in reply to RCPT TO command)"),
        (2, "deferred", "4.2.0", relay, "host mx.x.test[127.0.0.1] said: 450 4.2.0 <later@x.test>: "
                                        "Recipient address rejected: Greylisted (in reply to RCPT TO command)"),
    ]
    assert dns.queries == [("x.test", "MX"), ("mx.x.test", "A")]
    assert peer.messages == [CONTENT]
    mail = next(e for e in peer.sessions[0].events if isinstance(e, MailFrom))
    assert (mail.address, mail.params.size, mail.params.body) == ("a@me.test", len(CONTENT), "7BIT")
    assert all(r.conn_time > 0 and r.xfer_time > 0 for r in results)


def test_mx_preference_order_and_fallback_to_next_mx() -> None:
    async def go():
        async with serve_smtp() as peer, serve_dns({
            "x.test": {"MX": [(20, "mx2.x.test"), (10, "mx1.x.test")]},
            "mx1.x.test": {"A": ["127.0.0.2"]},  # nothing listens there: refused
            "mx2.x.test": {"A": ["127.0.0.1"]},
        }) as dns:
            return peer, await agent(dns.address).deliver(request(f"x.test:{peer.port}", "u@x.test"))

    peer, results = run(go())
    assert brief(results) == [(0, "sent", "2.0.0", f"mx2.x.test[127.0.0.1]:{peer.port}", QUEUED)]


def test_all_servers_refuse_connections() -> None:
    async def go():
        port = await closed_port()
        async with serve_dns({
            "x.test": {"MX": [(10, "mx1.x.test"), (20, "mx2.x.test")]},
            "mx1.x.test": {"A": ["127.0.0.1"]}, "mx2.x.test": {"A": ["127.0.0.3"]},
        }) as dns:
            return port, await agent(dns.address).deliver(request(f"x.test:{port}", "u@x.test", "v@x.test"))

    port, results = run(go())
    text = f"connect to mx2.x.test[127.0.0.3]:{port}: Connection refused"
    assert brief(results) == [(0, "deferred", "4.4.1", "none", text), (1, "deferred", "4.4.1", "none", text)]
    assert results[0].xfer_time == 0.0


def test_implicit_mx_uses_the_domain_address() -> None:
    async def go():
        async with serve_smtp() as peer, serve_dns({"x.test": {"A": ["127.0.0.1"]}}) as dns:
            return peer, dns, await agent(dns.address).deliver(request(f"x.test:{peer.port}", "u@x.test"))

    peer, dns, results = run(go())
    assert brief(results) == [(0, "sent", "2.0.0", f"x.test[127.0.0.1]:{peer.port}", QUEUED)]
    assert dns.queries == [("x.test", "MX"), ("x.test", "A")]


@pytest.mark.parametrize(("zones", "protocols", "expected"), [
    ({"x.test": {"MX": [(0, ".")]}}, "ipv4",
     ("bounced", "5.1.0", "Domain x.test does not accept mail (nullMX)")),
    ({}, "ipv4",
     ("bounced", "5.4.4", "Host or domain name not found. Name service error for name=x.test type=A: Host not found")),
    ({}, "all",
     ("bounced", "5.4.4", "Host or domain name not found. Name service error for name=x.test type=AAAA: Host not found")),
    ({"x.test": {"TXT": ["v=spf1"]}}, "ipv4",
     ("bounced", "5.4.4", "Host or domain name not found. Name service error for name=x.test type=A: "
                          "Host found but no data record of requested type")),
    ({"x.test": "SERVFAIL"}, "ipv4",
     ("deferred", "4.4.3", "Host or domain name not found. Name service error for name=x.test type=MX: "
                           "Host not found, try again")),
    ({"x.test": {"MX": [(10, "mx.x.test")]}}, "ipv4",
     ("bounced", "5.4.4", "Host or domain name not found. Name service error for name=mx.x.test type=A: "
                          "Host not found")),
])
def test_dns_failures(zones: dict, protocols: str, expected: tuple[str, str, str]) -> None:
    async def go():
        async with serve_dns(zones) as dns:
            return await agent(dns.address, inet_protocols=protocols).deliver(request("x.test", "u@x.test"))

    (result,) = run(go())
    assert (result.status, result.dsn, result.text, result.relay) == (*expected, "none")


def test_bracketed_nexthop_skips_mx_lookup() -> None:
    async def go():
        async with serve_smtp() as peer, serve_dns({"relay.test": {"A": ["127.0.0.1"]}}) as dns:
            via_name = await agent(dns.address).deliver(request(f"[relay.test]:{peer.port}", "u@x.test"))
            via_ip = await agent().deliver(request(f"[127.0.0.1]:{peer.port}", "u@x.test"))
            return peer, dns, via_name, via_ip

    peer, dns, via_name, via_ip = run(go())
    assert dns.queries == [("relay.test", "A")]
    assert brief(via_name) == [(0, "sent", "2.0.0", f"relay.test[127.0.0.1]:{peer.port}", QUEUED)]
    assert brief(via_ip) == [(0, "sent", "2.0.0", f"127.0.0.1[127.0.0.1]:{peer.port}", QUEUED)]


def test_connection_refused_relayhost() -> None:
    async def go():
        port = await closed_port()
        return port, await agent().deliver(request(f"[127.0.0.1]:{port}", "u@x.test"))

    port, results = run(go())
    assert brief(results) == [(0, "deferred", "4.4.1", "none",
                               f"connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused")]


# ---------------------------------------------------------------------------- session failures
def deliver_to(policy: Policy, *rcpts: str, params: dict | None = None, **req) -> tuple[int, list, object]:
    async def go():
        async with serve_smtp(policy) as peer:
            results = await agent(**(params or {})).deliver(request(f"[127.0.0.1]:{peer.port}", *rcpts, **req))
            return peer.port, results, peer

    return run(go())


def test_5xx_greeting_is_temporary_by_default() -> None:
    port, results, _ = deliver_to(Policy(greeting=R(554, "5.7.1", "go away", close=True)), "u@x.test")
    assert brief(results) == [(0, "deferred", "4.7.1", f"127.0.0.1[127.0.0.1]:{port}",
                               "host 127.0.0.1[127.0.0.1] refused to talk to me: 554 5.7.1 go away")]
    _port, results, _ = deliver_to(Policy(greeting=R(554, "5.7.1", "go away", close=True)), "u@x.test",
                                  params={"smtp_skip_5xx_greeting": "no"})
    assert (results[0].status, results[0].dsn) == ("bounced", "5.7.1")


def test_mail_from_rejected_fails_every_recipient() -> None:
    _port, results, _ = deliver_to(Policy(mail=R(553, "5.7.1", "<a@me.test>: Sender address rejected: not owned")),
                                  "u@x.test", "v@x.test")
    text = ("host 127.0.0.1[127.0.0.1] said: 553 5.7.1 <a@me.test>: Sender address rejected: not owned "
            "(in reply to MAIL FROM command)")
    assert [(r.status, r.dsn, r.text) for r in results] == [("bounced", "5.7.1", text)] * 2


def test_end_of_data_rejected() -> None:
    _port, results, _ = deliver_to(Policy(end_of_data=R(451, "4.3.0", "Error: queue file write error"),
                                         rcpt={"bad@x.test": R(550, "5.1.1", "no")}),
                                  "u@x.test", "bad@x.test")
    assert [(r.status, r.dsn, r.text) for r in results] == [
        ("deferred", "4.3.0", "host 127.0.0.1[127.0.0.1] said: 451 4.3.0 Error: queue file write error "
                              "(in reply to end of DATA command)"),
        ("bounced", "5.1.1", "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 no (in reply to RCPT TO command)"),
    ]


def test_without_pipelining_nobody_accepted_means_no_data() -> None:
    _port, results, peer = deliver_to(Policy(discard=frozenset({"pipelining"}),
                                            rcpt={"bad@x.test": R(550, "5.1.1", "no")}), "bad@x.test")
    assert results[0].status == "bounced"
    kinds = [type(e).__name__ for e in peer.sessions[0].events]
    assert kinds == ["Helo", "MailFrom", "RcptTo"]
    assert peer.messages == []


def test_lost_connection_and_timeouts() -> None:
    _port, results, _ = deliver_to(Policy(drop_after="mail"), "u@x.test")
    assert (results[0].dsn, results[0].text) == (
        "4.4.2", "lost connection with 127.0.0.1[127.0.0.1] while sending MAIL FROM")
    _port, results, _ = deliver_to(Policy(drop_after="data", discard=frozenset({"pipelining"})), "u@x.test")
    assert results[0].text == "lost connection with 127.0.0.1[127.0.0.1] while sending DATA command"
    _port, results, _ = deliver_to(Policy(stall_greeting=True), "u@x.test", params={"smtp_helo_timeout": "1s"})
    assert (results[0].status, results[0].dsn, results[0].text) == (
        "deferred", "4.4.2",
        "conversation with 127.0.0.1[127.0.0.1] timed out while receiving the initial server greeting")


def test_message_size_over_the_server_limit() -> None:
    _port, results, _ = deliver_to(Policy(message_size_limit=10), "u@x.test")
    assert (results[0].status, results[0].dsn, results[0].text) == (
        "bounced", "5.3.4",
        f"message size {len(CONTENT)} exceeds size limit 10 of server 127.0.0.1[127.0.0.1]")


# ---------------------------------------------------------------------------- ESMTP parameters
def test_8bit_smtputf8_and_dsn_parameters() -> None:
    rcpt = Recipient(address="j\u00fcrgen@x.test", orcpt="rfc822;j+rgen@x.test", notify=("SUCCESS", "FAILURE"))
    content = "Subject: gr\u00fc\u00dfe\r\n\r\nbody\r\n".encode()
    _port, results, peer = deliver_to(Policy(), rcpt, content=content, smtputf8=True, ret="HDRS",
                                     envid="id+1", body_type="8BITMIME")
    assert results[0].status == "sent"
    events = peer.sessions[0].events
    mail = next(e for e in events if isinstance(e, MailFrom))
    assert (mail.params.body, mail.params.smtputf8, mail.params.ret, mail.params.envid, mail.params.size) == (
        "8BITMIME", True, "HDRS", "id+1", len(content))
    rcpt_ev = next(e for e in events if isinstance(e, RcptTo))
    assert (rcpt_ev.address, rcpt_ev.params.notify, rcpt_ev.params.orcpt) == (
        "j\u00fcrgen@x.test", ("SUCCESS", "FAILURE"), "rfc822;j+rgen@x.test")


def test_smtputf8_required_but_not_offered() -> None:
    port, results, peer = deliver_to(Policy(smtputf8=False), "j\u00fcrgen@x.test", smtputf8=True)
    assert brief(results) == [(0, "bounced", "5.6.7", f"127.0.0.1[127.0.0.1]:{port}",
                               "SMTPUTF8 is required, but was not offered by host 127.0.0.1[127.0.0.1]")]
    assert peer.messages == []


def test_no_dsn_parameters_when_not_offered() -> None:
    # (SMTPUTF8 alone would imply 8BITMIME, as Postfix assumes: so it is discarded too.)
    rcpt = Recipient(address="u@x.test", orcpt="rfc822;u@x.test", notify=("NEVER",))
    _port, results, peer = deliver_to(Policy(discard=frozenset({"dsn", "8bitmime", "size", "smtputf8"})), rcpt, ret="FULL")
    mail = next(e for e in peer.sessions[0].events if isinstance(e, MailFrom))
    rcpt_ev = next(e for e in peer.sessions[0].events if isinstance(e, RcptTo))
    assert (mail.params.ret, mail.params.body, mail.params.size, rcpt_ev.params.notify) == (None, None, None, None)


# ---------------------------------------------------------------------------- TLS and AUTH
@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(ctx)
    return ctx


def test_starttls_levels(ca: trustme.CA, tmp_path: Path) -> None:
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    tls = server_tls(ca, "relay.test")

    def attempt(level: str, policy: Policy, nexthop_name: str = "relay.test", **extra: str):
        async def go():
            async with serve_smtp(policy) as peer, serve_dns({"relay.test": {"A": ["127.0.0.1"]},
                                                              "other.test": {"A": ["127.0.0.1"]}}) as dns:
                a = agent(dns.address, smtp_tls_security_level=level, smtp_tls_CAfile=str(cafile), **extra)
                res = await a.deliver(request(f"[{nexthop_name}]:{peer.port}", "u@x.test"))
                return res[0], peer
        return run(go())

    res, peer = attempt("encrypt", Policy(tls=tls))
    assert res.status == "sent" and peer.sessions[0].tls
    assert [type(e) for e in peer.sessions[0].events].count(StartTls) == 1
    res, peer = attempt("verify", Policy(tls=tls))
    assert res.status == "sent" and peer.sessions[0].tls
    res, peer = attempt("secure", Policy(tls=tls))
    assert res.status == "sent"
    res, peer = attempt("verify", Policy(tls=tls), nexthop_name="other.test")
    assert (res.status, res.dsn, res.text) == ("deferred", "4.7.5", "Server certificate not verified")
    res, peer = attempt("none", Policy(tls=tls))
    assert res.status == "sent" and not peer.sessions[0].tls
    res, peer = attempt("may", Policy())
    assert res.status == "sent" and not peer.sessions[0].tls
    res, peer = attempt("encrypt", Policy())
    assert (res.status, res.dsn, res.text) == (
        "deferred", "4.7.4", "TLS is required, but was not offered by host relay.test[127.0.0.1]")
    untrusted = server_tls(trustme.CA(), "relay.test")
    res, peer = attempt("verify", Policy(tls=untrusted))
    assert (res.dsn, res.text) == ("4.7.5", "Server certificate not verified")
    res, peer = attempt("may", Policy(tls=untrusted))  # may does not check certificates
    assert res.status == "sent" and peer.sessions[0].tls


def test_sasl_auth(ca: trustme.CA) -> None:
    tls = server_tls(ca, "relay.test")

    def attempt(password_map: str, policy: Policy, **extra: str):
        async def go():
            async with serve_smtp(policy) as peer:
                nexthop = f"[127.0.0.1]:{peer.port}"
                a = agent(smtp_sasl_auth_enable="yes", smtp_tls_security_level="may",
                          smtp_sasl_password_maps=password_map.replace("NEXTHOP", nexthop), **extra)
                res = await a.deliver(request(nexthop, "u@x.test"))
                return res[0], peer
        return run(go())

    users = {"alice": "s3cret-pw"}
    # Postfix's default (noplaintext) rules out PLAIN and LOGIN even under TLS.
    res, peer = attempt("inline:{NEXTHOP=alice:s3cret-pw}", Policy(tls=tls, auth=users))
    assert (res.status, res.dsn, res.text) == (
        "deferred", "4.7.0", "SASL authentication failed: server 127.0.0.1[127.0.0.1] offered no compatible "
                             "authentication mechanisms for this type of connection security")
    res, peer = attempt("inline:{NEXTHOP=alice:s3cret-pw}", Policy(tls=tls, auth=users, auth_tls_only=True),
                        smtp_sasl_tls_security_options="noanonymous")
    assert res.status == "sent" and peer.sessions[0].authenticated == "alice" and peer.sessions[0].tls
    # looked up by host name first ("127.0.0.1"), LOGIN when it is the only one offered
    res, peer = attempt("inline:{127.0.0.1=alice:s3cret-pw}",
                        Policy(auth=users, mechanisms=("LOGIN",)), smtp_sasl_security_options="noanonymous")
    assert res.status == "sent" and peer.sessions[0].authenticated == "alice"
    res, peer = attempt("inline:{NEXTHOP=alice:wrong}", Policy(auth=users),
                        smtp_sasl_security_options="noanonymous")
    assert (res.status, res.dsn) == ("deferred", "4.7.8")
    assert res.text.startswith("SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.8 ")
    res, peer = attempt("inline:{other=alice:s3cret-pw}", Policy(auth=users),
                        smtp_sasl_security_options="noanonymous")
    assert res.status == "sent" and peer.sessions[0].authenticated is None


def test_cert_matches() -> None:
    cert = {"subject": ((("commonName", "ignored.test"),),),
            "subjectAltName": (("DNS", "mx.example.org"), ("DNS", "*.relay.example"), ("IP Address", "192.0.2.1"))}
    assert cert_matches(cert, [("MX.example.org", False)])
    assert cert_matches(cert, [("a.relay.example", False)])
    assert not cert_matches(cert, [("a.b.relay.example", False)])
    assert not cert_matches(cert, [("ignored.test", False)])
    assert cert_matches(cert, [("example.org", True)])  # dot-nexthop
    assert cert_matches(cert, [("relay.example", True)])
    assert not cert_matches(cert, [("example.org", False)])
    assert cert_matches(cert, [("192.0.2.1", False)])
    assert cert_matches({"subject": ((("commonName", "cn.test"),),)}, [("cn.test", False)])


def test_soft_failures_move_on_to_the_next_mx() -> None:
    """A 4xx RCPT reply or greeting on a non-final MX keeps the recipient for the next one."""
    async def go():
        greylist = Policy(hostname="mx1.x.test", rcpt={"b@x.test": R(450, "4.2.0", "<b@x.test>: Greylisted")})
        async with serve_smtp(greylist) as mx1, serve_smtp(Policy(hostname="mx2.x.test"), host="127.0.0.2",
                                                         port=mx1.port) as mx2, serve_dns({
            "x.test": {"MX": [(10, "mx1.x.test"), (20, "mx2.x.test")]},
            "mx1.x.test": {"A": ["127.0.0.1"]}, "mx2.x.test": {"A": ["127.0.0.2"]},
        }) as dns:
            results = await agent(dns.address).deliver(request(f"x.test:{mx1.port}", "a@x.test", "b@x.test"))
            return mx1, mx2, results

    mx1, mx2, results = run(go())
    assert brief(results) == [
        (0, "sent", "2.0.0", f"mx1.x.test[127.0.0.1]:{mx1.port}", QUEUED),
        (1, "sent", "2.0.0", f"mx2.x.test[127.0.0.2]:{mx1.port}", QUEUED),
    ]
    rcpts = [e.address for e in mx2.sessions[0].events if isinstance(e, RcptTo)]
    assert rcpts == ["b@x.test"]


def test_mx_session_limit_makes_the_second_session_final() -> None:
    async def go():
        busy = Policy(greeting=R(421, "4.3.2", "busy", close=True))
        async with serve_smtp(busy) as mx1, serve_dns({
            "x.test": {"MX": [(10, "mx1.x.test"), (20, "mx2.x.test"), (30, "mx3.x.test")]},
            "mx1.x.test": {"A": ["127.0.0.1"]}, "mx2.x.test": {"A": ["127.0.0.1"]},
            "mx3.x.test": {"A": ["127.0.0.1"]},
        }) as dns:
            results = await agent(dns.address).deliver(request(f"x.test:{mx1.port}", "a@x.test"))
            return mx1, results

    mx1, results = run(go())
    assert len(mx1.sessions) == 2  # smtp_mx_session_limit = 2
    assert brief(results) == [(0, "deferred", "4.3.2", f"mx2.x.test[127.0.0.1]:{mx1.port}",
                               "host mx2.x.test[127.0.0.1] refused to talk to me: 421 4.3.2 busy")]
