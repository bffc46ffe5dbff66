"""smtpd.conf search/parse/check and make_sasl_server / offered_mechanisms."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from postillion.config import Params
from postillion.config.saslconf import (
    SaslAppConfig,
    check,
    find_sasl_conf,
    parse_sasl_conf,
    sasl_conf_search_path,
)
from postillion.errors import ConfigError
from postillion.sasl.verifiers import (
    SaslauthdVerifier,
    UserDBVerifier,
    make_sasl_server,
    offered_mechanisms,
)


def params(tmp_path: Path, **values: str) -> Params:
    values.setdefault("cyrus_sasl_config_path", "sasl")  # keep /etc out of the tests
    return Params.from_dict(values, config_dir=tmp_path)


def write_conf(tmp_path: Path, text: str, name: str = "smtpd.conf") -> Path:
    d = tmp_path / "sasl"
    d.mkdir(exist_ok=True)
    path = d / name
    path.write_text(text)
    return path


# --- search path -------------------------------------------------------------------------

def test_default_search_path(tmp_path: Path) -> None:
    p = Params.from_dict({}, config_dir=tmp_path)
    assert sasl_conf_search_path(p) == [
        tmp_path / "sasl", Path("/etc/postfix/sasl"), Path("/usr/lib/sasl2"), Path("/etc/sasl2"),
    ]


def test_configured_search_path_keeps_own_dir_last(tmp_path: Path) -> None:
    p = Params.from_dict({"cyrus_sasl_config_path": "/a:rel::/b:/a"}, config_dir=tmp_path)
    assert sasl_conf_search_path(p) == [Path("/a"), tmp_path / "rel", Path("/b"), tmp_path / "sasl"]


def test_find_uses_smtpd_sasl_path_and_order(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "smtpd.conf").write_text("")
    (tmp_path / "two" / "submission.conf").write_text("")
    p = Params.from_dict({"cyrus_sasl_config_path": "one:two"}, config_dir=tmp_path)
    assert find_sasl_conf(p) == tmp_path / "two" / "smtpd.conf"
    (tmp_path / "one" / "smtpd.conf").write_text("")
    assert find_sasl_conf(p) == tmp_path / "one" / "smtpd.conf"
    p2 = Params.from_dict({"cyrus_sasl_config_path": "one:two", "smtpd_sasl_path": "submission"},
                          config_dir=tmp_path)
    assert find_sasl_conf(p2) == tmp_path / "two" / "submission.conf"
    assert find_sasl_conf(params(tmp_path / "none")) is None


def test_smtpd_sasl_path_must_be_a_name_for_cyrus(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        find_sasl_conf(params(tmp_path, smtpd_sasl_path="private/auth"))
    assert info.value.name == "smtpd_sasl_path"


# --- parsing -----------------------------------------------------------------------------

def test_parse_debian_example(tmp_path: Path) -> None:
    path = write_conf(tmp_path, (
        "# Postfix smtpd via saslauthd\n"
        "pwcheck_method: saslauthd\n"
        "\n"
        "mech_list: PLAIN LOGIN\n"
        "saslauthd_path:   /var/run/saslauthd/mux   \n"
        "log_level: 3\n"
        "sql_engine: mysql\n"
    ))
    assert parse_sasl_conf(path) == SaslAppConfig(
        path=path,
        pwcheck_method=("saslauthd",),
        mech_list=("PLAIN", "LOGIN"),
        saslauthd_path="/var/run/saslauthd/mux",
        log_level=3,
        auxprop_plugin=None,
        options={"pwcheck_method": "saslauthd", "mech_list": "PLAIN LOGIN",
                 "saslauthd_path": "/var/run/saslauthd/mux", "log_level": "3",
                 "sql_engine": "mysql"},
        linenos={"pwcheck_method": 2, "mech_list": 4, "saslauthd_path": 5, "log_level": 6,
                 "sql_engine": 7},
    )


def test_parse_defaults_and_first_occurrence_wins(tmp_path: Path) -> None:
    conf = parse_sasl_conf(write_conf(tmp_path, "auxprop_plugin: postillion\n"
                                                "auxprop_plugin: sasldb\n"))
    assert conf.pwcheck_method == ("auxprop",)
    assert conf.mech_list is None
    assert conf.log_level == 1
    assert conf.auxprop_plugin == "postillion"


@pytest.mark.parametrize("text, lineno, rendered", [
    ("pwcheck_method: saslauthd\nthis is wrong\n", 2,
     "smtpd.conf:2: bad line 'this is wrong'; write key: value"),
    ("# c\npwcheck_method: sasldb\n", 2,
     "smtpd.conf:2: pwcheck_method: unknown method 'sasldb'; use saslauthd or auxprop"),
    ("pwcheck_method:\n", 1, "smtpd.conf:1: pwcheck_method: empty value; use saslauthd or auxprop"),
    ("\n\nlog_level: lots\n", 3,
     "smtpd.conf:3: log_level: not a number: 'lots'; use 0 (none) to 7 (everything)"),
])
def test_parse_errors_name_file_and_line(tmp_path: Path, text: str, lineno: int,
                                         rendered: str) -> None:
    path = write_conf(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        parse_sasl_conf(path)
    assert info.value.path == path
    assert info.value.lineno == lineno
    assert str(info.value) == f"{path.parent}/{rendered}"


# --- make_sasl_server ----------------------------------------------------------------------

def test_no_conf_file_means_user_database(tmp_path: Path) -> None:
    server = make_sasl_server(params(tmp_path, postillion_user_database="users.sqlite"))
    assert isinstance(server.verifier, UserDBVerifier)
    assert server.verifier.path == tmp_path / "users.sqlite"
    assert server.mechanisms == [
        "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", "PLAIN", "LOGIN"]
    assert server.description == (
        f"postillion user database {tmp_path}/users.sqlite (no smtpd.conf in {tmp_path}/sasl)"
    )


def test_user_database_default_location(tmp_path: Path) -> None:
    server = make_sasl_server(params(tmp_path, data_directory="/var/lib/x"))
    assert server.verifier.path == Path("/var/lib/x/users.sqlite")  # type: ignore[attr-defined]


def test_saslauthd_conf(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "pwcheck_method: saslauthd\nmech_list: login plain cram-md5\n"
                                "saslauthd_path: /run/x/mux\n")
    server = make_sasl_server(params(tmp_path, smtpd_sasl_service="submission",
                                     smtpd_sasl_local_domain="example.org"))
    v = server.verifier
    assert isinstance(v, SaslauthdVerifier)
    assert (v.socket_path, v.service, v.realm) == ("/run/x/mux", "submission", "example.org")
    assert server.mechanisms == ["LOGIN", "PLAIN"]
    assert server.notes == [f"{path}: mech_list: cram-md5 needs stored secrets, but saslauthd "
                            "checks only plaintext passwords; ignored (use pwcheck_method: auxprop)"]
    assert server.description == f"saslauthd /run/x/mux (from {path})"


def test_saslauthd_default_socket(tmp_path: Path) -> None:
    write_conf(tmp_path, "pwcheck_method: saslauthd\n")
    v = make_sasl_server(params(tmp_path)).verifier
    assert isinstance(v, SaslauthdVerifier)
    assert (v.socket_path, v.service, v.realm) == ("/var/run/saslauthd/mux", "smtp", "")


@pytest.mark.parametrize("plugin", ["", "auxprop_plugin: postillion\n", "auxprop_plugin: sasldb postillion\n"])
def test_auxprop_is_the_user_database(tmp_path: Path, plugin: str) -> None:
    write_conf(tmp_path, "pwcheck_method: auxprop\n" + plugin)
    server = make_sasl_server(params(tmp_path, postillion_user_database="/x/u.sqlite"))
    assert isinstance(server.verifier, UserDBVerifier)
    assert server.verifier.path == Path("/x/u.sqlite")


def test_auxprop_sasldb_is_refused(tmp_path: Path) -> None:
    write_conf(tmp_path, "pwcheck_method: auxprop\nauxprop_plugin: sasldb\n")
    with pytest.raises(ConfigError) as info:
        make_sasl_server(params(tmp_path))
    assert info.value.name == "auxprop_plugin"
    assert "not supported" in info.value.message


def test_mech_list_without_supported_mechanisms(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "pwcheck_method: saslauthd\nmech_list: CRAM-MD5\n")
    with pytest.raises(ConfigError) as info:
        make_sasl_server(params(tmp_path))
    assert str(info.value) == (
        f"{path}: mech_list: mech_list names no mechanism postillion supports; add PLAIN LOGIN"
    )


def test_only_first_pwcheck_method_used(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "pwcheck_method: saslauthd auxprop\n")
    server = make_sasl_server(params(tmp_path))
    assert isinstance(server.verifier, SaslauthdVerifier)
    assert server.notes == [
        f"{path}: pwcheck_method: only the first method (saslauthd) is used; ignored: auxprop"]


def test_authdaemond_is_refused(tmp_path: Path) -> None:
    write_conf(tmp_path, "pwcheck_method: authdaemond\n")
    with pytest.raises(ConfigError, match="pwcheck_method authdaemond is not supported"):
        make_sasl_server(params(tmp_path))


def test_dovecot_type_gives_a_dovecot_verifier(tmp_path: Path) -> None:
    server = make_sasl_server(params(tmp_path, smtpd_sasl_type="dovecot",
                                     smtpd_sasl_path="inet:127.0.0.1:1"))
    assert repr(server.verifier) == "DovecotVerifier('inet:127.0.0.1:1')"
    assert server.mechanisms == ["PLAIN", "LOGIN"]  # unreachable at startup: assumed
    assert server.notes == [
        "Connect to Dovecot auth socket 'inet:127.0.0.1:1' failed: Connection refused; "
        "offering PLAIN LOGIN until it answers"]


def test_unknown_sasl_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        make_sasl_server(params(tmp_path, smtpd_sasl_type="kerberos"))
    assert (info.value.name, info.value.message) == (
        "smtpd_sasl_type", "unknown SASL server type 'kerberos'")


# --- offered_mechanisms ------------------------------------------------------------------------

@pytest.mark.parametrize("options, expected", [
    ([], ["PLAIN", "LOGIN", "ANONYMOUS"]),
    (["noanonymous"], ["PLAIN", "LOGIN"]),
    (["noanonymous", "noplaintext"], []),
    (["noplaintext"], ["ANONYMOUS"]),
    (["NoAnonymous", ""], ["PLAIN", "LOGIN"]),
    (["noactive"], []),
    (["nodictionary"], []),
])
def test_offered_mechanisms(options: list[str], expected: list[str]) -> None:
    assert offered_mechanisms(["PLAIN", "LOGIN", "ANONYMOUS"], options) == expected


def test_offered_mechanisms_with_params_before_and_after_tls(tmp_path: Path) -> None:
    p = params(tmp_path, smtpd_sasl_security_options="noanonymous, noplaintext",
               smtpd_sasl_tls_security_options="noanonymous")
    assert offered_mechanisms(["PLAIN", "LOGIN"], p.get_list("smtpd_sasl_security_options")) == []
    assert offered_mechanisms(["PLAIN", "LOGIN"],
                              p.get_list("smtpd_sasl_tls_security_options")) == ["PLAIN", "LOGIN"]
    defaults = params(tmp_path)
    assert offered_mechanisms(["PLAIN", "LOGIN"],
                              defaults.get_list("smtpd_sasl_tls_security_options")) == ["PLAIN", "LOGIN"]


def test_unknown_security_option() -> None:
    with pytest.raises(ConfigError, match="unknown SASL security option 'nosuch'"):
        offered_mechanisms(["PLAIN"], ["nosuch"])


# --- check -----------------------------------------------------------------------------------

def test_check_silent_when_auth_disabled(tmp_path: Path) -> None:
    write_conf(tmp_path, "garbage\n")
    assert check(params(tmp_path)) == []


def test_check_reports_bad_file_as_error(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "garbage\n")
    (d,) = check(params(tmp_path, smtpd_sasl_auth_enable="yes"))
    assert (d.severity, d.path, d.lineno, d.message) == ("error", path, 1, "bad line 'garbage'")


def test_check_saslauthd_warnings(tmp_path: Path) -> None:
    path = write_conf(tmp_path, "pwcheck_method: saslauthd\nmech_list: CRAM-MD5\n"
                                f"saslauthd_path: {tmp_path}/run/mux\n")
    found = check(params(tmp_path, smtpd_sasl_auth_enable="yes"))
    assert [f"{d.severity}: {d.render()}" for d in found] == [
        f"warning: {path}:2: mech_list: offers neither PLAIN nor LOGIN, but saslauthd can only "
        "check plaintext mechanisms: no client will be able to log in; mech_list: PLAIN LOGIN",
        f"warning: {path}:3: saslauthd_path: saslauthd socket {tmp_path}/run/mux: does not exist "
        f"(is saslauthd running?); start it with saslauthd -a pam -m {tmp_path}/run",
    ]


def test_check_quiet_when_socket_is_there(tmp_path: Path) -> None:
    run = Path("/tmp") / f"pt-sasl-{tmp_path.name}"
    run.mkdir()
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(run / "mux"))
        write_conf(tmp_path, f"pwcheck_method: saslauthd\nsaslauthd_path: {run}/mux\n")
        assert check(params(tmp_path, smtpd_sasl_auth_enable="yes")) == []
        (run / "mux").unlink()
        (run / "mux").write_text("")
        (d,) = check(params(tmp_path, smtpd_sasl_auth_enable="yes"))
        assert d.message == f"saslauthd socket {run}/mux: is not a socket"
    finally:
        s.close()
        (run / "mux").unlink(missing_ok=True)
        run.rmdir()


def test_main_cf_errors_point_at_the_line(tmp_path: Path) -> None:
    from postillion.config import load_config

    (tmp_path / "main.cf").write_text("# x\nsmtpd_sasl_type = dovcot\n")
    with pytest.raises(ConfigError) as info:
        make_sasl_server(load_config(tmp_path).params())
    assert str(info.value) == (
        f"{tmp_path}/main.cf:2: smtpd_sasl_type: unknown SASL server type 'dovcot'; "
        "use cyrus or dovecot"
    )
