"""From a vetted request to the names and extensions of an end-entity certificate.

Why its own module: this is the issuing *policy* (which names a certificate may carry, which
extensions it gets) and it is what BCP-003-01 T4 and BCP-003-03 S6/S7 are checked against; keeping
it apart from key storage makes it readable in one sitting.

There is one path from a CSR to a certificate (issue 24): ``protocol.csr.describe_csr`` reads the
request once into a :class:`~estkit.protocol.csr.CsrInfo`; :func:`vet_request` decides on that
object and returns :class:`IssuedNames`; :func:`sign_leaf` builds subject and SAN from those names
and nothing else. The CSR's own subject is never copied: a certificate carries one CN, the vetted
DNS names and IP addresses, and only the extra attributes the profile names, taken from the
authenticated client certificate.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from estkit.ca.builders import (
    Validity,
    authority_key_identifier,
    check_serial,
    leaf_key_usage,
    new_serial,
    parse_ip,
    subject_key_identifier,
)
from estkit.ca.profiles import CLIENT_SUBJECT_ATTRIBUTES, Profile
from estkit.ca.signer import Signer, sign_certificate
from estkit.protocol.certs import is_hostname
from estkit.protocol.csr import (
    MAX_COMMON_NAME_LENGTH,
    CsrInfo,
    check_csr_policy,
    name_problem,
    shown_name,
)
from estkit.protocol.errors import CsrError, CsrPolicyError
from estkit.protocol.keys import PrivateKey, PublicKey, public_keys_equal


@dataclass(frozen=True)
class IssuedNames:
    """The names a certificate will carry, after policy: the only input the signer takes.

    ``common_name`` is None for an empty subject (the SAN is then critical). ``ip_addresses``
    are normalized text (``ipaddress`` spelling). ``extra_attributes`` are
    ``(profile attribute name, value)`` pairs from :data:`CLIENT_SUBJECT_ATTRIBUTES`.
    """

    common_name: str | None
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    extra_attributes: tuple[tuple[str, str], ...] = ()

    def subject(self) -> x509.Name:
        """The issued subject: CN first, then the allowed extra attributes."""
        attributes = []
        if self.common_name is not None:
            attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, self.common_name))
        for name, value in self.extra_attributes:
            attributes.append(x509.NameAttribute(CLIENT_SUBJECT_ATTRIBUTES[name], value))
        return x509.Name(attributes)

    def general_names(self) -> list[x509.GeneralName]:
        """The issued subjectAltName entries: DNS names, then IP addresses."""
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in self.dns_names]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in self.ip_addresses]
        return names

    def name_set(self) -> frozenset[str]:
        """``{"CN:…", "DNS:…", "IP:…"}`` (DNS names and CN in lower case) for comparisons."""
        return _name_set(self.common_name, self.dns_names, self.ip_addresses)


def _name_set(
    common_name: str | None, dns_names: Iterable[str], ip_addresses: Iterable[str]
) -> frozenset[str]:
    names = {f"DNS:{name.lower().rstrip('.')}" for name in dns_names}
    names |= {f"IP:{ipaddress.ip_address(ip)}" for ip in ip_addresses}
    if common_name is not None:
        names.add(f"CN:{common_name.lower()}")
    return frozenset(names)


def certificate_name_set(certificate: x509.Certificate) -> frozenset[str]:
    """The :meth:`IssuedNames.name_set` of a certificate: its CN and every DNS/IP SAN.

    Raises :class:`CsrError` when the certificate's names cannot be read (only our own
    certificates are compared this way, so that would mean a damaged store).
    """
    try:
        common_names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        try:
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            general_names = list(san.value)
        except x509.ExtensionNotFound:
            general_names = []
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise CsrError(f"the names of the client certificate cannot be read ({exc})") from None
    common_name = common_names[0].value if common_names else None
    dns = [n.value for n in general_names if isinstance(n, x509.DNSName)]
    ips = [str(n.value) for n in general_names if isinstance(n, x509.IPAddress)]
    names = _name_set(common_name if isinstance(common_name, str) else None, dns, ips)
    others = [n for n in general_names if not isinstance(n, (x509.DNSName, x509.IPAddress))]
    return names | {f"{type(n).__name__}:{getattr(n, 'value', '')}" for n in others}


def describe_names(names: Iterable[str]) -> str:
    """A sorted, readable list of a name set for messages."""
    return "[" + ", ".join(sorted(names)) + "]"


def _check_dns_name(name: str) -> None:
    if not is_hostname(name):
        raise CsrPolicyError(
            f"{shown_name(name)} is not a valid DNS host name; use letters, digits and '-' in "
            "dot-separated labels of at most 63 characters, at most 253 in all"
        )


def _extra_attributes(
    profile: Profile, client_subject: x509.Name | None
) -> tuple[tuple[str, str], ...]:
    extras: list[tuple[str, str]] = []
    if client_subject is None:
        return ()
    for name in profile.subject_from_client_certificate or ():
        values = client_subject.get_attributes_for_oid(CLIENT_SUBJECT_ATTRIBUTES[name])
        if not values or not isinstance(values[0].value, str):
            continue
        value = values[0].value
        problem = name_problem(value)
        if problem is not None or not value or len(value) > MAX_COMMON_NAME_LENGTH:
            raise CsrPolicyError(
                f"the client certificate's {name} {shown_name(value)} cannot be copied into the "
                f"certificate ({problem or f'it must be 1 to {MAX_COMMON_NAME_LENGTH} characters'})"
            )
        extras.append((name, value))
    return tuple(extras)


def vet_request(
    info: CsrInfo,
    profile: Profile,
    *,
    reserved_names: Iterable[str] = (),
    client_subject: x509.Name | None = None,
) -> IssuedNames:
    """Decide on a described CSR: raise :class:`CsrPolicyError`/:class:`CsrError` with the
    reason, or return the names the certificate will carry.

    ``reserved_names`` are names no leaf may carry (the CNs of this server's CA certificates).
    ``client_subject`` is the authenticated client certificate's subject, the only source of
    the extra attributes the profile allows.

    The rules: the CSR policy of the profile (key, hash, at most one CN of at most 64
    characters, no control characters, no wildcard or IP unless allowed); every DNS name a
    host name; under ``nmos`` the CN is a host name and leads the SAN (BCP-003-01 T4) and the
    issued CN is the first vetted DNS name; under ``rfc7030`` the issued CN is the CSR's CN
    (a host name joins the SAN, an IP address too when allowed, other text stays in the CN).
    SAN entries of other types (e-mail, URI, ...) are not issued.
    """
    # Policy first: a SHA-1 or MD5 signature is then refused by name ("hash sha1 is not
    # accepted") rather than reported as a bad signature, the message a vendor can act on.
    check_csr_policy(info, profile.csr_policy())
    if not info.signature_valid:
        raise CsrError(
            "CSR signature does not verify with its own public key; regenerate the request "
            "with the matching private key"
        )
    reserved = {name.lower().rstrip(".") for name in reserved_names}
    for name in (*info.common_names, *info.dns_names):
        if name.lower().rstrip(".") in reserved:
            raise CsrPolicyError(
                f"the name {shown_name(name)} is the name of a CA certificate of this server; "
                "a device certificate must not look like its CA: use the device's host name"
            )
    dns: list[str] = []
    for name in info.dns_names:
        _check_dns_name(name)
        if name.lower() not in {seen.lower() for seen in dns}:
            dns.append(name)
    ips: list[str] = []
    for text in info.ip_addresses:
        address = str(ipaddress.ip_address(text))
        if address not in ips:
            ips.append(address)
    requested_cn = info.common_name
    if requested_cn is not None:
        cn_address = parse_ip(requested_cn)
        if cn_address is not None and profile.allow_ip_addresses:
            if str(cn_address) not in ips:
                ips.insert(0, str(cn_address))
        elif is_hostname(requested_cn):
            # The CN leads the SAN (T4; TLS clients match the SAN only, RFC 6125 §6.4.4).
            # A CN the SAN already holds keeps the SAN's spelling and moves to the front.
            same = [name for name in dns if name.lower() == requested_cn.lower()]
            rest = [name for name in dns if name.lower() != requested_cn.lower()]
            dns = [same[0] if same else requested_cn, *rest]
        elif profile.auth_mode == "nmos":
            raise CsrPolicyError(
                f"the common name {shown_name(requested_cn)} is not a DNS host name; under an "
                "NMOS label the CN must be the device's host name (BCP-003-01 T4)"
            )
    if profile.auth_mode == "nmos":
        common_name = next((name for name in dns if len(name) <= MAX_COMMON_NAME_LENGTH), None)
    else:
        common_name = requested_cn
    if common_name is None and not dns and not ips:
        raise CsrPolicyError(
            "the request names nothing: no common name and no DNS or IP subjectAltName; put the "
            "device's host name in the CN or the SAN"
        )
    return IssuedNames(
        common_name=common_name,
        dns_names=tuple(dns),
        ip_addresses=tuple(ips),
        extra_attributes=_extra_attributes(profile, client_subject),
    )


def sign_leaf(
    *,
    names: IssuedNames,
    public_key: PublicKey,
    ekus: Sequence[x509.ObjectIdentifier],
    issuer_certificate: x509.Certificate,
    issuer_key: PrivateKey | Signer,
    validity: Validity,
    serial: int | None = None,
    crl_url: str | None = None,
    extensions: Sequence[x509.Extension[x509.ExtensionType]] = (),
) -> x509.Certificate:
    """An X.509 v3 end-entity certificate with the extensions every estkit leaf carries.

    Subject and SAN are built from ``names`` (the result of :func:`vet_request`) only.
    """
    if not isinstance(names, IssuedNames):
        raise TypeError("sign_leaf takes the IssuedNames that vet_request returned")
    if public_keys_equal(public_key, issuer_key.public_key()):
        raise CsrPolicyError(
            "the request carries the CA's own public key; generate a new key pair for the device"
        )
    subject = names.subject()
    general_names = names.general_names()
    if not general_names and len(subject) == 0:
        raise CsrPolicyError(
            "the request names nothing: no subject and no subjectAltName; put the device's "
            "host name in the CN or the SAN"
        )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_certificate.subject)
        .public_key(public_key)
        .serial_number(check_serial(serial) if serial is not None else new_serial())
        .not_valid_before(validity.not_before)
        .not_valid_after(validity.not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_key_usage(public_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
        .add_extension(subject_key_identifier(public_key), critical=False)
        .add_extension(authority_key_identifier(issuer_certificate), critical=False)
    )
    if general_names:
        # RFC 5280 §4.2.1.6: the SAN is critical when the subject is empty.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(general_names), critical=len(subject) == 0
        )
    if crl_url:
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        full_name=[x509.UniformResourceIdentifier(crl_url)],
                        relative_name=None,
                        reasons=None,
                        crl_issuer=None,
                    )
                ]
            ),
            critical=False,
        )
    for extension in extensions:  # AIA/CDP from estkit.ca.pointers
        builder = builder.add_extension(extension.value, critical=extension.critical)
    return sign_certificate(builder, issuer_key)


__all__ = [
    "IssuedNames",
    "certificate_name_set",
    "describe_names",
    "sign_leaf",
    "vet_request",
]
