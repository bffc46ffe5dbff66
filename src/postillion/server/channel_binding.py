"""TLS channel-binding data of an established server-side TLS connection, for SCRAM -PLUS.

Owns: computing ``tls-exporter`` (RFC 9266), ``tls-server-end-point`` (RFC 5929 section 4) and
``tls-unique`` (RFC 5929 section 3, TLS 1.2 only) from an ``ssl.SSLObject``.
Must not import: sasl, smtp, session (it returns plain ``{type: bytes}`` for the AUTH exchange).
Follows: RFC 5929, RFC 9266, RFC 5056; OpenSSL SSL_export_keying_material(3),
SSL_get_certificate(3).

Python 3.11's ssl module can neither export keying material nor show the server its own
certificate, so both come from OpenSSL through ctypes, on the ``SSL *`` that CPython's
``_ssl._SSLSocket`` object keeps right after its socket weakref (Modules/_ssl.c, unchanged
3.8–3.13).  Nothing is handed to OpenSSL before the object's layout is confirmed without
dereferencing anything: the field after ``ssl`` must hold the address of the connection's own
SSLContext object and the field before it NULL (memory BIO) or one of the weakrefs to the
socket.  Builds whose object header differs (``Py_TRACE_REFS``, free-threaded) are not tried.
Then OpenSSL must confirm the pointer belongs to that context's ``SSL_CTX``.  If anything does
not match, or libssl cannot be reached, the -PLUS data is simply absent and only plain SCRAM
works.
tls-exporter is given for TLS 1.3 only, where RFC 9266 needs no extended-master-secret check;
TLS 1.2 connections get tls-unique and tls-server-end-point.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import ssl
import sys
import sysconfig
import weakref

from cryptography import x509

EXPORTER_LABEL = b"EXPORTER-Channel-Binding"  # RFC 9266 section 2
EXPORTER_LENGTH = 32

_log = logging.getLogger("postillion.smtpd")
_PTR = ctypes.sizeof(ctypes.c_void_p)
# PyObject_HEAD is refcount + type pointer; PySSLSocket then has `Socket` (weakref or NULL),
# `ssl` and `ctx` (the PySSLContext), and PySSLContext has `ctx` (the SSL_CTX) first.
_SOCKET_OFFSET = 2 * _PTR
_SSL_OFFSET = 3 * _PTR
_OWNER_CTX_OFFSET = 4 * _PTR
_CTX_OFFSET = 2 * _PTR
_KNOWN_LAYOUT = (
    (3, 8) <= sys.version_info[:2] <= (3, 13)
    and sys.implementation.name == "cpython"
    and not hasattr(sys, "getobjects")  # Py_TRACE_REFS: two more pointers in every object head
    and not sysconfig.get_config_var("Py_GIL_DISABLED")  # free-threaded: a larger object head
)


class _LibSSL:
    def __init__(self) -> None:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)  # dlsym on it also searches the libssl it links
        self.get_ctx = lib.SSL_get_SSL_CTX
        self.get_ctx.argtypes = [ctypes.c_void_p]
        self.get_ctx.restype = ctypes.c_void_p
        self.export = lib.SSL_export_keying_material
        self.export.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int,
        ]
        self.export.restype = ctypes.c_int
        self.get_certificate = lib.SSL_get_certificate
        self.get_certificate.argtypes = [ctypes.c_void_p]
        self.get_certificate.restype = ctypes.c_void_p
        self.i2d_x509 = lib.i2d_X509
        self.i2d_x509.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        self.i2d_x509.restype = ctypes.c_int


_lib: _LibSSL | None = None
_lib_failed = False


def _libssl() -> _LibSSL | None:
    global _lib, _lib_failed
    if _lib is None and not _lib_failed:
        try:
            _lib = _LibSSL() if _KNOWN_LAYOUT else None
        except (OSError, AttributeError, ImportError) as exc:
            _log.info("channel binding: libssl functions unavailable: %s", exc)
        _lib_failed = _lib is None
    return _lib


def _ssl_pointer(ssl_object: ssl.SSLObject | ssl.SSLSocket, lib: _LibSSL) -> int | None:
    """The connection's ``SSL *``, verified against its SSL_CTX; None when unsure."""
    import _ssl

    inner = getattr(ssl_object, "_sslobj", None)
    context = ssl_object.context
    if (
        type(inner) is not _ssl._SSLSocket  # type: ignore[attr-defined]
        or not isinstance(context, _ssl._SSLContext)
        or type(inner).__basicsize__ < _OWNER_CTX_OFFSET + _PTR
        or _ssl._SSLContext.__basicsize__ < _CTX_OFFSET + _PTR
    ):
        return None
    # Only reads inside the two objects so far; their values decide whether the offsets are right.
    base = id(inner)
    socket_ref = ctypes.c_void_p.from_address(base + _SOCKET_OFFSET).value
    owner_ctx = ctypes.c_void_p.from_address(base + _OWNER_CTX_OFFSET).value
    if owner_ctx != id(context):
        return None
    if isinstance(ssl_object, ssl.SSLSocket):
        if socket_ref not in {id(r) for r in weakref.getweakrefs(ssl_object)}:
            return None
    elif socket_ref is not None:  # an SSLObject works on memory BIOs: no socket
        return None
    ssl_ptr = ctypes.c_void_p.from_address(base + _SSL_OFFSET).value
    ctx_ptr = ctypes.c_void_p.from_address(id(context) + _CTX_OFFSET).value
    if not ssl_ptr or not ctx_ptr or lib.get_ctx(ssl_ptr) != ctx_ptr:
        return None
    return ssl_ptr


