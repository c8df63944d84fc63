"""CA keys in a PKCS#11 token, named by RFC 7512 URIs, used through python-pkcs11.

``pkcs11:token=estkit;object=estkit-root-1a2b?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/estkit/pin``

- Path attributes (``;``-separated) say where the key is: ``token`` (label), ``serial``,
  ``object`` (key label), ``id`` (CKA_ID, percent-encoded bytes), ``type`` (``private``).
- Query attributes (``&``-separated) say how to get there: ``module-path`` (the PKCS#11 library,
  required: estkit has no default module), and ``pin-value`` or ``pin-source`` (a file holding the
  PIN, ``file:`` URI or plain path; keeps the PIN out of the configuration).

The CA stores one URI per key (``root.uri``, ``issuing.uri``, 0600 like a key, because a URI may
carry ``pin-value``); the private keys are generated inside the token (CKA_SENSITIVE, not
extractable) and never leave it. Signing goes through :class:`estkit.ca.signer.ExternalSigner`.

Sessions: one logged-in session per (module, token) per process, shared by that token's keys and
used under a lock (a PKCS#11 session runs one operation at a time). After a fork (``serve
--workers``) the child re-initialises the library before its first use, as PKCS#11 §5.1 requires.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_to_bytes

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.serialization import load_der_public_key

from estkit.ca.signer import ExternalSigner, SignerError
from estkit.protocol.keys import PublicKey, supported_public_key

SCHEME = "pkcs11:"
# A real URI is a few hundred characters; anything longer is a mistake (or an attack on the
# parser) and is refused before it is split.
MAX_URI_CHARS = 4096
# PINs are short (SoftHSM: at most 255); a pin-source that is a large file is the wrong file.
MAX_PIN_FILE_BYTES = 256
# A token missing at lookup is looked for again this many times, re-initialising the module in
# between (paused 0.1 s, 0.2 s, ...): about 1 s in all before "no such token" is final.
TOKEN_LOOKUP_ATTEMPTS = 5
TOKEN_LOOKUP_PAUSE_SECONDS = 0.1
# CKA_ID of a generated key: random, so that keys of several CAs in one token never collide.
KEY_ID_BYTES = 16
# RFC 7512 §2.3 path attributes; estkit matches on token, serial, object, id and type and accepts
# the rest (they narrow the choice of slot in other tools).
_PATH_ATTRIBUTES = frozenset(
    {
        "token",
        "manufacturer",
        "serial",
        "model",
        "library-manufacturer",
        "library-description",
        "library-version",
        "slot-description",
        "slot-manufacturer",
        "slot-id",
        "object",
        "id",
        "type",
    }
)
_QUERY_ATTRIBUTES = frozenset({"module-path", "pin-value", "pin-source"})
# key type → EC curve names (python-pkcs11 encodes the named-curve parameters).
_CURVES = {"p256": "secp256r1", "p384": "secp384r1", "p521": "secp521r1"}


class Pkcs11Error(SignerError):
    """The token, module, PIN or key of a PKCS#11 URI cannot be used; the message says why."""


def _attributes(text: str, separator: str, known: frozenset[str], unknown: str) -> dict[str, str]:
    """The ``name=value`` attributes of one part of a PKCS#11 URI (names lower-cased, values
    still percent-encoded); ``unknown`` (formatted with the item) refuses a name outside
    ``known`` that is not an ``x-`` extension, and a name given twice is refused too."""
    attributes: dict[str, str] = {}
    for item in filter(None, text.split(separator)):
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or (name not in known and not name.startswith("x-")):
            raise Pkcs11Error(unknown.format(item))
        if name in attributes:
            raise Pkcs11Error(f"the PKCS#11 URI names {name}= twice")
        attributes[name] = value
    return attributes


