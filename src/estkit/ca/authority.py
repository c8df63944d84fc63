"""The certificate authority: its keys and certificates on disk, issuing, CRLs and root rollover.

Why generations on disk: a root key update (RFC 4210 §4.4) replaces several files at once (root,
issuing CA, two cross certificates). Each CA state is written completely into a fresh directory
``generations/gN`` which is renamed into place, and only then does the small pointer file
``authority.json`` switch to it (one atomic ``os.replace``). A crash at any moment leaves either
the old CA or the new one, never a mixture, and old keys stay on disk for CRLs of older leaves.

Layout of ``DIRECTORY``::

    authority.json               {"format": 1, "generation": "g2"}  (the commit point)
    root.pem  cacerts.pem  chain.pem   derived copies for people and servers (0644)
    generations/g1/manifest.json root.pem root.key issuing.pem issuing.key
    generations/g2/...           plus old-with-old.pem old-with-new.pem new-with-old.pem
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from estkit.ca.builders import (
    YEAR_SECONDS,
    Validity,
    authority_key_identifier,
    clamp_validity,
    general_names_for_hosts,
    leaf_key_usage,
    new_serial,
    public_key_of,
    server_ekus,
    sign_ca_certificate,
    sign_root_certificate,
    simple_name,
    subject_key_identifier,
    utc_now,
)
from estkit.ca.crl import DEFAULT_NEXT_UPDATE_SECONDS, RevokedEntry, sign_crl
from estkit.ca.errors import CaError
from estkit.ca.issuance import IssuedNames, sign_leaf, vet_request
from estkit.ca.profiles import Profile
from estkit.ca.signer import Signer, SignerError, sign_certificate
from estkit.fileio import write_file_atomic, write_private_file_atomic
from estkit.protocol.certs import certificates_to_pem, load_pem_certificates
from estkit.protocol.csr import CsrInfo, describe_csr
from estkit.protocol.errors import CsrError, EncodingError
from estkit.protocol.keys import (
    KEY_TYPES,
    PrivateKey,
    PublicKey,
    generate_private_key,
    key_matches_certificate,
    load_private_key,
    private_key_to_pem,
    public_keys_equal,
    supported_public_key,
)

FORMAT_VERSION = 1
POINTER_FILE = "authority.json"
GENERATIONS_DIR = "generations"
MANIFEST_FILE = "manifest.json"
ROOT_CERT_FILE, ROOT_KEY_FILE = "root.pem", "root.key"
ISSUING_CERT_FILE, ISSUING_KEY_FILE = "issuing.pem", "issuing.key"
# A key kept in a PKCS#11 token is stored as its RFC 7512 URI instead (estkit.ca.pkcs11).
KEY_URI_SUFFIX = ".uri"
OLD_WITH_OLD_FILE = "old-with-old.pem"
OLD_WITH_NEW_FILE = "old-with-new.pem"
NEW_WITH_OLD_FILE = "new-with-old.pem"
# Derived, world-readable copies at the top of the directory.
CACERTS_FILE, CHAIN_FILE = "cacerts.pem", "chain.pem"

# Validity periods: a root outlives several issuing CAs, which outlive many leaves; 20/10 years
# are the common choice for private PKIs (and leave BCP-003-03 C14's 80% renewal far away).
ROOT_CA_VALIDITY_SECONDS = 20 * YEAR_SECONDS
ISSUING_CA_VALIDITY_SECONDS = 10 * YEAR_SECONDS
# CA certificates are backdated an hour so that leaves issued right after creation still get
# their full clock-skew backdating without being clamped by the CA's own notBefore.
CA_BACKDATE_SECONDS = 3600
# The server's own TLS certificate gets the same skew allowance as a default profile.
TLS_BACKDATE_SECONDS = 300
# How many earlier generations (rollovers) we walk back through to find older issuing CAs.
MAX_ROLLOVER_HISTORY = 32


class CaExistsError(CaError):
    """``create`` found an existing CA and was not told to replace it."""


class CaNotFoundError(CaError):
    """``load`` found no CA in the directory."""


@dataclass(frozen=True)
class RolloverResult:
    """What a root key update produced (RFC 4210 §4.4 names)."""

    old_with_old: x509.Certificate
    new_with_new: x509.Certificate
    old_with_new: x509.Certificate
    new_with_old: x509.Certificate
    issuing: x509.Certificate | None
    generation: str

    @property
    def old_root(self) -> x509.Certificate:
        return self.old_with_old

    @property
    def new_root(self) -> x509.Certificate:
        return self.new_with_new


@dataclass(frozen=True)
class _Generation:
    """One complete CA state as stored in ``generations/<name>``."""

    name: str
    path: Path
    manifest: dict[str, Any]
    root: x509.Certificate
    root_key: PrivateKey | Signer
    issuing: x509.Certificate | None
    issuing_key: PrivateKey | Signer | None
    old_with_old: x509.Certificate | None = None
    old_with_new: x509.Certificate | None = None
    new_with_old: x509.Certificate | None = None

    @property
    def key_type(self) -> str:
        return str(self.manifest["key_type"])

    @property
    def epoch(self) -> int:
        return int(self.manifest.get("epoch", 1))


def _default_issuing_name(root_common_name: str) -> str:
    if "Root CA" in root_common_name:
        return root_common_name.replace("Root CA", "Issuing CA")
    return (root_common_name + " Issuing CA")[:64]


def _issuing_name_for_epoch(base: str, epoch: int) -> str:
    # A new issuing CA after a rollover gets a distinct name ("… G2") so that TLS stacks building
    # paths by name never confuse it with its predecessor, whose leaves are still in use.
    return base if epoch <= 1 else f"{base[:58]} G{epoch}"


class CertificateAuthority:
    """The signing keys and certificate chain of the EST server's own CA."""

    def __init__(self, directory: Path, generation: _Generation) -> None:
        self._directory = directory
        self._gen = generation
        self._history_cache: tuple[str, list[_Generation]] | None = None

    # ----- creation and loading -------------------------------------------------------------

    @staticmethod
    def exists(directory: Path) -> bool:
        """True when ``directory`` holds a CA (its pointer file exists)."""
        return (Path(directory) / POINTER_FILE).exists()

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        key_type: str = "p384",
        common_name: str = "estkit Root CA",
        with_issuing_ca: bool = True,
        now: datetime | None = None,
        issuing_common_name: str | None = None,
        organization: str | None = None,
        force: bool = False,
        key_uri: str | None = None,
    ) -> CertificateAuthority:
        """Create a root CA (and by default an issuing CA under it) in ``directory``.

        Refuses to replace an existing CA unless ``force``; even then the old generation stays
        on disk (keys are never deleted by estkit), only the pointer moves. With ``key_uri`` (an
        RFC 7512 PKCS#11 URI naming a token) the keys are created in that token and only their
        URIs are stored.
        """
        directory = Path(directory)
        if key_type not in KEY_TYPES:
            raise CaError(f"unknown CA key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")
        if cls.exists(directory) and not force:
            raise CaExistsError(
                f"a certificate authority already exists in {directory}; refusing to replace it",
                hint="force it to create a new one; the old keys are kept on disk",
                params=("force",),
            )
        now = utc_now(now)
        try:
            root_name = simple_name(common_name, organization)
            issuing_base = issuing_common_name or _default_issuing_name(common_name)
            issuing_name = simple_name(issuing_base, organization)
        except ValueError as exc:
            raise CaError(str(exc)) from None
        keys = _KeyMaker.for_uri(key_uri)
        with keys:
            authority = cls._create(
                directory,
                keys,
                key_type,
                now,
                root_name,
                issuing_name,
                issuing_base,
                organization,
                with_issuing_ca,
            )
        return authority

    @classmethod
    def _create(
        cls,
        directory: Path,
        keys: _KeyMaker,
        key_type: str,
        now: datetime,
        root_name: x509.Name,
        issuing_name: x509.Name,
        issuing_base: str,
        organization: str | None,
        with_issuing_ca: bool,
    ) -> CertificateAuthority:
        root_key = keys.new(key_type, "root")
        root = sign_root_certificate(
            name=root_name,
            key=root_key,
            validity=_ca_validity(now, ROOT_CA_VALIDITY_SECONDS, None),
            path_length=None,
        )
        issuing = issuing_key = None
        if with_issuing_ca:
            issuing_key = keys.new(key_type, "issuing")
            issuing = _sign_issuing(issuing_name, issuing_key, root, root_key, now)
        manifest = {
            "format": FORMAT_VERSION,
            "kind": "create",
            "created_at": now.isoformat(),
            "key_type": key_type,
            "epoch": 1,
            "issuing_common_name": issuing_base,
            "organization": organization,
            "previous_generation": None,
        }
        files: dict[str, bytes] = {
            ROOT_CERT_FILE: certificates_to_pem([root]),
            **_key_file(ROOT_KEY_FILE, root_key),
        }
        if issuing is not None and issuing_key is not None:
            files[ISSUING_CERT_FILE] = certificates_to_pem([issuing])
            files.update(_key_file(ISSUING_KEY_FILE, issuing_key))
        generation = _commit_generation(directory, manifest, files, expected_current=None)
        keys.keep()
        authority = cls(directory, generation)
        authority._write_derived_files()
        return authority

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """Load the current CA generation from ``directory``."""
        directory = Path(directory)
        name = _read_pointer(directory)
        authority = cls(directory, _load_generation(directory, name))
        # Repair the derived copies if a crash hit between the commit and their refresh.
        with contextlib.suppress(OSError):
            authority._write_derived_files(only_if_changed=True)
        return authority

    # ----- what the CA is -------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def generation(self) -> str:
        """Name of the CA generation in use (changes with each rollover)."""
        return self._gen.name

    @property
    def key_type(self) -> str:
        return self._gen.key_type

    @property
    def root_certificate(self) -> x509.Certificate:
        """The current root (NewWithNew after a rollover)."""
        return self._gen.root

    @property
    def root_certificates(self) -> list[x509.Certificate]:
        """Every self-signed root clients may trust: the current one, and the old one during a
        rollover."""
        roots = [self._gen.root]
        if self._gen.old_with_old is not None:
            roots.append(self._gen.old_with_old)
        return roots

    @property
    def issuer_certificate(self) -> x509.Certificate:
        """The certificate whose key signs leaves (the issuing CA, or the root without one)."""
        return self._gen.issuing if self._gen.issuing is not None else self._gen.root

    @property
    def chain(self) -> list[x509.Certificate]:
        """What follows a leaf: issuer → … → root."""
        if self._gen.issuing is None:
            return [self._gen.root]
        return [self._gen.issuing, self._gen.root]

    @property
    def cacerts(self) -> list[x509.Certificate]:
        """What ``/cacerts`` serves (RFC 7030 §4.1.3): root(s), rollover certificates, issuer."""
        gen = self._gen
        certs: list[x509.Certificate] = [gen.root]
        for extra in (gen.old_with_old, gen.new_with_old, gen.old_with_new):
            if extra is not None:
                certs.append(extra)
        if gen.issuing is not None:
            certs.append(gen.issuing)
        if gen.old_with_old is not None:
            # During a rollover the previous issuing CA still anchors every certificate issued
            # before it, the server's own TLS certificate included: clients need it to build
            # those chains (RFC 7030 §4.1.3 "any intermediates").
            previous = self._history()[:1]
            if previous and previous[0].issuing is not None:
                certs.append(previous[0].issuing)
        return certs

    @property
    def rollover_certificates(self) -> dict[str, x509.Certificate] | None:
        """OldWithOld/OldWithNew/NewWithOld/NewWithNew while a rollover is current, else None."""
        gen = self._gen
        if gen.old_with_old is None or gen.old_with_new is None or gen.new_with_old is None:
            return None
        return {
            "old_with_old": gen.old_with_old,
            "old_with_new": gen.old_with_new,
            "new_with_old": gen.new_with_old,
            "new_with_new": gen.root,
        }

    @property
    def issuers_by_generation(self) -> dict[str, x509.Certificate]:
        """Each generation's leaf-signing certificate, current first: a CRL must be signed by
        the issuer of the certificates it lists (RFC 5280 §5), so every generation with
        still-valid leaves needs its own."""
        issuers = {self._gen.name: self.issuer_certificate}
        for generation in self._history():
            issuers[generation.name] = generation.issuing or generation.root
        return issuers

    def issuer_key_for(self, generation: str) -> PrivateKey | Signer:
        """The leaf-signing key of ``generation`` (a key of :attr:`issuers_by_generation`):
        what certifies that generation's delegated OCSP responder."""
        if generation == self._gen.name:
            return self._issuer_key
        for earlier in self._history():
            if earlier.name == generation:
                return earlier.issuing_key or earlier.root_key
        raise CaError(f"no CA generation {generation!r} in {self._directory}")

    @property
    def previous_issuers(self) -> list[x509.Certificate]:
        """Issuing CAs of earlier generations (newest first): their leaves are still valid and
        a server verifying client certificates must still accept them."""
        return list(self.issuers_by_generation.values())[1:]

    @property
    def root_path(self) -> Path:
        """``root.pem``: the current root alone, for people and `openssl verify -CAfile`."""
        return self._directory / ROOT_CERT_FILE

    @property
    def cacerts_path(self) -> Path:
        """``cacerts.pem``: the PEM bundle of :attr:`cacerts`."""
        return self._directory / CACERTS_FILE

    @property
    def chain_path(self) -> Path:
        """``chain.pem``: :attr:`chain` as PEM."""
        return self._directory / CHAIN_FILE

    # ----- issuing --------------------------------------------------------------------------

    @property
    def reserved_names(self) -> frozenset[str]:
        """The CNs of every CA certificate of this server (roots, issuing CAs and rollover
        certificates of all generations), lower case: no leaf may be named like its CA."""
        certificates = [*self.cacerts, *self.root_certificates]
        for generation in [self._gen, *self._history()]:
            certificates += [
                cert
                for cert in (
                    generation.root,
                    generation.issuing,
                    generation.old_with_old,
                    generation.old_with_new,
                    generation.new_with_old,
                )
                if cert is not None
            ]
        names = set()
        for certificate in certificates:
            for attribute in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
                if isinstance(attribute.value, str):
                    names.add(attribute.value.lower())
        return frozenset(names)

    def vet(
        self, info: CsrInfo, profile: Profile, *, client_subject: x509.Name | None = None
    ) -> IssuedNames:
        """The names a certificate for ``info`` would carry under ``profile`` (see
        :func:`estkit.ca.issuance.vet_request`); raises ``CsrError``/``CsrPolicyError``."""
        return vet_request(
            info, profile, reserved_names=self.reserved_names, client_subject=client_subject
        )

    def issue(
        self,
        request: CsrInfo | x509.CertificateSigningRequest,
        profile: Profile,
        *,
        names: IssuedNames | None = None,
        public_key: PublicKey | None = None,
        serial: int | None = None,
        now: datetime | None = None,
        crl_url: str | None = None,
        extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
    ) -> x509.Certificate:
        """Sign an end-entity certificate for ``request`` under ``profile`` (plus ``extensions``).

        ``names`` are what :meth:`vet` returned for this request (vetted here when omitted);
        subject and SAN are built from them only. ``public_key`` replaces the CSR's key for
        server-generated keys (serverkeygen). Raises ``CsrError``/``CsrPolicyError``
        (estkit.protocol) for a request the profile refuses and :class:`CaError` when the CA
        itself cannot issue (e.g. it has expired).
        """
        now = utc_now(now)
        info = request if isinstance(request, CsrInfo) else describe_csr(request)
        if names is None:
            names = self.vet(info, profile)
        key = public_key if public_key is not None else info.public_key
        if key is None:
            raise CsrError("the request has no public key to certify")
        validity = self._leaf_validity(now, profile.validity_seconds, profile.backdate_seconds)
        return sign_leaf(
            names=names,
            public_key=key,
            ekus=profile.eku_oids,
            issuer_certificate=self.issuer_certificate,
            issuer_key=self._issuer_key,
            validity=validity,
            serial=serial,
            crl_url=crl_url,
            extensions=extensions,
        )

    def issue_tls_server_certificate(
        self,
        public_key: PublicKey | PrivateKey,
        hostnames: Sequence[str],
        *,
        validity_seconds: int,
        now: datetime | None = None,
        extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
    ) -> x509.Certificate:
        """A TLS server certificate for the EST server itself (RSA or ECDSA key).

        SAN = the host names (IP literals become IP SANs so ``https://127.0.0.1`` verifies);
        CN = the first name; EKU serverAuth + clientAuth.
        """
        hostnames = [host.strip() for host in hostnames if host.strip()]
        if not hostnames:
            raise CaError("a TLS server certificate needs at least one host name or IP address")
        try:
            names = general_names_for_hosts(hostnames)
        except ValueError as exc:
            raise CaError(str(exc)) from None
        now = utc_now(now)
        key = public_key_of(public_key)
        subject = simple_name(hostnames[0]) if len(hostnames[0]) <= 64 else x509.Name([])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.issuer_certificate.subject)
            .public_key(key)
            .serial_number(new_serial())
        )
        validity = self._leaf_validity(now, validity_seconds, TLS_BACKDATE_SECONDS)
        builder = (
            builder.not_valid_before(validity.not_before)
            .not_valid_after(validity.not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(leaf_key_usage(key), critical=True)
            .add_extension(server_ekus(), critical=False)
            .add_extension(subject_key_identifier(key), critical=False)
            .add_extension(authority_key_identifier(self.issuer_certificate), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=len(subject) == 0)
        )
        for extension in extensions:  # AIA/CDP (estkit.ca.pointers)
            builder = builder.add_extension(extension.value, critical=extension.critical)
        return sign_certificate(builder, self._issuer_key)

    def build_crl(
        self,
        revoked: Iterable[RevokedEntry],
        *,
        now: datetime | None = None,
        next_update_seconds: int = DEFAULT_NEXT_UPDATE_SECONDS,
        issuer: x509.Certificate | None = None,
    ) -> bytes:
        """A DER CRL signed by the current issuer (or by an earlier ``issuer`` of ours, for
        leaves issued before a rollover)."""
        now = utc_now(now)
        if issuer is None or issuer == self.issuer_certificate:
            return sign_crl(
                self.issuer_certificate,
                self._issuer_key,
                revoked,
                now=now,
                next_update_seconds=next_update_seconds,
            )
        for generation in self._history():
            certificate = generation.issuing or generation.root
            key = generation.issuing_key or generation.root_key
            if certificate == issuer:
                return sign_crl(
                    certificate, key, revoked, now=now, next_update_seconds=next_update_seconds
                )
        raise CaError(
            f"'{issuer.subject.rfc4514_string()}' is not an issuing CA of this authority; "
            "cannot sign a CRL for it"
        )

    # ----- root key update ------------------------------------------------------------------

    def rollover(
        self, *, now: datetime | None = None, key_type: str | None = None
    ) -> RolloverResult:
        """RFC 4210 §4.4 root key update.

        Creates a new root key under the same subject name (NewWithNew), OldWithNew (the old
        public key signed by the new key: holders of the new root can still validate old chains)
        and NewWithOld (the new public key signed by the old key: holders of the old root can
        validate new chains), and a new issuing CA under the new root. Persisted atomically; from
        then on this object (and any later ``load``) issues with the new key.
        """
        now = utc_now(now)
        old = self._gen
        key_type = key_type or old.key_type
        if key_type not in KEY_TYPES:
            raise CaError(f"unknown CA key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")
        old_root = old.root
        old_end = old_root.not_valid_after_utc
        if now >= old_end:
            raise CaError(
                f"the root CA expired on {old_end.isoformat()}; a key update needs a valid old "
                "root",
                hint="create a new CA instead",
                params=("force_init",),
            )
        keys = _KeyMaker.like(old.root_key)
        with keys:
            return self._rollover(old, keys, key_type, now)

    def _rollover(
        self, old: _Generation, keys: _KeyMaker, key_type: str, now: datetime
    ) -> RolloverResult:
        old_root = old.root
        old_end = old_root.not_valid_after_utc
        name = old_root.subject
        new_key = keys.new(key_type, "root")
        new_validity = _ca_validity(now, ROOT_CA_VALIDITY_SECONDS, None)
        # Clients tell OldWithOld from NewWithNew by notBefore (estkit.protocol.rollover, and
        # libest does the same), so the new root must start strictly later, even when a rollover
        # follows creation within the same second (as in tests and demos).
        earliest = old_root.not_valid_before_utc + timedelta(seconds=1)
        if new_validity.not_before < earliest:
            new_validity = Validity(earliest, new_validity.not_after)
        new_root = sign_root_certificate(
            name=name, key=new_key, validity=new_validity, path_length=None
        )
        old_public_key = supported_public_key(old_root.public_key())  # our root: RSA or EC
        old_ski = subject_key_identifier(old_public_key)
        new_ski = subject_key_identifier(new_key.public_key())
        # RFC 4210 §4.4: OldWithNew keeps the old certificate's validity period; NewWithOld
        # starts with the new key and ends when the old key does.
        old_with_new = sign_ca_certificate(
            subject=name,
            public_key=old_public_key,
            issuer_name=name,
            issuer_key=new_key,
            issuer_key_identifier=x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                new_ski
            ),
            validity=Validity(old_root.not_valid_before_utc, old_end),
            path_length=None,
        )
        new_with_old = sign_ca_certificate(
            subject=name,
            public_key=new_key.public_key(),
            issuer_name=name,
            issuer_key=old.root_key,
            issuer_key_identifier=x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                old_ski
            ),
            validity=Validity(new_validity.not_before, old_end),
            path_length=None,
        )
        epoch = old.epoch + 1
        manifest = dict(old.manifest)
        manifest.update(
            kind="rollover",
            created_at=now.isoformat(),
            key_type=key_type,
            epoch=epoch,
            previous_generation=old.name,
        )
        files: dict[str, bytes] = {
            ROOT_CERT_FILE: certificates_to_pem([new_root]),
            **_key_file(ROOT_KEY_FILE, new_key),
            OLD_WITH_OLD_FILE: certificates_to_pem([old_root]),
            OLD_WITH_NEW_FILE: certificates_to_pem([old_with_new]),
            NEW_WITH_OLD_FILE: certificates_to_pem([new_with_old]),
        }
        issuing = None
        if old.issuing is not None:
            base = str(manifest.get("issuing_common_name") or _default_issuing_name("estkit"))
            try:
                issuing_name = simple_name(
                    _issuing_name_for_epoch(base, epoch), manifest.get("organization")
                )
            except ValueError as exc:
                raise CaError(str(exc)) from None
            issuing_key = keys.new(key_type, "issuing")
            issuing = _sign_issuing(issuing_name, issuing_key, new_root, new_key, now)
            files[ISSUING_CERT_FILE] = certificates_to_pem([issuing])
            files.update(_key_file(ISSUING_KEY_FILE, issuing_key))
        self._gen = _commit_generation(self._directory, manifest, files, expected_current=old.name)
        keys.keep()
        self._write_derived_files()
        return RolloverResult(
            old_with_old=old_root,
            new_with_new=new_root,
            old_with_new=old_with_new,
            new_with_old=new_with_old,
            issuing=issuing,
            generation=self._gen.name,
        )

    # ----- internals ------------------------------------------------------------------------

    @property
    def _issuer_key(self) -> PrivateKey | Signer:
        return self._gen.issuing_key if self._gen.issuing_key is not None else self._gen.root_key

    def _leaf_validity(self, now: datetime, validity_seconds: int, backdate: int) -> Validity:
        try:
            return clamp_validity(
                now, validity_seconds, backdate_seconds=backdate, issuer=self.issuer_certificate
            )
        except ValueError as exc:
            raise CaError(str(exc)) from None

    def _history(self) -> list[_Generation]:
        """Earlier generations linked by rollovers, newest first (loaded once, bounded)."""
        if self._history_cache is not None and self._history_cache[0] == self._gen.name:
            return self._history_cache[1]
        result: list[_Generation] = []
        previous = self._gen.manifest.get("previous_generation")
        while previous and len(result) < MAX_ROLLOVER_HISTORY:
            try:
                generation = _load_generation(self._directory, str(previous))
            except CaError:
                break
            result.append(generation)
            previous = generation.manifest.get("previous_generation")
        self._history_cache = (self._gen.name, result)
        return result

    def _write_derived_files(self, *, only_if_changed: bool = False) -> None:
        wanted = {
            ROOT_CERT_FILE: certificates_to_pem([self.root_certificate]),
            CACERTS_FILE: certificates_to_pem(self.cacerts),
            CHAIN_FILE: certificates_to_pem(self.chain),
        }
        for name, data in wanted.items():
            path = self._directory / name
            if only_if_changed and path.exists() and path.read_bytes() == data:
                continue
            write_file_atomic(path, data)


