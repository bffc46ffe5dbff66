"""Search orders (access(5), mail_addr_find) as exact key lists."""

from __future__ import annotations

import pytest

from postillion.tables import address_keys, client_keys, domain_keys, mail_addr_keys


@pytest.mark.parametrize(
    ("address", "delim", "parent", "keys"),
    [
        ("user@example.com", "", True, ["user@example.com", "example.com", "com", "user@"]),
        ("User+Ext@Sub.Example.COM", "+", True,
         ["user+ext@sub.example.com", "user@sub.example.com", "sub.example.com", "example.com",
          "com", "user+ext@", "user@"]),
        # without a recipient_delimiter the extension is part of the user name
        ("user+ext@example.com", "", True, ["user+ext@example.com", "example.com", "com", "user+ext@"]),
        ("user-ext@example.com", "+-", True,
         ["user-ext@example.com", "user@example.com", "example.com", "com", "user-ext@", "user@"]),
        # smtpd_access_maps left out of parent_domain_matches_subdomains: ".parent" keys
        ("u@a.example.com", "", False, ["u@a.example.com", "a.example.com", ".example.com", ".com", "u@"]),
        # mailer-daemon is never split (split_addr.c), a leading delimiter is not an extension
        ("MAILER-DAEMON@d.test", "-", True, ["mailer-daemon@d.test", "d.test", "test", "mailer-daemon@"]),
        ("+x@d.test", "+", True, ["+x@d.test", "d.test", "test", "+x@"]),
    ],
)
def test_address_keys(address: str, delim: str, parent: bool, keys: list[str]) -> None:
    assert address_keys(address, recipient_delimiter=delim, parent_matches_subdomains=parent) == keys


@pytest.mark.parametrize(
    ("name", "addr", "keys"),
    [
        ("mail.example.com", "192.0.2.1",
         ["mail.example.com", "example.com", "com", "192.0.2.1", "192.0.2", "192.0", "192"]),
        ("unknown", "2001:db8::1", ["unknown", "2001:db8::1", "2001:db8:", "2001:db8", "2001"]),
        ("", "10.1.2.3", ["10.1.2.3", "10.1.2", "10.1", "10"]),
    ],
)
def test_client_keys(name: str, addr: str, keys: list[str]) -> None:
    assert client_keys(name, addr) == keys


def test_domain_keys_numeric_has_no_parents() -> None:
    assert domain_keys("192.0.2.1") == ["192.0.2.1"]
    assert domain_keys("A.B.C", parent_matches_subdomains=False) == ["a.b.c", ".b.c", ".c"]
    assert domain_keys("") == []


@pytest.mark.parametrize(
    ("address", "local", "keys"),
    [
        ("alice+x@example.test", True,
         ["alice+x@example.test", "alice@example.test", "alice+x", "alice", "@example.test"]),
        ("alice+x@example.test", False, ["alice+x@example.test", "alice@example.test", "@example.test"]),
        ("Bob@Example.TEST", False, ["bob@example.test", "@example.test"]),
    ],
)
def test_mail_addr_keys(address: str, local: bool, keys: list[str]) -> None:
    assert mail_addr_keys(address, recipient_delimiter="+", local_domain=local) == keys