@dataclass(frozen=True)
class Pkcs11Uri:
    """A parsed RFC 7512 URI (values percent-decoded; ``id`` kept as bytes)."""

    path: dict[str, str] = field(default_factory=dict)
    key_id: bytes | None = None
    query: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Pkcs11Uri:
        text = text.strip()
        if len(text) > MAX_URI_CHARS:
            raise Pkcs11Error(f"the PKCS#11 URI is longer than {MAX_URI_CHARS} characters")
        if not text.startswith(SCHEME):
            raise Pkcs11Error(
                f"not a PKCS#11 URI (RFC 7512): it must start with {SCHEME!r}, e.g. "
                "pkcs11:token=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234"
            )
        body, _, query_text = text[len(SCHEME) :].partition("?")
        path = _attributes(
            body,
            ";",
            _PATH_ATTRIBUTES,
            "unknown PKCS#11 URI path attribute {!r}; use token=, object=, id=, serial=, type= "
            "(RFC 7512 §2.3)",
        )
        key_id = path.pop("id", None)
        query = _attributes(
            query_text,
            "&",
            _QUERY_ATTRIBUTES,
            "unsupported PKCS#11 URI query attribute {!r}; use module-path=, pin-value= or "
            "pin-source=",
        )
        uri = cls(
            path={name: unquote(value) for name, value in path.items()},
            key_id=unquote_to_bytes(key_id) if key_id is not None else None,
            query={name: unquote(value) for name, value in query.items()},
        )
        if "module-path" not in query:
            raise Pkcs11Error(
                "the PKCS#11 URI has no module-path= (the PKCS#11 library, e.g. "
                "module-path=/usr/lib/softhsm/libsofthsm2.so)"
            )
        if "token" not in path and "serial" not in path:
            raise Pkcs11Error("the PKCS#11 URI names no token (token=LABEL or serial=...)")
        if "pin-value" in query and "pin-source" in query:
            raise Pkcs11Error("the PKCS#11 URI has both pin-value= and pin-source=; keep one")
        if "pin-value" not in query and "pin-source" not in query:
            raise Pkcs11Error(
                "the PKCS#11 URI has no PIN: add pin-source=file:/path/to/pin (or pin-value=)"
            )
        return uri

    def __str__(self) -> str:
        safe = "-._~:/@!$'()*+,"  # RFC 7512 pchar minus the separators ; ? & =
        parts = [f"{name}={quote(value, safe=safe)}" for name, value in self.path.items()]
        if self.key_id is not None:
            parts.append("id=" + "".join(f"%{byte:02x}" for byte in self.key_id))
        query = "&".join(f"{name}={quote(value, safe=safe)}" for name, value in self.query.items())
        return SCHEME + ";".join(parts) + (f"?{query}" if query else "")

    def redacted(self) -> str:
        """The URI for messages and logs: the PIN replaced by ``***``."""
        if "pin-value" not in self.query:
            return str(self)
        return str(Pkcs11Uri(self.path, self.key_id, {**self.query, "pin-value": "***"}))

    @property
    def module_path(self) -> str:
        return self.query["module-path"]

    def for_key(self, label: str, key_id: bytes) -> Pkcs11Uri:
        """This token's URI narrowed to one private key."""
        path = {k: v for k, v in self.path.items() if k not in ("object", "type")}
        path.update(object=label, type="private")
        return Pkcs11Uri(path=path, key_id=key_id, query=dict(self.query))

    def token_only(self) -> Pkcs11Uri:
        path = {k: v for k, v in self.path.items() if k not in ("object", "type")}
        return Pkcs11Uri(path=path, key_id=None, query=dict(self.query))

    def pin(self) -> str:
        if "pin-value" in self.query:
            return self.query["pin-value"]
        source = self.query["pin-source"]
        path = Path(source[len("file:") :] if source.startswith("file:") else source)
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_PIN_FILE_BYTES + 1)
        except OSError as exc:
            raise Pkcs11Error(
                f"cannot read the PIN file {path} (pin-source): {exc.strerror or exc}"
            ) from None
        if len(data) > MAX_PIN_FILE_BYTES:
            raise Pkcs11Error(
                f"the PIN file {path} is larger than {MAX_PIN_FILE_BYTES} bytes: not a PIN file"
            )
        return data.decode("utf-8", "replace").rstrip("\r\n")


# -- sessions ----------------------------------------------------------------------------------


