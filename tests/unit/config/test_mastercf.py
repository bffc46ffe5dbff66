"""master.cf parsing, Service, and postconf -M formatting."""

from __future__ import annotations

from pathlib import Path

import pytest

from postillion.config import load_config
from postillion.config.mastercf import Service, format_service, parse_master_cf
from postillion.errors import ConfigError

CASES = Path(__file__).parent / "cases"


def test_submission_overrides_and_lines() -> None:
    mcf = parse_master_cf((CASES / "submission.master.cf").read_text())
    sub = next(s for s in mcf.services if s.name == "submission")
    assert dict(sub.overrides) == {
        "syslog_name": "postfix/submission",
        "smtpd_tls_security_level": "encrypt",
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_client_restrictions": "permit_sasl_authenticated, reject",
        "smtpd_recipient_restrictions": "$mua_client_restrictions",
        "milter_macro_daemon_name": "ORIGINATING",
    }
    assert sub.lineno == 3 and sub.end_lineno == 10
    assert sub.override_linenos["smtpd_client_restrictions"] == 8
    a = next(s for s in mcf.services if s.name == "a")
    assert a.args == ("-v", "-o", "x=a b", "-o", "y=1", "-D")
    assert dict(a.overrides) == {"x": "a b", "y": "1"}


def test_last_duplicate_wins() -> None:
    mcf = parse_master_cf((CASES / "submission.master.cf").read_text())
    smtp = [s for s in mcf.services if s.key == "smtp/inet"]
    assert len(smtp) == 1 and smtp[0].maxproc == "5"
    assert len([s for s in mcf.entries if s.key == "smtp/inet"]) == 2
    assert [(e.lineno, l.lineno) for e, l in mcf.duplicates()] == [(2, 20)]


@pytest.mark.parametrize(("name", "host", "port"), [
    ("smtp", None, 25), ("submission", None, 587), ("smtps", None, 465),
    ("submissions", None, 465), ("2525", None, 2525), ("127.0.0.1:10025", "127.0.0.1", 10025),
    ("[::1]:2525", "::1", 2525), ("[::1]:smtp", "::1", 25), ("mx.test:submission", "mx.test", 587),
])
def test_listen_host_and_port(name: str, host: str | None, port: int) -> None:
    s = Service(name=name, type="inet", command="smtpd")
    assert (s.listen_host, s.listen_port) == (host, port)


def test_unknown_service_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Service(name="no-such-service-name", type="inet").listen_port


@pytest.mark.parametrize(("text", "fragment", "lineno"), [
    ("smtp inet n - n - smtpd\n", "bad field count", 2),
    ("smtp tcp n - n - - smtpd\n", 'invalid type field "tcp"', 2),
    ("smtp inet x - n - - smtpd\n", 'invalid private field "x"', 2),
    ("smtp inet n - n 1s - smtpd\n", 'invalid wakeup field "1s"', 2),
    ("smtp inet n - n - ten smtpd\n", 'invalid maxproc field "ten"', 2),
    ("smtp inet n - n - - smtpd -o\n", 'option "-o" requires a value', 2),
    ("smtp inet n - n - - smtpd\n  -o novalue\n", 'bad "-o" argument "novalue"', 3),
    ("smtp inet n - n - - smtpd\n  -o { a = b\n", 'missing "}"', 3),
])
def test_syntax_errors(text: str, fragment: str, lineno: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_master_cf("# x\n" + text, Path("master.cf"))
    assert fragment in info.value.message
    assert info.value.lineno == lineno


@pytest.mark.parametrize(("fold", "ref"), [(False, "submission.M.ref"), (True, "submission.Mf.ref")])
def test_postconf_m_format(fold: bool, ref: str) -> None:
    # The .ref files are the output of Postfix 3.7's `postconf -M` / `postconf -Mf`.
    mcf = parse_master_cf((CASES / "submission.master.cf").read_text())
    got = "".join(format_service(s, fold=fold) + "\n" for s in mcf.entries)
    assert got == (CASES / ref).read_text()


def test_params_per_service(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(
        "myhostname = mx.test\nmua_client_restrictions = permit_sasl_authenticated, reject\n")
    (tmp_path / "master.cf").write_text((CASES / "submission.master.cf").read_text())
    cfg = load_config(tmp_path)
    assert cfg.main_cf == tmp_path / "main.cf" and cfg.master_cf == tmp_path / "master.cf"
    sub = next(s for s in cfg.services if s.name == "submission")
    p = cfg.params(sub)
    assert p.get("smtpd_recipient_restrictions") == "permit_sasl_authenticated, reject"
    assert p.get_list("smtpd_client_restrictions") == ["permit_sasl_authenticated", "reject"]
    assert p.get("smtpd_tls_security_level") == "encrypt"
    assert p.is_set("smtpd_sasl_auth_enable") and not cfg.params().is_set("smtpd_sasl_auth_enable")
    assert p.origin("smtpd_client_restrictions").lineno == 8
    relay = next(s for s in cfg.services if s.name == "relay")
    assert cfg.params(relay).get("syslog_name") == "postfix/relay"
    assert cfg.params().get("syslog_name") == "postfix"
