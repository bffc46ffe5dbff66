"""Server side of SCRAM-SHA-1 and SCRAM-SHA-256, with and without channel binding (-PLUS).

Owns: the SCRAM messages (parsing the client's, building the server's), proof checking, the
GS2 channel-binding flag rules, the stored-key format (``ScramCredentials``) and the key
derivation done when a password is set.
Must not import: asyncio, sockets, ssl, the user database, verifiers (the session looks the
stored keys up when the mechanism asks for them with ``NeedSecret``; channel-binding data comes
in as plain bytes).
Follows: RFC 5802 (SCRAM, sections 3, 5, 6, 7 and 9), RFC 7677 (SCRAM-SHA-256), RFC 5056 and
RFC 5929 / RFC 9266 (channel-binding types), RFC 4013 (SASLprep of the password), Cyrus SASL
2.1.28 scram.c (empty initial response → empty challenge, which failures are "bad protocol").

Failure reasons: every malformed message, a GS2 flag that breaks the channel-binding rules and
a channel-binding mismatch are ``bad protocol / cancel`` (Cyrus SASL_BADPROT); a wrong proof,
an unknown user and a user without keys are all ``authentication failure``.  Unknown users get
a made-up but stable salt (keyed with the store's ``Decoy`` key) and the store's iteration count
in the normal server-first message, so the exchange does not tell who exists (RFC 5802
section 9).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from scramp.utils import ScramException, saslprep  # type: ignore[import-untyped]

from postillion.sasl.mechanisms import (
    AUTH_FAILURE,
    BAD_PROTOCOL,
    Authenticated,
    Failed,
    NeedMore,
    NeedSecret,
    Step,
)
from postillion.sasl.mechanisms import SCRAM_MECHANISMS as SCRAM_MECHANISMS  # re-exported

DEFAULT_ITERATIONS = 4096  # RFC 7677 section 4 minimum for SHA-256; RFC 5802 section 9 for SHA-1
SALT_SIZE = 16  # bytes; RFC 7677's example salt is 16 bytes
MAX_ITERATIONS = 10_000_000  # refuse stored values that would make one login take minutes

# mechanism → hashlib name; the -PLUS variants use the same hash.
HASHES: dict[str, str] = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}


def base_mechanism(name: str) -> str:
    """``SCRAM-SHA-256-PLUS`` → ``SCRAM-SHA-256`` (the name the keys are stored under)."""
    name = name.upper()
    return name[: -len("-PLUS")] if name.endswith("-PLUS") else name


@dataclass(frozen=True, slots=True, kw_only=True)
class ScramCredentials:
    """What the server keeps for one user and hash (RFC 5802 section 3): never the password."""

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    def to_text(self) -> str:
        """Dovecot's SCRAM value: ``iterations,salt,StoredKey,ServerKey`` (base64 fields)."""
        b64 = [base64.b64encode(x).decode("ascii") for x in (self.salt, self.stored_key, self.server_key)]
        return f"{self.iterations},{b64[0]},{b64[1]},{b64[2]}"

    @classmethod
    def from_text(cls, text: str) -> ScramCredentials:
        """Parse ``to_text()``; raises ValueError on anything else."""
        parts = text.split(",")
        if len(parts) != 4:
            raise ValueError("SCRAM value must have four comma-separated fields")
        try:
            iterations = int(parts[0])
            salt, stored, server = (base64.b64decode(p, validate=True) for p in parts[1:])
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"bad SCRAM value: {exc}") from None
        if not 1 <= iterations <= MAX_ITERATIONS or not salt or len(stored) != len(server):
            raise ValueError("bad SCRAM value: iteration count, salt or key sizes")
        return cls(salt=salt, iterations=iterations, stored_key=stored, server_key=server)


def normalize_password(password: str) -> bytes:
    """RFC 5802 Normalize(): SASLprep (stored-string rules); a password SASLprep refuses is used
    as its plain UTF-8 bytes, which is what clients that skip SASLprep send anyway."""
    try:
        prepared = saslprep(password)
    except ScramException:
        prepared = password
    return prepared.encode("utf-8", "surrogatepass")