class _Session:
    """One logged-in session on one token, reopened after a fork."""

    def __init__(self, uri: Pkcs11Uri) -> None:
        self.uri = uri.token_only()
        self.lock = threading.RLock()
        self._pid = -1
        self._session: Any = None

    def get(self) -> Any:
        """The open session (call with ``lock`` held)."""
        if self._session is None or self._pid != os.getpid():
            self._session = _open_session(self.uri)
            self._pid = os.getpid()
        return self._session

    def forget(self) -> None:
        self._session = None


# Keyed with the PIN too: a URI with another PIN must log in itself (and fail if it is wrong),
# not ride on a session someone else opened.
_SESSIONS: dict[tuple[str, str, str, str], _Session] = {}
_SESSIONS_LOCK = threading.Lock()
_LIBRARIES: dict[str, Any] = {}
# module path → the process in which C_Initialize is in force for it.
_INITIALISED_IN: dict[str, int] = {}


def _session_for(uri: Pkcs11Uri) -> _Session:
    key = (uri.module_path, uri.path.get("token", ""), uri.path.get("serial", ""), uri.pin())
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is None:
            session = _SESSIONS[key] = _Session(uri)
        return session


def _before_fork() -> None:
    """C_Finalize every module before a fork (``serve --workers``).

    A child must not use the parent's PKCS#11 state (PKCS#11 v2.40 §6.7.7). With SoftHSM2, two
    workers each calling C_Finalize + C_Initialize over the state inherited from the parent
    found no token, and once the token's own metadata file was lost. Finalising in the parent
    first leaves nothing to inherit: each process initialises the module afresh at its next use
    (tests/ca/test_pkcs11.py runs two workers and checks the token afterwards).
    """
    for session in _SESSIONS.values():
        session.forget()
    for module_path, library in _LIBRARIES.items():
        if _INITIALISED_IN.pop(module_path, None) == os.getpid():
            with contextlib.suppress(Exception):
                library.finalize()


os.register_at_fork(before=_before_fork)


def _library(module_path: str) -> Any:
    import pkcs11

    library = _LIBRARIES.get(module_path)
    if library is not None:
        if _INITIALISED_IN.get(module_path) != os.getpid():
            try:
                library.initialize()
            except pkcs11.PKCS11Error as exc:
                raise Pkcs11Error(
                    f"cannot initialise the PKCS#11 module {module_path}: {exc}"
                ) from None
            _INITIALISED_IN[module_path] = os.getpid()
        return library
    if not Path(module_path).is_file():
        raise Pkcs11Error(
            f"the PKCS#11 module {module_path} (module-path) does not exist; install the "
            "token's PKCS#11 library (for SoftHSM2: the Debian package softhsm2)"
        )
    try:
        library = pkcs11.lib(module_path)
    except pkcs11.PKCS11Error as exc:
        raise Pkcs11Error(f"cannot load the PKCS#11 module {module_path}: {exc}") from None
    _LIBRARIES[module_path] = library
    _INITIALISED_IN[module_path] = os.getpid()
    return library


def _find_token(library: Any, module_path: str, wanted: dict[str, Any]) -> Any:
    """The token, looked for again after re-initialising the module if it is not there.

    Why: modules such as SoftHSM2 read their tokens at C_Initialize, so a token initialised or
    inserted after the module was loaded in this process is only seen after re-initialising.
    """
    from pkcs11 import exceptions as errors

    for attempt in range(TOKEN_LOOKUP_ATTEMPTS):
        try:
            return library.get_token(**wanted)
        except errors.NoSuchToken:
            if attempt == TOKEN_LOOKUP_ATTEMPTS - 1:
                raise
        time.sleep(TOKEN_LOOKUP_PAUSE_SECONDS * (attempt + 1))
        for key, session in _SESSIONS.items():
            if key[0] == module_path:
                session.forget()  # re-initialising closes every session of the module
        library.reinitialize()
    raise errors.NoSuchToken(str(wanted))  # not reached


