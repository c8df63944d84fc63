"""The RFC 9266 ``tls-exporter`` channel binding of a stdlib ``ssl`` connection (TLS 1.3).

Why this module exists: proof-of-possession linking (RFC 7030 §3.5) binds a CSR to its TLS
connection. Under TLS 1.2 that is ``tls-unique``, which the stdlib gives; under TLS 1.3 it is
``tls-exporter`` (RFC 9266: ``SSL_export_keying_material`` with the label
``EXPORTER-Channel-Binding``, an empty context, 32 bytes), which the stdlib does not give (CPython
issue 82133). Both HTTP stacks estkit uses run on the stdlib ``ssl`` objects (aiohttp's server
through asyncio's ``SSLObject``, httpx's client through ``SSLSocket`` or ``SSLObject``), so the
value is read from *those* objects' own OpenSSL ``SSL *`` with ctypes. docs/tls13-pop.md explains
the whole argument; in short, nothing here is trusted until it is proven:

1. **The right library.** Functions are looked up through the handle of the ``_ssl`` extension
   itself (``dlsym`` on it searches the libraries it is linked against), so they come from the very
   libssl that made the connection; only CPython with OpenSSL 3 is accepted, and the library's own
   ``OpenSSL_version()`` must read exactly :data:`ssl.OPENSSL_VERSION`.
2. **The right pointer, without dereferencing a guess.** ``_ssl._SSLSocket`` (CPython's
   ``PySSLSocket``, identical in 3.11, 3.12 and 3.13) is ``PyObject_HEAD``, ``PyObject *Socket``,
   ``SSL *ssl``, ``PySSLContext *ctx``. Before the ``SSL *`` word is used, the word after it must be
   the address of the object's own ``context`` (a Python object we can take ``id()`` of): a
   different layout fails this check by reading only the object's own memory (bounded by the
   type's ``__basicsize__``), and the connection reports "unavailable".
3. **The right connection.** Before exporting, per connection: ``SSL_version`` is TLS 1.3,
   ``SSL_is_server`` matches ``server_side``, and one of ``SSL_get_finished`` /
   ``SSL_get_peer_finished`` equals what the stdlib itself returns for ``tls-unique`` on that
   connection (it reads the same Finished messages through its own, correct pointer).
4. **The right value, once per process.** At first use a TLS 1.3 handshake between two in-memory
   ``SSLObject`` ends runs through all of the above, and both ends' exporter values must equal
   the value computed independently from the handshake's ``EXPORTER_SECRET`` (written by the
   stdlib's own key log) with the RFC 8446 §7.5 formula. Until that known answer matches,
   :func:`tls_exporter_for` returns None for every connection.

Any failure means "not available" (None), never an exception and never a guessed value; callers
then do what they did before this existed (the client falls back to TLS 1.2 and ``tls-unique``,
the server does not advertise ``tls-exporter``). Calls go through :class:`ctypes.PyDLL`, which
keeps the GIL held, so no Python code (no other thread closing the socket, no SNI callback
swapping the context) runs while a pointer is in use.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import hmac
import logging
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.x509.oid import NameOID

from estkit.fileio import write_private_file_atomic
from estkit.protocol.pop import TLS_EXPORTER_LENGTH

logger = logging.getLogger("estkit.tlsbind")

# RFC 9266 §2: the exporter label of the tls-exporter channel binding (its length, 32 bytes, is
# TLS_EXPORTER_LENGTH, with the wire format in estkit.protocol.pop).
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"
EXPORTER_LENGTH = TLS_EXPORTER_LENGTH
TLS13 = "TLSv1.3"

# OpenSSL's TLS1_3_VERSION, what SSL_version() returns for a TLS 1.3 connection.
_TLS1_3_VERSION = 0x0304
# OpenSSL's EVP_MAX_MD_SIZE: the longest Finished verify_data (a SHA-512 transcript hash).
_MAX_FINISHED_BYTES = 64
# A TLS 1.3 handshake over memory is 2 flights each way; 10 rounds leave room and still end a
# self-check that cannot finish (it then reports why) instead of looping.
_SELF_CHECK_ROUNDS = 10
_SELF_CHECK_NAME = "estkit-tlsbind-self-check.invalid"
# The throwaway certificate of the self-check handshake lives for the check only.
_SELF_CHECK_VALIDITY = dt.timedelta(hours=1)

_WORD = ctypes.sizeof(ctypes.c_void_p)
# PySSLSocket (Modules/_ssl.c, CPython 3.11-3.13): PyObject_HEAD; PyObject *Socket; SSL *ssl;
# PySSLContext *ctx; ... ``object.__basicsize__`` is sizeof(PyObject) of *this* interpreter
# build (16 bytes on 64-bit, more on a free-threaded 3.13t build), so the head is not guessed.
_SSL_OFFSET = object.__basicsize__ + _WORD
_CTX_OFFSET = object.__basicsize__ + 2 * _WORD


@dataclass(frozen=True)
class ExporterSupport:
    """Whether this process can read tls-exporter values, and why (for logs and reports)."""

    available: bool
    reason: str


class _LibSsl:
    """The few libssl functions used, typed, from the library ``_ssl`` is linked against."""

    def __init__(self, lib: ctypes.PyDLL) -> None:
        void_p, size_t, c_int = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
        self.openssl_version = lib.OpenSSL_version
        self.openssl_version.argtypes = [c_int]
        self.openssl_version.restype = ctypes.c_char_p
        self.ssl_version = lib.SSL_version
        self.ssl_version.argtypes = [void_p]
        self.ssl_version.restype = c_int
        self.is_server = lib.SSL_is_server
        self.is_server.argtypes = [void_p]
        self.is_server.restype = c_int
        self.get_finished = lib.SSL_get_finished
        self.get_finished.argtypes = [void_p, void_p, size_t]
        self.get_finished.restype = size_t
        self.get_peer_finished = lib.SSL_get_peer_finished
        self.get_peer_finished.argtypes = [void_p, void_p, size_t]
        self.get_peer_finished.restype = size_t
        self.export = lib.SSL_export_keying_material
        self.export.argtypes = [
            void_p,  # SSL *s
            ctypes.c_char_p,  # unsigned char *out
            size_t,  # size_t olen
            ctypes.c_char_p,  # const char *label
            size_t,  # size_t llen
            ctypes.c_char_p,  # const unsigned char *context
            size_t,  # size_t contextlen
            c_int,  # int use_context
        ]
        self.export.restype = c_int


def _ssl_module_path() -> str | None:
    """The file of the ``_ssl`` extension module, None when it is built into the interpreter."""
    module = sys.modules.get("_ssl")
    path = getattr(module, "__file__", None)
    return path if isinstance(path, str) else None


def _open_libssl() -> tuple[_LibSsl | None, str]:
    """The libssl of the running ``_ssl`` module, or None and why not."""
    if sys.implementation.name != "cpython":
        return None, f"needs CPython (this is {sys.implementation.name})"
    if not ssl.OPENSSL_VERSION.startswith("OpenSSL 3."):
        return None, f"needs OpenSSL 3 (the ssl module uses {ssl.OPENSSL_VERSION})"
    # The _ssl extension's own handle first (dlsym searches its dependencies: exactly the libssl
    # it was linked with); the process's global symbols for an interpreter with _ssl built in.
    candidates: list[str | None] = []
    module_path = _ssl_module_path()
    if module_path is not None:
        candidates.append(module_path)
    candidates.append(None)
    problems: list[str] = []
    for candidate in candidates:
        where = candidate or "the process's global symbols"
        try:
            lib = _LibSsl(ctypes.PyDLL(candidate))
        except (OSError, AttributeError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        found = (lib.openssl_version(0) or b"").decode("ascii", "replace")
        if found != ssl.OPENSSL_VERSION:
            problems.append(f"{where} is {found!r}, not {ssl.OPENSSL_VERSION!r}")
            continue
        return lib, f"libssl of {where}"
    return None, "libssl functions not found (" + "; ".join(problems) + ")"


def _inner(ssl_object: object) -> Any | None:
    """The ``_ssl._SSLSocket`` (CPython's PySSLSocket) of a connection: behind an
    ``ssl.SSLSocket`` / ``ssl.SSLObject``, or given as itself (httpcore's synchronous stream
    hands out ``SSLSocket._sslobj``). None for anything else."""
    expected = getattr(sys.modules.get("_ssl"), "_SSLSocket", None)
    if expected is None:
        return None
    if isinstance(ssl_object, ssl.SSLSocket | ssl.SSLObject):
        ssl_object = getattr(ssl_object, "_sslobj", None)
    return ssl_object if type(ssl_object) is expected else None


def _ssl_pointer(inner: object) -> int | None:
    """The ``SSL *`` of ``inner``, proven by its neighbour, or None (nothing is dereferenced)."""
    if type(inner).__basicsize__ < _CTX_OFFSET + _WORD:
        return None
    base = id(inner)
    context = getattr(inner, "context", None)
    if context is None:
        return None
    if ctypes.c_void_p.from_address(base + _CTX_OFFSET).value != id(context):
        return None
    pointer = ctypes.c_void_p.from_address(base + _SSL_OFFSET).value
    return pointer or None


def _finished(
    function: Callable[[int, ctypes.Array[ctypes.c_char], int], int], pointer: int
) -> bytes:
    """A Finished message's verify_data through ``SSL_get_finished`` or ``..._peer_finished``."""
    buffer = ctypes.create_string_buffer(_MAX_FINISHED_BYTES)
    size = int(function(pointer, buffer, _MAX_FINISHED_BYTES))
    return buffer.raw[: min(size, _MAX_FINISHED_BYTES)]


def _proven_pointer(lib: _LibSsl, inner: Any) -> int | None:
    """The ``SSL *`` of ``inner`` (a ``_ssl._SSLSocket``) once it is shown to be this very
    TLS 1.3 connection."""
    pointer = _ssl_pointer(inner)
    if pointer is None:
        return None
    if lib.ssl_version(pointer) != _TLS1_3_VERSION:
        return None
    if bool(lib.is_server(pointer)) != bool(getattr(inner, "server_side", None)):
        return None
    # The stdlib reads the Finished messages through its own pointer (Python's tls-unique
    # under TLS 1.3, otherwise unused): one of ours must be byte-for-byte the same.
    reference = inner.get_channel_binding("tls-unique")
    if not reference:
        return None
    ours = (_finished(lib.get_finished, pointer), _finished(lib.get_peer_finished, pointer))
    if not any(hmac.compare_digest(reference, value) for value in ours if value):
        return None
    return pointer


def _export(lib: _LibSsl, pointer: int) -> bytes | None:
    out = ctypes.create_string_buffer(EXPORTER_LENGTH)
    # RFC 9266: an empty (zero-length) context, and use_context=1 so it is "empty", not "none".
    status = lib.export(
        pointer, out, EXPORTER_LENGTH, EXPORTER_LABEL, len(EXPORTER_LABEL), b"", 0, 1
    )
    return out.raw if status == 1 else None


# --- the known-answer self-check ------------------------------------------------------------


def _hkdf_expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """RFC 8446 §7.1 HKDF-Expand-Label, the hash taken from the secret's length."""
    algorithm: hashes.HashAlgorithm = hashes.SHA384() if len(secret) == 48 else hashes.SHA256()
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    return HKDFExpand(algorithm, length, info).derive(secret)


def expected_exporter(exporter_secret: bytes) -> bytes:
    """RFC 8446 §7.5 TLS-Exporter(EXPORTER_LABEL, "", 32) from the handshake's exporter secret.

    Independent of OpenSSL's exporter: the self-check (and the tests) compare the two.
    """
    algorithm: hashes.HashAlgorithm = (
        hashes.SHA384() if len(exporter_secret) == 48 else hashes.SHA256()
    )
    empty = hashes.Hash(algorithm)
    empty_hash = empty.finalize()
    derived = _hkdf_expand_label(exporter_secret, EXPORTER_LABEL, empty_hash, len(empty_hash))
    return _hkdf_expand_label(derived, b"exporter", empty_hash, EXPORTER_LENGTH)


def exporter_secret_from_keylog(text: str) -> bytes | None:
    """The ``EXPORTER_SECRET`` of an NSS key log (one handshake), or None."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "EXPORTER_SECRET":
            try:
                return bytes.fromhex(parts[2])
            except ValueError:
                return None
    return None


def _self_check_credentials(directory: Path) -> tuple[Path, Path, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _SELF_CHECK_NAME)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + _SELF_CHECK_VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(_SELF_CHECK_NAME)]), False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    # Scratch files in the check's own temporary directory, deleted when it ends: no fsync
    # (nothing here has to survive a power loss; issue 23).
    write_private_file_atomic(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        durable=False,
    )
    write_private_file_atomic(cert_path, cert_pem, durable=False)
    return cert_path, key_path, cert_pem


def _memory_handshake(
    client: ssl.SSLObject, server: ssl.SSLObject, pipes: tuple[ssl.MemoryBIO, ...]
) -> bool:
    client_in, client_out, server_in, server_out = pipes
    for _round in range(_SELF_CHECK_ROUNDS):
        finished = 0
        for end in (client, server):
            try:
                end.do_handshake()
                finished += 1
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if finished == 2:
            return True
    return False


def _self_check(lib: _LibSsl) -> str | None:
    """None when a fresh TLS 1.3 handshake gives the known answer on both ends, else why not."""
    with tempfile.TemporaryDirectory(prefix="estkit-tlsbind-") as folder:
        directory = Path(folder)
        cert_path, key_path, cert_pem = _self_check_credentials(directory)
        keylog = directory / "keylog.txt"
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.minimum_version = ssl.TLSVersion.TLSv1_3
        server_context.load_cert_chain(cert_path, key_path)
        server_context.keylog_filename = str(keylog)
        client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_context.minimum_version = ssl.TLSVersion.TLSv1_3
        client_context.load_verify_locations(cadata=cert_pem.decode("ascii"))
        pipes = (ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO())
        client = client_context.wrap_bio(pipes[0], pipes[1], server_hostname=_SELF_CHECK_NAME)
        server = server_context.wrap_bio(pipes[2], pipes[3], server_side=True)
        if not _memory_handshake(client, server, pipes):
            return "the self-check handshake did not complete"
        secret = exporter_secret_from_keylog(keylog.read_text("ascii", "replace"))
    if secret is None:
        return "the self-check handshake logged no EXPORTER_SECRET"
    expected = expected_exporter(secret)
    for end, name in ((client, "client"), (server, "server")):
        pointer = _proven_pointer(lib, _inner(end))
        if pointer is None:
            return (
                f"the {name} end's SSL pointer could not be proven (unexpected layout of "
                f"_ssl._SSLSocket in Python {sys.version.split()[0]})"
            )
        value = _export(lib, pointer)
        if value is None or not hmac.compare_digest(value, expected):
            return f"the {name} end's exporter value is not the RFC 8446 known answer"
    return None


_lock = threading.Lock()
_state: tuple[_LibSsl | None, ExporterSupport] | None = None


def _binding() -> tuple[_LibSsl | None, ExporterSupport]:
    global _state
    if _state is not None:
        return _state
    with _lock:
        if _state is None:
            _state = _establish()
            if not _state[1].available:
                logger.info("tls-exporter channel binding unavailable: %s", _state[1].reason)
        return _state


def _establish() -> tuple[_LibSsl | None, ExporterSupport]:
    lib, how = _open_libssl()
    if lib is None:
        return None, ExporterSupport(False, how)
    try:
        problem = _self_check(lib)
    except (OSError, ValueError, AttributeError, ssl.SSLError, ctypes.ArgumentError) as exc:
        problem = f"the self-check failed: {exc}"
    if problem is not None:
        return None, ExporterSupport(False, problem)
    return lib, ExporterSupport(True, f"{how}; self-check matched the RFC 8446 known answer")


def exporter_support() -> ExporterSupport:
    """Whether :func:`tls_exporter_for` can give values in this process (self-checks once)."""
    return _binding()[1]


def tls_exporter_for(ssl_object: object) -> bytes | None:
    """The RFC 9266 tls-exporter value (32 bytes) of a TLS 1.3 connection, else None.

    ``ssl_object``: an :class:`ssl.SSLSocket` or :class:`ssl.SSLObject` after its handshake
    (what aiohttp's ``transport.get_extra_info("ssl_object")`` gives), or the ``_ssl._SSLSocket``
    inside one (what httpx's synchronous network stream gives).
    None for TLS 1.2 (use tls-unique there), no TLS, or when the binding is unavailable here.
    """
    inner = _inner(ssl_object)
    if inner is None:
        return None
    try:
        # Before the first-use self-check, so TLS 1.2 connections never pay for it.
        if inner.version() != TLS13:
            return None
        lib, _support = _binding()
        if lib is None:
            return None
        pointer = _proven_pointer(lib, inner)
        return None if pointer is None else _export(lib, pointer)
    except (OSError, ValueError, AttributeError, ctypes.ArgumentError):
        return None


__all__ = [
    "EXPORTER_LABEL",
    "EXPORTER_LENGTH",
    "ExporterSupport",
    "expected_exporter",
    "exporter_secret_from_keylog",
    "exporter_support",
    "tls_exporter_for",
]
