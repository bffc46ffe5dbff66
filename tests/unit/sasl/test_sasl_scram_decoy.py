"""SCRAM must not tell unknown users from real ones: the made-up server-first message has the
store's iteration count and a salt that stays the same across worker processes, and differs
between SHA-1 and SHA-256 as a real user's does.  Imported {SCRAM-*} values are checked."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from postillion.sasl.scram import Decoy, Scram
from postillion.sasl.userdb import UserDB, UserDBError
from postillion.sasl.verifiers import UserDBVerifier

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def _server_first(mech: str, user: str, secret: object) -> dict[str, str]:
    m = Scram(mech, server_nonce="S")
    m.start(f"n,,n={user},r=C".encode())
    challenge = m.with_secret(secret)
    return dict(a.split("=", 1) for a in challenge.challenge.decode().split(","))  # type: ignore[union-attr]


def test_decoy_uses_the_store_iterations_and_key() -> None:
    decoy = Decoy(iterations=10000, key=b"k" * 32)
    first = _server_first("SCRAM-SHA-256", "nobody", decoy)
    assert first["i"] == "10000"
    assert first["s"] == _server_first("SCRAM-SHA-256", "nobody", Decoy(iterations=10000, key=b"k" * 32))["s"]
    assert first["s"] != _server_first("SCRAM-SHA-256", "nobody", Decoy(key=b"x" * 32))["s"]
    assert first["s"] != _server_first("SCRAM-SHA-1", "nobody", decoy)["s"]


_SALT_IN_A_NEW_PROCESS = """
import asyncio, sys
from postillion.sasl.scram import Scram
from postillion.sasl.verifiers import UserDBVerifier
secret, _ = asyncio.run(UserDBVerifier(sys.argv[1], scram_iterations=5000)
                        .lookup_secret("nobody", "SCRAM-SHA-256"))
m = Scram("SCRAM-SHA-256", server_nonce="S")
m.start(b"n,,n=nobody,r=C")
print(m.with_secret(secret).challenge.decode())
"""


def test_unknown_user_looks_the_same_from_every_worker_process(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite"
    UserDB(path, hasher=FAST, scram_iterations=5000).add("alice", "pencil")
    runs = {subprocess.run([sys.executable, "-c", _SALT_IN_A_NEW_PROCESS, str(path)], check=True,
                           capture_output=True, text=True).stdout for _ in range(2)}
    assert len(runs) == 1
    (line,) = runs
    assert line.startswith("r=CS,s=") and line.endswith(",i=5000\n")
    alice = UserDB(path).scram_credentials("alice", "SCRAM-SHA-256")
    assert alice is not None and alice.iterations == 5000


def test_verifier_note_only_for_a_known_user_without_keys(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite"
    UserDB(path, hasher=FAST).add_hashed("old", "{PLAIN}pw")  # no SCRAM keys
    verifier = UserDBVerifier(path, scram_iterations=4096)
    unknown = asyncio.run(verifier.lookup_secret("nobody", "SCRAM-SHA-1"))
    known = asyncio.run(verifier.lookup_secret("old", "SCRAM-SHA-1"))
    assert isinstance(unknown[0], Decoy) and unknown[1] is None
    assert known[0] == unknown[0] and known[1] is not None and "postillion user passwd old" in known[1]
    assert asyncio.run(verifier.lookup_secret("nobody", "CRAM-MD5")) == (None, None)


GOOD = ("{SCRAM-SHA-256}4096,cZb3Ojm3Si8DPlCZiKB8FQ==,jfXChmXoWX1ARNTiBbnoF+/knPkxMIFyY/GEyARkqS0=,"
        "vuOl9m7vjAbCnPVZhvt5pnWKAcE0Xp0Vpu6tNg5V5GI=")


@pytest.mark.parametrize("stored", [
    GOOD.replace("4096,", "0,"),
    GOOD.replace("4096,", "99999999,"),
    "{SCRAM-SHA-1}" + GOOD.partition("}")[2],  # SHA-256 sized keys
    GOOD.replace("cZb3", "c!b3"),
])
def test_import_refuses_unusable_scram_values(tmp_path: Path, stored: str) -> None:
    db = UserDB(tmp_path / "users.sqlite", hasher=FAST)
    db.add("alice", "pencil")
    with pytest.raises(UserDBError, match=r"^user bob: SCRAM-SHA-"):
        db.add_hashed("bob", stored)
    assert not db.user_exists("bob")


def test_import_keeps_a_good_scram_value(tmp_path: Path) -> None:
    db = UserDB(tmp_path / "users.sqlite", hasher=FAST)
    db.add_hashed("bob", GOOD)
    creds = db.scram_credentials("bob", "SCRAM-SHA-256")
    assert creds is not None and base64.b64encode(creds.salt) == b"cZb3Ojm3Si8DPlCZiKB8FQ=="
