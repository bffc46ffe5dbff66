"""Dovecot password schemes: fixed hashes made by ``doveadm pw`` (Dovecot 2.3.19), and the
real doveadm when it is installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from postillion.sasl import schemes, unixcrypt

# doveadm pw -s SCHEME -p secret
DOVEADM = {
    "SHA512-CRYPT": "{SHA512-CRYPT}$6$LRcy/qNsvxegcKFi$KypscvRDPoB0imnRK8Ac6QcVbUFpC8sxVGb9MWpOJ"
                    "CXse42Py5Gm3dIC0oGG290PSPZuWSYCEKUNdIFD4pKQX1",
    "ARGON2ID": "{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$+rhcRSbrdPDcGVxzSpOA3w$1rILmFwjVD/+eof"
                "Pf+ZfJGgvaavYMDt4bK9GIXUQDX0",
    "BLF-CRYPT": "{BLF-CRYPT}$2y$05$BogBId3bNvnljorjHdfJfeVbdjqSWSd77wJIQLP2tGSM///HmraYi",
    "SCRAM-SHA-256": "{SCRAM-SHA-256}4096,cZb3Ojm3Si8DPlCZiKB8FQ==,jfXChmXoWX1ARNTiBbnoF+/knPkx"
                     "MIFyY/GEyARkqS0=,vuOl9m7vjAbCnPVZhvt5pnWKAcE0Xp0Vpu6tNg5V5GI=",
    "SSHA512": "{SSHA512}WiJNxT10WBaBamK0CSWyRkcQCEJMylMuYnHhQu66q53NZ07s+TVKH5HjeVhSwp/aHJe8cYLS"
               "/SDZgBjYIpgQpb7DF/Y=",
    "PLAIN": "{PLAIN}secret",
    "SHA256.HEX": "{SHA256.HEX}2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b",
    "PLAIN-MD5": "{PLAIN-MD5}5ebe2294ecd0e0f08eab7690d2a6ee69",
}


@pytest.mark.parametrize("scheme", sorted(DOVEADM))
def test_fixed_hashes_check_the_right_password_only(scheme: str) -> None:
    stored = DOVEADM[scheme]
    assert schemes.verify(stored, "secret") is True
    assert schemes.verify(stored, "Secret") is False
    assert schemes.verify(stored, "") is False


def test_no_prefix_is_crypt_as_passwd_file_default() -> None:
    stored = DOVEADM["SHA512-CRYPT"].removeprefix("{SHA512-CRYPT}")
    assert schemes.split_scheme(stored)[0] == "CRYPT"
    assert schemes.verify(stored, "secret") is True


def test_unsupported_scheme_is_named() -> None:
    with pytest.raises(schemes.SchemeError, match=r"^password scheme CRAM-MD5 is not supported"):
        schemes.check_supported("{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6")
    with pytest.raises(schemes.SchemeError, match=r"unknown encoding \.ZZ"):
        schemes.split_scheme("{SHA256.ZZ}abc")


def test_locked_crypt_hashes_never_match() -> None:
    assert unixcrypt.verify("", "!") is False
    assert unixcrypt.verify("x", "*") is False
    assert unixcrypt.verify("secret", "!" + DOVEADM["SHA512-CRYPT"][14:]) is False


def test_yescrypt_round_trip() -> None:
    stored = unixcrypt.crypt("secret", "$y$j9T$abcdefghijklmnop$")
    assert stored == "$y$j9T$abcdefghijklmnop$3dL1LkYnZM.OVXuVdnnaKVDlLYT92dRwOzDZ5XiVCe."
    assert unixcrypt.verify("secret", stored) is True


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("doveadm") is None, reason="doveadm (dovecot-core) not installed")
@pytest.mark.parametrize("scheme", ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "ARGON2ID",
                                    "ARGON2I", "SSHA512", "SSHA256", "SSHA", "SHA512", "SHA256",
                                    "SHA1", "SMD5", "LDAP-MD5", "PLAIN-MD5", "MD5-CRYPT",
                                    "SCRAM-SHA-1", "SCRAM-SHA-256", "CRYPT", "PLAIN"])
def test_every_scheme_from_real_doveadm(scheme: str) -> None:
    password = "pä ss:wörd"
    stored = subprocess.run(["doveadm", "pw", "-s", scheme, "-p", password], check=True,
                            capture_output=True, text=True).stdout.strip()
    assert stored.startswith("{" + scheme + "}")
    assert schemes.verify(stored, password) is True
    assert schemes.verify(stored, password + "x") is False


# Stored forms Dovecot 2.3.19 accepts besides its own output (each checked with
# `doveadm pw -t STORED -p pencil` → "(verified)"): an encoding guessed from the length when
# there is no .HEX/.B64 suffix, {MD5} holding a PLAIN-MD5 digest, and PLAIN with a suffix.
DOVECOT_ACCEPTS = [
    "{SHA256}13809668fb436386706f67dcb052ed584a04ba16a8c02a17d66d34c30fceda21",
    "{MD5}a8f6830bce790a8a67fc2e84e12093ba",
    "{MD5}qPaDC855Copn/C6E4SCTug==",
    "{PLAIN-MD5}qPaDC855Copn/C6E4SCTug==",
    "{SHA}d2fc512490a15036460b5489401439d6da5407fa",
    "{PLAIN.B64}cGVuY2ls",
]


@pytest.mark.parametrize("stored", DOVECOT_ACCEPTS)
def test_encodings_dovecot_guesses(stored: str) -> None:
    assert schemes.verify(stored, "pencil") is True
    assert schemes.verify(stored, "pencil!") is False


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("doveadm") is None, reason="doveadm (dovecot-core) not installed")
@pytest.mark.parametrize("stored", DOVECOT_ACCEPTS)
def test_encodings_dovecot_guesses_agree_with_doveadm(stored: str) -> None:
    result = subprocess.run(["doveadm", "pw", "-t", stored, "-p", "pencil"], capture_output=True,
                            text=True)
    assert (result.returncode, result.stdout.strip()) == (0, f"{stored} (verified)")


def test_md5_scheme_still_takes_md5_crypt() -> None:
    stored = "{MD5}" + unixcrypt.crypt("pencil", "$1$abcdefgh$")
    assert schemes.verify(stored, "pencil") is True
    assert schemes.verify(stored, "pencil!") is False


@pytest.mark.parametrize("count", ["0", "99999999999", "²"])
def test_scram_iteration_count_out_of_range_is_a_scheme_error(count: str) -> None:
    stored = DOVEADM["SCRAM-SHA-256"].replace("{SCRAM-SHA-256}4096,", "{SCRAM-SHA-256}" + count + ",")
    with pytest.raises(schemes.SchemeError):
        schemes.verify(stored, "secret")