def tls_exporter(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
    """RFC 9266 ``tls-exporter`` (TLS 1.3 only here), or None."""
    if ssl_object.version() != "TLSv1.3":
        return None
    lib = _libssl()
    ptr = _ssl_pointer(ssl_object, lib) if lib is not None else None
    if lib is None or ptr is None:
        return None
    out = ctypes.create_string_buffer(EXPORTER_LENGTH)
    if lib.export(ptr, out, EXPORTER_LENGTH, EXPORTER_LABEL, len(EXPORTER_LABEL), None, 0, 0) != 1:
        return None
    return out.raw


def own_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
    """DER of the certificate this end presented, or None."""
    lib = _libssl()
    ptr = _ssl_pointer(ssl_object, lib) if lib is not None else None
    if lib is None or ptr is None:
        return None
    cert = lib.get_certificate(ptr)
    if not cert:
        return None
    size = lib.i2d_x509(cert, None)
    if size <= 0:
        return None
    buf = ctypes.create_string_buffer(size)
    cursor = ctypes.c_void_p(ctypes.addressof(buf))
    if lib.i2d_x509(cert, ctypes.byref(cursor)) != size:
        return None
    return buf.raw


def server_end_point(der: bytes) -> bytes | None:
    """RFC 5929 section 4.1: the certificate hashed with its signature's hash (MD5 and SHA-1
    become SHA-256); None when the signature uses no single hash (e.g. Ed25519)."""
    try:
        algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    except (ValueError, x509.UnsupportedGeneralNameType):
        return None
    if algorithm is None:
        return None
    name = algorithm.name.lower()
    if name in ("md5", "sha1"):
        name = "sha256"
    try:
        return hashlib.new(name, der).digest()
    except ValueError:
        return None


def channel_bindings(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> dict[str, bytes]:
    """Every channel-binding type this connection can prove, by RFC 5056 registry name."""
    if ssl_object is None:
        return {}
    out: dict[str, bytes] = {}
    exporter = tls_exporter(ssl_object)
    if exporter is not None:
        out["tls-exporter"] = exporter
    der = own_certificate(ssl_object)
    end_point = server_end_point(der) if der is not None else None
    if end_point is not None:
        out["tls-server-end-point"] = end_point
    if ssl_object.version() in ("TLSv1.2", "TLSv1.1", "TLSv1"):
        unique = ssl_object.get_channel_binding("tls-unique")
        if unique:
            out["tls-unique"] = unique
    return out
