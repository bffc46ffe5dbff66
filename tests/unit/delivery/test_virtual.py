"""virtual(8): virtual_mailbox_maps, uid/gid maps, Postfix texts; VirtualAliases for qmgr."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from postillion.config import Params
from postillion.delivery import DeliveryRequest
from postillion.delivery.virtual import VirtualAgent, VirtualAliases
from postillion.queue.envelope import Envelope, Recipient

CONTENT = b"Subject: v\r\n\r\nhello\r\n"


@pytest.fixture
def base() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="pt-virtual-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def agent(base: Path, **values: str) -> tuple[VirtualAgent, list[str]]:
    (base / "vmailbox").write_text(
        "alice@example.com  example.com/alice/\n"
        "bob@example.com    example.com/bob\n"
        "@example.net       catchall/\n")
    uid = str(os.getuid())  # as root: uid 0, written in-process (the root test uses 5000)
    settings = {"myhostname": "mx.test", "mydomain": "test", "recipient_delimiter": "+",
                "virtual_mailbox_base": str(base),
                "virtual_mailbox_maps": "texthash:vmailbox",
                "virtual_uid_maps": f"static:{uid}", "virtual_gid_maps": "static:100",
                "virtual_minimum_uid": "0" if os.getuid() == 0 else "100", **values}
    warnings: list[str] = []
    return VirtualAgent(Params.from_dict(settings, config_dir=base), warn=warnings.append), warnings


def deliver(a: VirtualAgent, *addresses: str, content: bytes = CONTENT):
    rcpts = [Recipient(address=x) for x in addresses]
    req = DeliveryRequest(queue_id="4V", envelope=Envelope(sender="s@example.org",
                                                           recipients=rcpts),
                          content=content, recipients=list(enumerate(rcpts)),
                          transport="virtual", nexthop="example.com")
    return [(r.status, r.dsn, r.relay, r.text) for r in asyncio.run(a.deliver(req))]


def files(maildir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((maildir / "new").iterdir())]


def test_virtual_maildir_delivery(base: Path) -> None:
    a, warnings = agent(base)
    assert deliver(a, "Alice+tag@example.com") == [
        ("sent", "2.0.0", "virtual", "delivered to maildir")]
    assert files(base / "example.com" / "alice") == [
        (b"Return-Path: <s@example.org>\nX-Original-To: Alice+tag@example.com\n"
        b"Delivered-To: Alice+tag@example.com\nSubject: v\n\nhello\n")]
    assert warnings == []


def test_catchall_and_unknown_user(base: Path) -> None:
    a, _ = agent(base)
    assert deliver(a, "x@example.net", "nobody@example.com") == [
        ("sent", "2.0.0", "virtual", "delivered to maildir"),
        ("bounced", "5.1.1", "virtual", 'unknown user: "nobody@example.com"')]
    assert len(files(base / "catchall")) == 1


def test_mailbox_file_result_is_deferred(base: Path) -> None:
    a, warnings = agent(base)
    assert deliver(a, "bob@example.com") == [
        ("deferred", "4.3.5", "virtual", "mail system configuration error")]
    assert "is a mailbox file" in warnings[0]


def test_uid_problems_defer_with_postfix_warnings(base: Path) -> None:
    a, warnings = agent(base, virtual_uid_maps="static:5", virtual_minimum_uid="100")
    assert deliver(a, "alice@example.com") == [
        ("deferred", "4.3.5", "virtual", "mail system configuration error")]
    assert warnings == ["recipient alice@example.com: bad uid 5 in static:5"]
    a, warnings = agent(base, virtual_gid_maps="inline:{ x=1 }")
    assert deliver(a, "alice@example.com")[0][0] == "deferred"
    assert warnings == ["recipient alice@example.com: not found in inline:{ x=1 }"]


def test_relative_base_defers(base: Path) -> None:
    a, warnings = agent(base, virtual_mailbox_base="relative")
    assert deliver(a, "alice@example.com")[0][:2] == ("deferred", "4.3.5")
    assert warnings == ["do not specify relative pathname: virtual_mailbox_base = relative"]


def test_lookup_failure_defers(base: Path) -> None:
    a, warnings = agent(base, virtual_mailbox_maps="fail:x")
    assert deliver(a, "alice@example.com")[0][:2] == ("deferred", "4.3.5")
    assert warnings[0].startswith("table fail:x: lookup alice@example.com: ")


def test_forwarding_loop(base: Path) -> None:
    a, _ = agent(base)
    assert deliver(a, "alice@example.com",
                   content=b"Delivered-To: alice@example.com\r\n" + CONTENT) == [
        ("bounced", "5.4.6", "virtual", "mail forwarding loop for alice@example.com")]


@pytest.mark.root
def test_owner_from_uid_and_gid_maps(base: Path) -> None:
    a, _ = agent(base, virtual_uid_maps="static:5000", virtual_gid_maps="static:5001",
                 virtual_minimum_uid="100")
    os.chown(base, 5000, 5001)
    assert deliver(a, "alice@example.com")[0][0] == "sent"
    maildir = base / "example.com" / "alice"
    for p in (base / "example.com", maildir, maildir / "new", *(maildir / "new").iterdir()):
        assert (p.stat().st_uid, p.stat().st_gid) == (5000, 5001), p


def test_virtual_domains(base: Path) -> None:
    a, _ = agent(base, virtual_mailbox_domains="example.com, texthash:vmailbox")
    assert asyncio.run(a.is_virtual_domain("EXAMPLE.com")) is True
    assert asyncio.run(a.is_virtual_domain("other.org")) is False


def test_virtual_aliases_for_the_queue_manager(base: Path) -> None:
    params = Params.from_dict({"myhostname": "mx.test", "mydomain": "test",
                               "recipient_delimiter": "+",
                               "virtual_alias_maps": "inline:{ {sales@example.com = "
                                                     "alice@example.com, bob} }"},
                              config_dir=base)
    aliases = VirtualAliases(params)
    assert asyncio.run(aliases.rewrite("sales+q@example.com")) == [
        "alice+q@example.com", "bob+q@mx.test"]
    assert asyncio.run(aliases.rewrite("other@example.com")) is None
