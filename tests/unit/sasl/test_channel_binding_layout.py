"""server.channel_binding on real TLS connections (memory BIOs, as asyncio uses them, and a
socket pair), and that an object layout it does not recognise gives no -PLUS data without any
pointer reaching OpenSSL."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from typing import Any

import pytest
import trustme

from postillion.server import channel_binding


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext, bytes]:
    ca = trustme.CA()
    cert = ca.issue_cert("mx.test")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(server)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client)
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
    return server, client, der


def _bio_pair() -> tuple[ssl.SSLObject, ssl.SSLObject, bytes]:
    server_ctx, client_ctx, der = _contexts()
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="mx.test")
    for _ in range(10):
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    assert server.version() == "TLSv1.3"
    return server, client, der


def test_memory_bio_connection_gives_exporter_and_end_point() -> None:
    server, client, der = _bio_pair()
    got = channel_binding.channel_bindings(server)
    assert sorted(got) == ["tls-exporter", "tls-server-end-point"]
    assert got["tls-exporter"] == channel_binding.tls_exporter(client)  # both ends agree
    assert len(got["tls-exporter"]) == 32
    assert got["tls-server-end-point"] == hashlib.sha256(der).digest()


def test_socket_connection_gives_exporter() -> None:
    server_ctx, client_ctx, _ = _contexts()
    a, b = socket.socketpair()
    result: dict[str, Any] = {}

    def serve() -> None:
        with server_ctx.wrap_socket(a, server_side=True) as tls:
            result["server"] = channel_binding.tls_exporter(tls)
            tls.recv(1)

    thread = threading.Thread(target=serve)
    thread.start()
    with client_ctx.wrap_socket(b, server_hostname="mx.test") as tls:
        client = channel_binding.tls_exporter(tls)
        tls.send(b"x")
    thread.join()
    assert client is not None and result["server"] == client


class _Spy:
    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self.real(*args)


@pytest.mark.parametrize("offset", ["_OWNER_CTX_OFFSET", "_SOCKET_OFFSET"])
def test_unrecognised_layout_reaches_no_openssl_call(monkeypatch: pytest.MonkeyPatch,
                                                      offset: str) -> None:
    server, _, _ = _bio_pair()
    lib = channel_binding._libssl()
    assert lib is not None
    spy = _Spy(lib.get_ctx)
    monkeypatch.setattr(lib, "get_ctx", spy)
    # as if this build put one more pointer before PySSLSocket's fields
    monkeypatch.setattr(channel_binding, offset, getattr(channel_binding, offset) + 8)
    assert channel_binding.channel_bindings(server) == {}
    assert spy.calls == 0


def test_unknown_interpreter_build_is_not_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    server, _, _ = _bio_pair()
    monkeypatch.setattr(channel_binding, "_KNOWN_LAYOUT", False)
    monkeypatch.setattr(channel_binding, "_lib", None)
    monkeypatch.setattr(channel_binding, "_lib_failed", False)
    assert channel_binding.channel_bindings(server) == {}