def _open_session(uri: Pkcs11Uri) -> Any:
    import pkcs11
    from pkcs11 import exceptions as errors

    library = _library(uri.module_path)
    wanted: dict[str, Any] = {}
    if "token" in uri.path:
        wanted["token_label"] = uri.path["token"]
    if "serial" in uri.path:
        wanted["token_serial"] = uri.path["serial"].encode()
    try:
        token = _find_token(library, uri.module_path, wanted)
    except errors.NoSuchToken:
        labels = ", ".join(sorted(t.label for t in library.get_tokens())) or "none"
        raise Pkcs11Error(
            f"no PKCS#11 token {uri.path.get('token') or uri.path.get('serial')!r} in "
            f"{uri.module_path} (tokens there: {labels}); initialise it first (SoftHSM2: "
            "softhsm2-util --init-token --free --label LABEL)"
        ) from None
    except errors.MultipleTokensReturned:
        raise Pkcs11Error(
            f"several PKCS#11 tokens match {uri.redacted()}; add serial= to the URI"
        ) from None
    except pkcs11.PKCS11Error as exc:
        raise Pkcs11Error(f"cannot reach the PKCS#11 token: {type(exc).__name__} {exc}") from None
    pin = uri.pin()
    try:
        return token.open(user_pin=pin, rw=True)
    except errors.PinIncorrect:
        raise Pkcs11Error(
            f"the PIN for PKCS#11 token {token.label!r} is wrong (pin-value/pin-source); "
            "nothing was changed"
        ) from None
    except errors.UserAlreadyLoggedIn:
        raise Pkcs11Error(
            f"this process is already logged in to PKCS#11 token {token.label!r} with another "
            "PIN; one process uses one PIN per token"
        ) from None
    except errors.PinLocked:
        raise Pkcs11Error(
            f"the PKCS#11 token {token.label!r} is locked after too many wrong PINs; the "
            "security officer must unlock it"
        ) from None
    except pkcs11.PKCS11Error as exc:
        raise Pkcs11Error(
            f"cannot log in to PKCS#11 token {token.label!r}: {type(exc).__name__} {exc}"
        ) from None


def check_token(uri_text: str) -> Pkcs11Uri:
    """Parse ``uri_text`` and log in to its token: raises :class:`Pkcs11Error` with the reason
    (missing module, no such token, wrong PIN) before anything is created."""
    uri = Pkcs11Uri.parse(uri_text)
    session = _session_for(uri)
    with session.lock:
        session.get()
    return uri


# -- keys --------------------------------------------------------------------------------------


def _public_key_of(public_object: Any) -> PublicKey:
    from pkcs11 import KeyType
    from pkcs11.util.ec import encode_ec_public_key
    from pkcs11.util.rsa import encode_rsa_public_key

    if public_object.key_type == KeyType.EC:
        der = encode_ec_public_key(public_object)
    else:
        der = encode_rsa_public_key(public_object)
    key = load_der_public_key(der)
    return supported_public_key(key)