def make_credentials(
    mechanism: str, password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> ScramCredentials:
    """Derive the stored keys for ``mechanism`` (``SCRAM-SHA-1`` or ``SCRAM-SHA-256``)."""
    hash_name = HASHES[base_mechanism(mechanism)]
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"SCRAM iteration count {iterations} is out of range")
    salt = os.urandom(SALT_SIZE) if salt is None else salt
    salted = hashlib.pbkdf2_hmac(hash_name, normalize_password(password), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    return ScramCredentials(
        salt=salt,
        iterations=iterations,
        stored_key=hashlib.new(hash_name, client_key).digest(),
        server_key=hmac.digest(salted, b"Server Key", hash_name),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Decoy:
    """A secret store's answer for a name it has no keys for (unknown user, or keys not set yet).

    The made-up server-first message must look like a real user's: ``iterations`` is the count
    the store gives its users (``postillion_scram_iterations``), and ``key`` is a secret kept with
    the store, so a name's made-up salt is the same in every worker process and after a restart
    (a salt that changed between connections would tell that the name does not exist).
    """

    iterations: int = DEFAULT_ITERATIONS
    key: bytes = field(default=b"", repr=False)


# Used when the store has no decoy key: stable within this process only.
_DUMMY_SECRET = os.urandom(32)


def _dummy_credentials(hash_name: str, username: str, decoy: Decoy) -> ScramCredentials:
    # The hash name is part of the input: a real user's SHA-1 and SHA-256 salts differ.
    msg = f"{hash_name}\0{username}".encode("utf-8", "surrogatepass")
    salt = hmac.digest(decoy.key or _DUMMY_SECRET, msg, "sha256")[:SALT_SIZE]
    size = hashlib.new(hash_name).digest_size
    iterations = decoy.iterations if 1 <= decoy.iterations <= MAX_ITERATIONS else DEFAULT_ITERATIONS
    return ScramCredentials(
        salt=salt, iterations=iterations, stored_key=os.urandom(size), server_key=os.urandom(size)
    )


class Scram:
    """One SCRAM exchange.

    ``channel_bindings`` maps the channel-binding types this connection can prove (e.g.
    ``tls-server-end-point``) to their data; it is empty without TLS.  ``plus_offered`` says
    whether the -PLUS variant of this mechanism was advertised here: a client that answers
    with the ``y`` flag then has been tricked into a downgrade (RFC 5802 section 6).
    """

    def __init__(
        self,
        name: str,
        *,
        channel_bindings: Mapping[str, bytes] | None = None,
        plus_offered: bool = False,
        server_nonce: str | None = None,
    ) -> None:
        self.name = name.upper()
        self.scheme = base_mechanism(self.name)
        self._hash = HASHES[self.scheme]
        self._size = hashlib.new(self._hash).digest_size
        self._plus = self.name.endswith("-PLUS")
        self._bindings = dict(channel_bindings or {})
        self._plus_offered = plus_offered
        self._server_nonce = server_nonce or base64.b64encode(secrets.token_bytes(18)).decode("ascii")
        self._stage = "first"
        self._username: str | None = None
        self._authzid = ""
        self._gs2_header = ""
        self._cbind_data = b""
        self._client_first_bare = ""
        self._client_nonce = ""
        self._nonce = ""
        self._server_first = ""
        self._creds: ScramCredentials | None = None
        self._known = False

    # --- Mechanism protocol ------------------------------------------------------------------

    def start(self, data: bytes | None) -> Step:
        if not data:
            # Cyrus: no (or an empty) initial response is answered with an empty challenge.
            return NeedMore(challenge=b"")
        return self.step(data)

    def step(self, data: bytes) -> Step:
        if self._stage == "first":
            return self._client_first(data)
        if self._stage == "final":
            return self._client_final(data)
        if self._stage == "done":
            # SMTP has no "success with data": the client acknowledges server-final with an
            # empty response (RFC 4954 section 4).
            if data:
                return self._fail(BAD_PROTOCOL)
            self._stage = "over"
            assert self._username is not None
            return Authenticated(authcid=self._username, authzid=self._authzid)
        return self._fail(BAD_PROTOCOL)

    def with_secret(self, secret: object | None) -> Step:
        """The stored keys asked for with NeedSecret (None or a ``Decoy``: unknown user or no
        keys)."""
        if self._stage != "lookup":
            raise RuntimeError("Scram.with_secret: no secret was asked for")
        assert self._username is not None
        if isinstance(secret, ScramCredentials) and len(secret.stored_key) == self._size:
            self._creds, self._known = secret, True
        else:
            decoy = secret if isinstance(secret, Decoy) else Decoy()
            self._creds = _dummy_credentials(self._hash, self._username, decoy)
            self._known = False
        self._nonce = self._client_nonce + self._server_nonce
        salt = base64.b64encode(self._creds.salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt},i={self._creds.iterations}"
        self._stage = "final"
        return NeedMore(challenge=self._server_first.encode("ascii"))

    # --- client-first-message ----------------------------------------------------------------

    def _client_first(self, data: bytes) -> Step:
        text = _text(data)
        if text is None:
            return self._fail(BAD_PROTOCOL)
        parts = text.split(",", 2)
        if len(parts) != 3:
            return self._fail(BAD_PROTOCOL)
        flag, authzid_attr, bare = parts
        if not self._gs2_flag_ok(flag):
            return self._fail(BAD_PROTOCOL)
        if authzid_attr:
            authzid = _saslname(authzid_attr[2:]) if authzid_attr.startswith("a=") else None
            if not authzid:
                return self._fail(BAD_PROTOCOL)
            self._authzid = authzid
        self._gs2_header = f"{flag},{authzid_attr},"
        attrs = bare.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
            # This also refuses a leading "m=": no mandatory extension is supported.
            return self._fail(BAD_PROTOCOL)
        username = _saslname(attrs[0][2:])
        nonce = attrs[1][2:]
        if not username or not _nonce_ok(nonce) or not all(_attr_ok(a) for a in attrs[2:]):
            return self._fail(BAD_PROTOCOL)
        self._username = username
        if self._authzid and self._authzid != username:
            # As for PLAIN: nobody may act for another user.
            return self._fail(AUTH_FAILURE)
        self._client_first_bare = bare
        self._client_nonce = nonce
        self._stage = "lookup"
        return NeedSecret(authcid=username, authzid=self._authzid, scheme=self.scheme)

    def _gs2_flag_ok(self, flag: str) -> bool:
        if flag.startswith("p="):
            cb_name = flag[2:]
            # "p" belongs to the -PLUS mechanism, and only with a binding we can prove here.
            if not self._plus or cb_name not in self._bindings:
                return False
            self._cbind_data = self._bindings[cb_name]
            return True
        if self._plus:
            return False  # -PLUS means channel binding is used
        if flag == "y":
            # The client could bind but thinks we cannot: it was not shown our -PLUS.
            return not self._plus_offered
        return flag == "n"

    # --- client-final-message ----------------------------------------------------------------

    def _client_final(self, data: bytes) -> Step:
        self._stage = "failed"
        text = _text(data)
        if text is None:
            return self._fail(BAD_PROTOCOL)
        head, sep, proof_b64 = text.rpartition(",p=")
        attrs = head.split(",")
        if not sep or len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
            return self._fail(BAD_PROTOCOL)
        if not all(_attr_ok(a) for a in attrs[2:]):
            return self._fail(BAD_PROTOCOL)
        cbind = _b64(attrs[0][2:])
        proof = _b64(proof_b64)
        if cbind is None or proof is None or len(proof) != self._size:
            return self._fail(BAD_PROTOCOL)
        expected = self._gs2_header.encode("utf-8") + self._cbind_data
        if not hmac.compare_digest(cbind, expected):
            return self._fail(BAD_PROTOCOL)  # Cyrus: "Channel bindings mismatch"
        if attrs[1][2:] != self._nonce:
            return self._fail(BAD_PROTOCOL)
        assert self._creds is not None
        auth_message = ",".join((self._client_first_bare, self._server_first, head)).encode("utf-8")
        signature = hmac.digest(self._creds.stored_key, auth_message, self._hash)
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        computed = hashlib.new(self._hash, client_key).digest()
        if not hmac.compare_digest(computed, self._creds.stored_key) or not self._known:
            return self._fail(AUTH_FAILURE)
        server_signature = hmac.digest(self._creds.server_key, auth_message, self._hash)
        self._stage = "done"
        return NeedMore(challenge=b"v=" + base64.b64encode(server_signature))

    def _fail(self, reason: str) -> Failed:
        self._stage = "failed"
        return Failed(reason=reason, username=self._username)


def _text(data: bytes) -> str | None:
    """SCRAM messages are UTF-8 without NUL (RFC 5802 section 7)."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _saslname(value: str) -> str | None:
    """Undo ``=2C`` / ``=3D``; any other ``=`` is an error (RFC 5802 section 5.1)."""
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "=":
            code = value[i + 1 : i + 3]
            if code not in ("2C", "3D"):
                return None
            out.append("," if code == "2C" else "=")
            i += 3
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _nonce_ok(nonce: str) -> bool:
    return bool(nonce) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in nonce)


def _attr_ok(attr: str) -> bool:
    """An extension ``x=value``: ignored, but it must be well formed."""
    return len(attr) >= 2 and attr[0].isascii() and attr[0].isalpha() and attr[1] == "="


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
