"""SCRAM (RFC 5802 / RFC 7677 example exchanges, byte for byte), CRAM-MD5 (RFC 2195 example,
Dovecot's stored format), the AuthExchange Lookup step, and the SCRAM/CRAM secrets of the
user database (schema migration from version 1)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
from pathlib import Path

import pytest
import scramp
from argon2 import PasswordHasher

from postillion.sasl import crammd5
from postillion.sasl.exchange import AuthExchange, Challenge, Lookup, Outcome
from postillion.sasl.mechanisms import Authenticated, Failed, NeedMore, NeedSecret
from postillion.sasl.scram import Scram, ScramCredentials, make_credentials
from postillion.sasl.userdb import SCHEMA_VERSION, UserDB

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)

# RFC 7677 section 3 (user "user", password "pencil")
SHA256_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
SHA256_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SHA256_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SHA256_SERVER_FIRST = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                       b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
SHA256_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                       b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
SHA256_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

# RFC 5802 section 5
SHA1_SALT = base64.b64decode("QSXCR+Q6sek8bf92")
SHA1_CLIENT_FIRST = b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
SHA1_SERVER_NONCE = "3rfcNHYJY1ZVvWVs7j"
SHA1_SERVER_FIRST = b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
SHA1_CLIENT_FINAL = b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
SHA1_SERVER_FINAL = b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="

VECTORS = [
    ("SCRAM-SHA-256", SHA256_SALT, SHA256_CLIENT_FIRST, SHA256_SERVER_NONCE, SHA256_SERVER_FIRST,
     SHA256_CLIENT_FINAL, SHA256_SERVER_FINAL),
    ("SCRAM-SHA-1", SHA1_SALT, SHA1_CLIENT_FIRST, SHA1_SERVER_NONCE, SHA1_SERVER_FIRST,
     SHA1_CLIENT_FINAL, SHA1_SERVER_FINAL),
]


@pytest.mark.parametrize("mech, salt, first, snonce, server_first, final, server_final", VECTORS)
def test_rfc_example_exchange(mech: str, salt: bytes, first: bytes, snonce: str,
                              server_first: bytes, final: bytes, server_final: bytes) -> None:
    creds = make_credentials(mech, "pencil", salt=salt, iterations=4096)
    m = Scram(mech, server_nonce=snonce)
    assert m.start(None) == NeedMore(challenge=b"")
    assert m.step(first) == NeedSecret(authcid="user", authzid="", scheme=mech)
    assert m.with_secret(creds) == NeedMore(challenge=server_first)
    assert m.step(final) == NeedMore(challenge=server_final)
    assert m.step(b"") == Authenticated(authcid="user", authzid="")


def test_rfc_example_with_initial_response_and_wrong_password() -> None:
    creds = make_credentials("SCRAM-SHA-256", "pencil2", salt=SHA256_SALT)
    m = Scram("SCRAM-SHA-256", server_nonce=SHA256_SERVER_NONCE)
    assert m.start(SHA256_CLIENT_FIRST) == NeedSecret(authcid="user", authzid="", scheme="SCRAM-SHA-256")
    assert m.with_secret(creds) == NeedMore(challenge=SHA256_SERVER_FIRST)
    assert m.step(SHA256_CLIENT_FINAL) == Failed(reason="authentication failure", username="user")


def test_unknown_user_gets_a_stable_salt_and_fails_at_the_proof() -> None:
    firsts = []
    for _ in range(2):
        m = Scram("SCRAM-SHA-256", server_nonce="abc")
        m.step(b"n,,n=nobody,r=xyz")
        step = m.with_secret(None)
        assert isinstance(step, NeedMore)
        firsts.append(step.challenge)
    assert firsts[0] == firsts[1]
    assert firsts[0].startswith(b"r=xyzabc,s=") and firsts[0].endswith(b",i=4096")
    client = scramp.ScramClient(["SCRAM-SHA-256"], "nobody", "x", c_nonce="xyz")
    client.get_client_first()
    client.set_server_first(firsts[0].decode())
    assert m.step(client.get_client_final().encode()) == Failed(
        reason="authentication failure", username="nobody")


def test_credentials_text_round_trip_and_dovecot_format() -> None:
    creds = make_credentials("SCRAM-SHA-256", "pencil", salt=SHA256_SALT)
    # Dovecot: `doveadm pw -s SCRAM-SHA-256` prints {SCRAM-SHA-256}iter,salt,StoredKey,ServerKey
    assert creds.to_text() == (
        "4096,W22ZaJ0SNY7soEsUEjb6gQ==,WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=,"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=")
    assert ScramCredentials.from_text(creds.to_text()) == creds


def test_dovecot_scram_value_is_accepted() -> None:
    # `doveadm pw -s SCRAM-SHA-256 -p pencil` (Dovecot 2.3), without the {SCHEME} prefix
    value = ("4096,KF4yynpF3uTiIRihA5sqUw==,+e+KsuGSiMsPXuhubLA2VIueXxFTceoI+3LYjzTlQnY=,"
             "nG0io+QbRnaosvzNyPW/HJAeOH8Xcas97CTr8QUgK8g=")
    creds = ScramCredentials.from_text(value)
    assert make_credentials("SCRAM-SHA-256", "pencil", salt=creds.salt) == creds


@pytest.mark.parametrize("first", [
    b"x,,n=user,r=abc",            # bad GS2 flag
    b"n,,m=ext,n=user,r=abc",      # mandatory extension
    b"n,,n=us=er,r=abc",           # bad saslname escape
    b"n,,r=abc,n=user",            # wrong order
    b"n,,n=user,r=a,b",            # "b" is not an attribute
    b"n,,n=user",                  # no nonce
    b"n,,n=,r=abc",                # empty user
    b"p=tls-unique,,n=user,r=abc",  # channel binding with the non-PLUS mechanism
    b"n,,n=user,r=a\xffb",         # not UTF-8
    b"n,,n=user\0,r=abc",          # NUL
])
def test_malformed_client_first_is_bad_protocol(first: bytes) -> None:
    step = Scram("SCRAM-SHA-256").step(first)
    assert isinstance(step, Failed) and step.reason == "bad protocol / cancel"


def test_saslname_escapes() -> None:
    assert Scram("SCRAM-SHA-1").step(b"n,,n=a=2Cb=3Dc,r=abc") == NeedSecret(
        authcid="a,b=c", authzid="", scheme="SCRAM-SHA-1")


def test_authzid_must_be_the_user() -> None:
    assert Scram("SCRAM-SHA-256").step(b"n,a=user,n=user,r=abc") == NeedSecret(
        authcid="user", authzid="user", scheme="SCRAM-SHA-256")
    assert Scram("SCRAM-SHA-256").step(b"n,a=boss,n=user,r=abc") == Failed(
        reason="authentication failure", username="user")


def _run(mech: str, client: scramp.ScramClient, bindings: dict[str, bytes],
         plus_offered: bool = False) -> object:
    creds = make_credentials(mech, "pencil")
    m = Scram(mech, channel_bindings=bindings, plus_offered=plus_offered)
    step = m.step(client.get_client_first().encode())
    if not isinstance(step, NeedSecret):
        return step
    step = m.with_secret(creds)
    assert isinstance(step, NeedMore)
    client.set_server_first(step.challenge.decode())
    step = m.step(client.get_client_final().encode())
    if not isinstance(step, NeedMore):
        return step
    client.set_server_final(step.challenge.decode())  # checks the server signature
    return m.step(b"")


def test_plus_with_scramp_client() -> None:
    cb = ("tls-server-end-point", b"\x01" * 32)
    client = scramp.ScramClient(["SCRAM-SHA-256-PLUS"], "user", "pencil", channel_binding=cb)
    assert _run("SCRAM-SHA-256-PLUS", client, {"tls-server-end-point": b"\x01" * 32}) == \
        Authenticated(authcid="user", authzid="")


def test_plus_binding_mismatch_fails() -> None:
    cb = ("tls-server-end-point", b"\x02" * 32)
    client = scramp.ScramClient(["SCRAM-SHA-256-PLUS"], "user", "pencil", channel_binding=cb)
    assert _run("SCRAM-SHA-256-PLUS", client, {"tls-server-end-point": b"\x01" * 32}) == \
        Failed(reason="bad protocol / cancel", username="user")


def test_plus_with_binding_type_we_cannot_prove() -> None:
    step = Scram("SCRAM-SHA-256-PLUS", channel_bindings={"tls-exporter": b"x"}).step(
        b"p=tls-unique,,n=user,r=abc")
    assert step == Failed(reason="bad protocol / cancel")


@pytest.mark.parametrize("flag", [b"n", b"y"])
def test_plus_requires_the_p_flag(flag: bytes) -> None:
    step = Scram("SCRAM-SHA-256-PLUS", channel_bindings={"tls-exporter": b"x"}).step(
        flag + b",,n=user,r=abc")
    assert step == Failed(reason="bad protocol / cancel")


def test_y_flag_is_a_downgrade_when_plus_was_offered() -> None:
    # scramp's client sends "y" when it could bind but uses the non-PLUS mechanism
    client = scramp.ScramClient(["SCRAM-SHA-256"], "user", "pencil",
                                channel_binding=("tls-server-end-point", b"\x01" * 32))
    first = client.get_client_first()
    assert first.startswith("y,,")
    m = Scram("SCRAM-SHA-256", channel_bindings={"tls-server-end-point": b"\x01" * 32},
              plus_offered=True)
    assert m.step(first.encode()) == Failed(reason="bad protocol / cancel")
    # ...and fine where no -PLUS was offered
    client = scramp.ScramClient(["SCRAM-SHA-256"], "user", "pencil",
                                channel_binding=("tls-server-end-point", b"\x01" * 32))
    assert _run("SCRAM-SHA-256", client, {}, plus_offered=False) == Authenticated(
        authcid="user", authzid="")


def test_non_empty_answer_to_server_final_is_bad_protocol() -> None:
    m = Scram("SCRAM-SHA-256", server_nonce=SHA256_SERVER_NONCE)
    m.step(SHA256_CLIENT_FIRST)
    m.with_secret(make_credentials("SCRAM-SHA-256", "pencil", salt=SHA256_SALT))
    assert isinstance(m.step(SHA256_CLIENT_FINAL), NeedMore)
    assert m.step(b"x") == Failed(reason="bad protocol / cancel", username="user")


@pytest.mark.parametrize("final", [
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",            # no proof
    b"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    b"c=biws,r=rOprNGfwEbeRWgbNEkqOXX,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
])
def test_malformed_client_final(final: bytes) -> None:
    m = Scram("SCRAM-SHA-256", server_nonce=SHA256_SERVER_NONCE)
    m.step(SHA256_CLIENT_FIRST)
    m.with_secret(make_credentials("SCRAM-SHA-256", "pencil", salt=SHA256_SALT))
    assert m.step(final) == Failed(reason="bad protocol / cancel", username="user")


# --- CRAM-MD5 -------------------------------------------------------------------------------

RFC2195_CHALLENGE = b"<1896.697170952@postoffice.reston.mci.net>"


def test_cram_md5_rfc2195_example() -> None:
    secret = crammd5.make_secret("tanstaaftanstaaf")
    assert crammd5.response_digest(secret, RFC2195_CHALLENGE) == "b913a602c7eda7a495b4e6e7334d3890"
    m = crammd5.CramMd5(challenge=RFC2195_CHALLENGE)
    assert m.start(None) == NeedMore(challenge=RFC2195_CHALLENGE)
    assert m.step(b"tim b913a602c7eda7a495b4e6e7334d3890") == NeedSecret(
        authcid="tim", authzid="", scheme="CRAM-MD5")
    assert m.with_secret(secret) == Authenticated(authcid="tim", authzid="")


def test_cram_md5_secret_is_dovecots() -> None:
    # `doveadm pw -s CRAM-MD5 -p tanstaaftanstaaf` (Dovecot 2.3)
    assert crammd5.make_secret("tanstaaftanstaaf").hex() == (
        "d06d4e1b26fccaa4b0b61801132340a354b21152711fb604ca3e035e7015116b")


@pytest.mark.parametrize("password", ["", "x", "p" * 64, "p" * 65, "pässwörd"])
@pytest.mark.parametrize("challenge", [b"", b"<1.2@h>", b"c" * 55, b"c" * 56, b"c" * 200])
def test_cram_md5_matches_hmac(password: str, challenge: bytes) -> None:
    expected = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    assert crammd5.response_digest(crammd5.make_secret(password), challenge) == expected


def test_cram_md5_failures() -> None:
    assert crammd5.CramMd5().start(b"tim") == Failed(reason="bad protocol / cancel")
    m = crammd5.CramMd5(challenge=RFC2195_CHALLENGE)
    m.start(None)
    m.step(b"tim b913a602c7eda7a495b4e6e7334d3890")
    assert m.with_secret(crammd5.make_secret("wrong")) == Failed(
        reason="authentication failure", username="tim")
    m = crammd5.CramMd5(challenge=RFC2195_CHALLENGE)
    m.start(None)
    m.step(b"tim b913a602c7eda7a495b4e6e7334d3890")
    assert m.with_secret(None) == Failed(reason="authentication failure", username="tim")
    assert crammd5.CramMd5().step(b"tim XYZ") == Failed(reason="bad protocol / cancel")


# --- AuthExchange with Lookup ---------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_exchange_scram_success_replies() -> None:
    ex = AuthExchange("SCRAM-SHA-256", offered=["SCRAM-SHA-256", "PLAIN"])
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", "pencil")
    action = ex.start(b64(client.get_client_first().encode()))
    assert action == Lookup(authcid="alice", authzid="", scheme="SCRAM-SHA-256")
    action = ex.looked_up(make_credentials("SCRAM-SHA-256", "pencil"))
    assert isinstance(action, Challenge)
    client.set_server_first(base64.b64decode(action.text).decode())
    action = ex.respond(b64(client.get_client_final().encode()))
    assert isinstance(action, Challenge)
    client.set_server_final(base64.b64decode(action.text).decode())
    action = ex.respond("")
    assert isinstance(action, Outcome)
    assert (str(action.reply), action.success, action.username) == (
        "235 2.7.0 Authentication successful", True, "alice")


def test_exchange_missing_secret_note_and_reply() -> None:
    ex = AuthExchange("SCRAM-SHA-256", offered=["SCRAM-SHA-256"])
    ex.start(b64(b"n,,n=bob,r=abc"))
    action = ex.looked_up(None, note="no SCRAM-SHA-256 secret for user bob")
    assert isinstance(action, Challenge)
    client_final = b"c=biws,r=abc" + base64.b64decode(action.text).split(b",")[0][5:] + b",p=" + \
        base64.b64encode(b"\0" * 32)
    action = ex.respond(b64(client_final))
    assert isinstance(action, Outcome)
    assert str(action.reply) == "535 5.7.8 Error: authentication failed: authentication failure"
    assert action.log_warning == (
        "SASL SCRAM-SHA-256 authentication failed: authentication failure, sasl_username=bob")
    assert action.backend_detail == "no SCRAM-SHA-256 secret for user bob"


def test_exchange_plus_needs_channel_bindings() -> None:
    ex = AuthExchange("SCRAM-SHA-256-PLUS", offered=["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])
    action = ex.start(None)
    assert isinstance(action, Outcome)
    assert str(action.reply) == "535 5.7.8 Error: authentication failed: no mechanism available"
    ex = AuthExchange("SCRAM-SHA-256-PLUS", offered=["SCRAM-SHA-256-PLUS"],
                      channel_bindings={"tls-exporter": b"e" * 32})
    assert ex.start(None) == Challenge(text="")


def test_exchange_backend_failure_during_lookup() -> None:
    ex = AuthExchange("CRAM-MD5", offered=["CRAM-MD5"], hostname="mx.test")
    action = ex.start(None)
    assert isinstance(action, Challenge)
    challenge = base64.b64decode(action.text)
    assert challenge.startswith(b"<") and challenge.endswith(b"@mx.test>")
    assert isinstance(ex.respond(b64(b"tim " + b"0" * 32)), Lookup)
    action = ex.backend_failed("database locked")
    assert str(action.reply) == "454 4.7.0 Temporary authentication failure: generic failure"
    assert action.backend_detail == "database locked"


# --- user database ----------------------------------------------------------------------------

def test_userdb_stores_scram_keys_not_password(tmp_path: Path) -> None:
    db = UserDB(tmp_path / "u.sqlite", hasher=FAST, scram_iterations=5000)
    db.add("alice", "pencil")
    rows = sqlite3.connect(db.path).execute(
        "SELECT name, scheme, value FROM secrets WHERE name != '' ORDER BY scheme").fetchall()
    assert [(n, s) for n, s, _ in rows] == [("alice", "SCRAM-SHA-1"), ("alice", "SCRAM-SHA-256")]
    assert all("pencil" not in v for _, _, v in rows)
    creds = db.scram_credentials("alice", "SCRAM-SHA-256")
    assert creds is not None and creds.iterations == 5000
    assert creds == make_credentials("SCRAM-SHA-256", "pencil", salt=creds.salt, iterations=5000)
    sha1 = db.scram_credentials("alice", "SHA-1")
    assert sha1 is not None and len(sha1.stored_key) == 20
    assert db.cram_md5_secret("alice") is None
    assert db.scram_credentials("nobody", "SCRAM-SHA-256") is None


def test_userdb_cram_md5_opt_in_and_password_change(tmp_path: Path) -> None:
    path = tmp_path / "u.sqlite"
    UserDB(path, hasher=FAST, store_cram_md5=True).add("tim", "tanstaaftanstaaf")
    assert UserDB(path, readonly=True).cram_md5_secret("tim") == crammd5.make_secret("tanstaaftanstaaf")
    old = UserDB(path).scram_credentials("tim", "SCRAM-SHA-256")
    UserDB(path, hasher=FAST).set_password("tim", "new")  # CRAM-MD5 no longer enabled
    assert UserDB(path).cram_md5_secret("tim") is None
    new = UserDB(path).scram_credentials("tim", "SCRAM-SHA-256")
    assert new is not None and new != old
    UserDB(path).delete("tim")
    assert sqlite3.connect(path).execute("SELECT name, scheme FROM secrets").fetchall() == [
        ("", "SCRAM-DECOY-KEY")]


def test_userdb_version_1_is_read_then_migrated(tmp_path: Path) -> None:
    path = tmp_path / "u.sqlite"
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        "INSERT INTO schema_version VALUES (1);"
        "CREATE TABLE users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL,"
        " created TEXT NOT NULL, updated TEXT NOT NULL);")
    con.execute("INSERT INTO users VALUES ('old', ?, 'x', 'x')", (FAST.hash("pw"),))
    con.commit()
    con.close()
    reader = UserDB(path, readonly=True)
    assert reader.verify("old", "pw") is True
    assert reader.scram_credentials("old", "SCRAM-SHA-256") is None
    assert reader.user_exists("old")
    UserDB(path, hasher=FAST).add("new", "pw2")
    assert sqlite3.connect(path).execute("SELECT version FROM schema_version").fetchone() == (
        SCHEMA_VERSION,)
    assert reader.scram_credentials("old", "SCRAM-SHA-256") is None
    assert reader.scram_credentials("new", "SCRAM-SHA-256") is not None
    UserDB(path, hasher=FAST).set_password("old", "pw")
    assert reader.scram_credentials("old", "SCRAM-SHA-256") is not None


# --- which mechanisms make_sasl_server offers ------------------------------------------------

def _server(tmp_path: Path, conf: str | None, **values: str) -> list[str]:
    from postillion.config import Params
    from postillion.sasl.verifiers import make_sasl_server

    if conf is not None:
        (tmp_path / "sasl").mkdir(parents=True)
        (tmp_path / "sasl" / "smtpd.conf").write_text(conf)
    values.setdefault("cyrus_sasl_config_path", "sasl")
    return make_sasl_server(Params.from_dict(values, config_dir=tmp_path)).mechanisms


ALL = "mech_list: CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256-PLUS PLAIN\n"


def test_cram_md5_only_when_enabled_and_listed(tmp_path: Path) -> None:
    assert _server(tmp_path / "a", "pwcheck_method: auxprop\n" + ALL) == [
        "SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "PLAIN"]
    assert _server(tmp_path / "b", "pwcheck_method: auxprop\n" + ALL,
                   postillion_cram_md5_enable="yes") == [
        "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256-PLUS", "PLAIN"]
    assert _server(tmp_path / "c", "pwcheck_method: auxprop\nmech_list: PLAIN\n",
                   postillion_cram_md5_enable="yes") == ["PLAIN"]
    assert "CRAM-MD5" in _server(tmp_path / "d", None, postillion_cram_md5_enable="yes")


def test_saslauthd_never_gets_secret_mechanisms(tmp_path: Path) -> None:
    assert _server(tmp_path / "a", "pwcheck_method: saslauthd\n" + ALL,
                   postillion_cram_md5_enable="yes") == ["PLAIN"]
    assert _server(tmp_path / "b", "pwcheck_method: saslauthd\n") == ["PLAIN", "LOGIN"]


def test_plus_mechanisms_are_not_offered_before_tls() -> None:
    from postillion.sasl.verifiers import offered_mechanisms

    mechs = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN"]
    assert offered_mechanisms(mechs, ["noanonymous"], tls=False) == ["SCRAM-SHA-256", "PLAIN"]
    assert offered_mechanisms(mechs, ["noanonymous", "noplaintext"]) == [
        "SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"]