class Pkcs11Signer(ExternalSigner):
    """A CA key inside a PKCS#11 token (see the module docstring)."""

    def __init__(self, uri: Pkcs11Uri, public_key: PublicKey) -> None:
        super().__init__(public_key, self._sign_in_token)
        self.uri = uri
        self._session = _session_for(uri)

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self.uri.redacted()})"

    def _private_key(self, session: Any) -> Any:
        from pkcs11 import ObjectClass
        from pkcs11 import exceptions as errors

        try:
            return session.get_key(
                object_class=ObjectClass.PRIVATE_KEY,
                label=self.uri.path.get("object"),
                id=self.uri.key_id,
            )
        except errors.NoSuchKey:
            raise Pkcs11Error(
                f"the CA key {self.uri.path.get('object')!r} is not in the PKCS#11 token "
                f"({self.uri.redacted()}); it was deleted, or this is another token"
            ) from None
        except errors.MultipleObjectsReturned:
            raise Pkcs11Error(f"several keys in the token match {self.uri.redacted()}") from None

    def _sign_in_token(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        import pkcs11
        from pkcs11 import Mechanism

        with self._session.lock:
            try:
                session = self._session.get()
                key = self._private_key(session)
                if isinstance(self._public_key, ec.EllipticCurvePublicKey):
                    # CKM_ECDSA signs a digest; the raw r||s it returns becomes DER for X.509.
                    digest = hashes.Hash(algorithm)
                    digest.update(data)
                    raw = key.sign(digest.finalize(), mechanism=Mechanism.ECDSA)
                    half = len(raw) // 2
                    return utils.encode_dss_signature(
                        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
                    )
                mechanism = _RSA_MECHANISMS[algorithm.name]
                return bytes(key.sign(data, mechanism=getattr(Mechanism, mechanism)))
            except pkcs11.PKCS11Error as exc:
                self._session.forget()  # reopen next time (token reinserted, etc.)
                raise Pkcs11Error(
                    f"the PKCS#11 token could not sign: {type(exc).__name__} {exc}"
                ) from None

    def destroy(self) -> None:
        """Delete this key pair from the token (undoing a creation that failed later)."""
        from pkcs11 import ObjectClass

        with self._session.lock:
            session = self._session.get()
            for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                for found in session.get_objects(
                    {_attribute("CLASS"): object_class, _attribute("ID"): self.uri.key_id}
                ):
                    found.destroy()


_RSA_MECHANISMS = {
    "sha256": "SHA256_RSA_PKCS",
    "sha384": "SHA384_RSA_PKCS",
    "sha512": "SHA512_RSA_PKCS",
}


def _attribute(name: str) -> Any:
    from pkcs11 import Attribute

    return getattr(Attribute, name)


def load_signer(uri_text: str) -> Pkcs11Signer:
    """The key a stored URI names (it must name one private key and its public key)."""
    from pkcs11 import ObjectClass
    from pkcs11 import exceptions as errors

    uri = Pkcs11Uri.parse(uri_text)
    if uri.key_id is None and "object" not in uri.path:
        raise Pkcs11Error(f"the PKCS#11 URI {uri.redacted()} names no key (object= or id=)")
    session = _session_for(uri)
    with session.lock:
        handle = session.get()
        try:
            public = handle.get_key(
                object_class=ObjectClass.PUBLIC_KEY, label=uri.path.get("object"), id=uri.key_id
            )
        except errors.NoSuchKey:
            raise Pkcs11Error(
                f"the CA key {uri.path.get('object')!r} is not in the PKCS#11 token "
                f"({uri.redacted()}); it was deleted, or this is another token"
            ) from None
        signer = Pkcs11Signer(uri, _public_key_of(public))
        signer._private_key(handle)  # present too, or a clear error now rather than at issuance
    return signer


def generate_key(token_uri: Pkcs11Uri, key_type: str, role: str) -> Pkcs11Signer:
    """Generate a key pair of ``key_type`` in the token; the private half never leaves it."""
    from pkcs11 import Attribute, KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    key_id = secrets.token_bytes(KEY_ID_BYTES)
    label = f"estkit-{role}-{key_id[:4].hex()}"
    private_template = {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.TOKEN: True,
    }
    public_template = {Attribute.VERIFY: True, Attribute.TOKEN: True}
    session = _session_for(token_uri)
    import pkcs11

    with session.lock:
        handle = session.get()
        try:
            if key_type in _CURVES:
                parameters = handle.create_domain_parameters(
                    KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[key_type])},
                    local=True,
                )
                public, _ = parameters.generate_keypair(
                    store=True,
                    label=label,
                    id=key_id,
                    public_template=public_template,
                    private_template=private_template,
                )
            elif key_type.startswith("rsa") and key_type[3:].isdigit():
                public, _ = handle.generate_keypair(
                    KeyType.RSA,
                    int(key_type[3:]),
                    store=True,
                    label=label,
                    id=key_id,
                    public_template=public_template,
                    private_template=private_template,
                )
            else:
                raise Pkcs11Error(f"cannot create a {key_type} key in a PKCS#11 token")
        except pkcs11.PKCS11Error as exc:
            raise Pkcs11Error(
                f"the PKCS#11 token could not create a {key_type} key: {type(exc).__name__} {exc}"
            ) from None
        return Pkcs11Signer(token_uri.for_key(label, key_id), _public_key_of(public))


__all__ = [
    "MAX_PIN_FILE_BYTES",
    "MAX_URI_CHARS",
    "Pkcs11Error",
    "Pkcs11Signer",
    "Pkcs11Uri",
    "check_token",
    "generate_key",
    "load_signer",
]