def _ca_validity(now: datetime, seconds: int, issuer: x509.Certificate | None) -> Validity:
    not_before = (now - timedelta(seconds=CA_BACKDATE_SECONDS)).replace(microsecond=0)
    not_after = (now + timedelta(seconds=seconds)).replace(microsecond=0)
    if issuer is not None:
        not_before = max(not_before, issuer.not_valid_before_utc)
        not_after = min(not_after, issuer.not_valid_after_utc)
    return Validity(not_before, not_after)


def _sign_issuing(
    name: x509.Name,
    key: PrivateKey | Signer,
    root: x509.Certificate,
    root_key: PrivateKey | Signer,
    now: datetime,
) -> x509.Certificate:
    # pathLen 0: the issuing CA signs leaves only, never another CA.
    return sign_ca_certificate(
        subject=name,
        public_key=key.public_key(),
        issuer_name=root.subject,
        issuer_key=root_key,
        issuer_key_identifier=authority_key_identifier(root),
        validity=_ca_validity(now, ISSUING_CA_VALIDITY_SECONDS, root),
        path_length=0,
    )


def _read_pointer(directory: Path) -> str:
    pointer = directory / POINTER_FILE
    try:
        data = json.loads(pointer.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CaNotFoundError(
            f"no certificate authority in {directory} ({POINTER_FILE} is missing); create one "
            "with 'estkit server init'"
        ) from None
    except (OSError, ValueError) as exc:
        raise CaError(f"cannot read {pointer}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        raise CaError(
            f"{pointer} has an unsupported format ({data!r}); it was written by another estkit "
            "version"
        )
    name = data.get("generation")
    if not isinstance(name, str) or not name.startswith("g") or not name[1:].isdigit():
        raise CaError(f"{pointer} names no valid generation: {data!r}")
    return name


def _load_generation(directory: Path, name: str) -> _Generation:
    path = directory / GENERATIONS_DIR / name
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        root = _read_cert(path / ROOT_CERT_FILE)
        root_key = _read_key(path / ROOT_KEY_FILE, root)  # or its .uri (a PKCS#11 key)
        issuing = issuing_key = None
        if (path / ISSUING_CERT_FILE).exists():
            issuing = _read_cert(path / ISSUING_CERT_FILE)
            issuing_key = _read_key(path / ISSUING_KEY_FILE, issuing)
        extras = {
            filename: _read_cert(path / filename) if (path / filename).exists() else None
            for filename in (OLD_WITH_OLD_FILE, OLD_WITH_NEW_FILE, NEW_WITH_OLD_FILE)
        }
    except (OSError, ValueError) as exc:
        raise CaError(f"the CA generation {path} is unreadable or damaged: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("key_type") not in KEY_TYPES:
        raise CaError(f"{path / MANIFEST_FILE} is not a valid CA manifest")
    return _Generation(
        name=name,
        path=path,
        manifest=manifest,
        root=root,
        root_key=root_key,
        issuing=issuing,
        issuing_key=issuing_key,
        old_with_old=extras[OLD_WITH_OLD_FILE],
        old_with_new=extras[OLD_WITH_NEW_FILE],
        new_with_old=extras[NEW_WITH_OLD_FILE],
    )


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return load_pem_certificates(path.read_bytes())[0]
    except EncodingError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _read_key(path: Path, certificate: x509.Certificate) -> PrivateKey | Signer:
    uri_path = path.with_suffix(KEY_URI_SUFFIX)
    if uri_path.exists():
        from estkit.ca.pkcs11 import load_signer

        try:
            signer = load_signer(uri_path.read_text(encoding="utf-8"))
        except SignerError as exc:
            raise CaError(f"{uri_path}: {exc}") from None
        if not public_keys_equal(signer.public_key(), certificate.public_key()):
            raise CaError(
                f"{uri_path} names a token key that is not the key of the certificate next to it"
            )
        return signer
    key = load_private_key(path.read_bytes())
    if not key_matches_certificate(key, certificate):
        raise ValueError(f"{path} does not hold the private key of the certificate next to it")
    return key


def _key_file(key_file: str, key: PrivateKey | Signer) -> dict[str, bytes]:
    """The file a generation stores for ``key``: the PEM key, or the URI of a token key."""
    uri = getattr(key, "uri", None)
    if uri is not None:
        return {Path(key_file).with_suffix(KEY_URI_SUFFIX).name: f"{uri}\n".encode()}
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CaError(
            f"a CA key of type {type(key).__name__} has neither a PEM form nor a token URI"
        )
    return {key_file: private_key_to_pem(key)}


class _KeyMaker:
    """Makes the keys of a new generation: in this process, or in the PKCS#11 token.

    A context manager: if the generation is not committed (an exception), the keys it created
    in the token are deleted again, so a failed init or rollover leaves the token as it was.
    """

    def __init__(self, token_uri: Any = None) -> None:
        self._token_uri = token_uri
        self._created: list[Any] = []

    @classmethod
    def for_uri(cls, key_uri: str | None) -> _KeyMaker:
        if key_uri is None:
            return cls()
        from estkit.ca.pkcs11 import check_token

        try:
            return cls(check_token(key_uri))
        except SignerError as exc:
            raise CaError(str(exc)) from None

    @classmethod
    def like(cls, key: PrivateKey | Signer) -> _KeyMaker:
        """Keys kept where ``key`` is (the same token, or files)."""
        uri = getattr(key, "uri", None)
        return cls(uri.token_only() if uri is not None else None)

    def new(self, key_type: str, role: str) -> PrivateKey | Signer:
        if self._token_uri is None:
            return generate_private_key(key_type)
        from estkit.ca.pkcs11 import generate_key

        try:
            signer = generate_key(self._token_uri, key_type, role)
        except SignerError as exc:
            raise CaError(str(exc)) from None
        self._created.append(signer)
        return signer

    def keep(self) -> None:
        """The generation is committed: its keys stay whatever happens next."""
        self._created.clear()

    def __enter__(self) -> _KeyMaker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        if exc_type is None:
            return
        for signer in self._created:
            with contextlib.suppress(Exception):  # the original error is the one to report
                signer.destroy()


def _next_generation_number(generations: Path) -> int:
    numbers = [
        int(entry.name[1:])
        for entry in generations.iterdir()
        if entry.is_dir() and entry.name.startswith("g") and entry.name[1:].isdigit()
    ]
    return max(numbers, default=0) + 1


def _commit_generation(
    directory: Path,
    manifest: dict[str, Any],
    files: dict[str, bytes],
    *,
    expected_current: str | None,
) -> _Generation:
    """Write a complete generation next to the others, rename it into place, move the pointer."""
    generations = directory / GENERATIONS_DIR
    generations.mkdir(parents=True, exist_ok=True)
    if expected_current is not None and _read_pointer(directory) != expected_current:
        raise CaError(
            f"the CA in {directory} changed since it was loaded (another process rolled it over); "
            "reload it and try again"
        )
    name = f"g{_next_generation_number(generations)}"
    # mkdtemp creates the directory 0700: nobody else can read the keys while they are written.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=generations))
    try:
        for filename, data in files.items():
            if filename.endswith((".key", KEY_URI_SUFFIX)):  # a URI may carry pin-value
                write_private_file_atomic(staging / filename, data)
            else:
                write_file_atomic(staging / filename, data)
        write_file_atomic(
            staging / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True).encode()
        )
        try:
            # Renaming onto an existing generation fails, so two concurrent writers cannot both
            # claim the same name.
            os.rename(staging, generations / name)
        except OSError as exc:
            raise CaError(
                f"cannot install CA generation {name} in {generations} ({exc}); another process "
                "may be changing the CA at the same time — try again"
            ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    pointer = {"format": FORMAT_VERSION, "generation": name}
    write_file_atomic(directory / POINTER_FILE, json.dumps(pointer).encode() + b"\n")
    return _load_generation(directory, name)


__all__ = [
    "CA_BACKDATE_SECONDS",
    "ISSUING_CA_VALIDITY_SECONDS",
    "ROOT_CA_VALIDITY_SECONDS",
    "CaError",
    "CaExistsError",
    "CaNotFoundError",
    "CertificateAuthority",
    "RolloverResult",
]
