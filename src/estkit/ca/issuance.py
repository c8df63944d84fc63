"""From a CSR and a profile to the names and extensions of an end-entity certificate.

Why its own module: this is the issuing *policy* (which names a certificate may carry, which
extensions it gets) and it is what BCP-003-01 T4 and BCP-003-03 S6/S7 are checked against; keeping
it apart from key storage makes it readable in one sitting.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import NameOID

from estkit.ca.builders import (
    Validity,
    authority_key_identifier,
    check_serial,
    is_hostname,
    leaf_key_usage,
    new_serial,
    parse_ip,
    subject_key_identifier,
)
from estkit.ca.profiles import Profile
from estkit.ca.signer import sign_certificate
from estkit.protocol.csr import check_csr_policy, describe_csr
from estkit.protocol.errors import CsrError, CsrPolicyError
from estkit.protocol.keys import PrivateKey, PublicKey, public_keys_equal


def verified_public_key(csr: x509.CertificateSigningRequest, profile: Profile) -> PublicKey:
    """The CSR's public key after the profile's CSR policy and the signature are checked.

    Policy first: a SHA-1 or MD5 signature is then refused by name ("hash sha1 is not
    accepted") rather than reported as a bad signature, which is the message a vendor can act on.
    """
    check_csr_policy(describe_csr(csr), profile.csr_policy())
    try:
        signature_ok = csr.is_signature_valid
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CsrError(
            f"cannot check the CSR signature ({exc}); send a valid PKCS#10 request"
        ) from None
    if not signature_ok:
        raise CsrError(
            "CSR signature does not verify with its own public key; regenerate the request "
            "with the matching private key"
        )
    return csr.public_key()  # type: ignore[return-value]


def requested_general_names(csr: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """Every name the CSR's extension request asks for in its SAN, of any type, as requested."""
    try:
        extension = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except (ValueError, x509.DuplicateExtension) as exc:
        raise CsrError(f"the CSR's extension request cannot be read ({exc})") from None
    return list(extension.value)


def _first_common_name(name: x509.Name) -> str | None:
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else None


def leaf_subject_alt_names(
    csr: x509.CertificateSigningRequest, subject: x509.Name, profile: Profile
) -> list[x509.GeneralName]:
    """The SAN of the certificate: the subject CN, then the CSR's DNS names (and IP addresses
    when the profile allows).

    The CN leads the SAN whenever it is a host name the SAN lacks: BCP-003-01 T4 wants the CN in
    the SAN, and TLS clients match host names against the SAN only (RFC 6125 §6.4.4). Other name
    forms (e-mail, URI, otherName) are not copied: nothing in EST or NMOS uses them and copying
    unvetted names is how CAs mis-issue.
    """
    names: list[x509.GeneralName] = []
    for general_name in requested_general_names(csr):
        if isinstance(general_name, x509.DNSName):
            _check_dns_name(general_name.value, profile)
            names.append(general_name)
        elif isinstance(general_name, x509.IPAddress):
            if not profile.allow_ip_addresses:
                raise CsrPolicyError(
                    f"the CSR asks for the IP address {general_name.value} in its SAN; this "
                    "profile does not allow IP addresses (BCP-003-01): request a DNS name instead"
                )
            names.append(general_name)
    from_cn = _common_name_as_san(subject, profile)
    present = {str(name.value).lower() for name in names}
    if from_cn is not None and str(from_cn.value).lower() not in present:
        names.insert(0, from_cn)
    return names


def _common_name_as_san(subject: x509.Name, profile: Profile) -> x509.GeneralName | None:
    common_name = _first_common_name(subject)
    if common_name is None:
        return None
    address = parse_ip(common_name)
    if address is not None:
        if not profile.allow_ip_addresses:
            raise CsrPolicyError(
                f"the CSR's common name is the IP address {common_name}; this profile does not "
                "allow IP addresses (BCP-003-01): use the device's DNS name"
            )
        return x509.IPAddress(address)
    if is_hostname(common_name):
        _check_dns_name(common_name, profile)
        return x509.DNSName(common_name)
    return None


def _check_dns_name(name: str, profile: Profile) -> None:
    if "*" in name and not profile.allow_wildcards:
        raise CsrPolicyError(
            f"the CSR asks for the wildcard name {name!r}; this profile does not allow wildcards "
            "(BCP-003-01): request each host name explicitly"
        )
    if not is_hostname(name):
        raise CsrPolicyError(
            f"{name!r} is not a valid DNS host name for the SAN; use letters, digits and '-' in "
            "dot-separated labels"
        )


def sign_leaf(
    *,
    subject: x509.Name,
    public_key: PublicKey,
    subject_alt_names: Sequence[x509.GeneralName],
    ekus: Sequence[x509.ObjectIdentifier],
    issuer_certificate: x509.Certificate,
    issuer_key: PrivateKey,
    validity: Validity,
    serial: int | None = None,
    crl_url: str | None = None,
) -> x509.Certificate:
    """An X.509 v3 end-entity certificate with the extensions every estkit leaf carries."""
    if public_keys_equal(public_key, issuer_key.public_key()):
        raise CsrPolicyError(
            "the request carries the CA's own public key; generate a new key pair for the device"
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
    if subject_alt_names:
        # RFC 5280 §4.2.1.6: the SAN is critical when the subject is empty.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(list(subject_alt_names)), critical=len(subject) == 0
        )
    elif len(subject) == 0:
        raise CsrPolicyError(
            "the request names nothing: no subject and no subjectAltName; put the device's "
            "host name in the CN or the SAN"
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
    return sign_certificate(builder, issuer_key)


__all__ = [
    "leaf_subject_alt_names",
    "requested_general_names",
    "sign_leaf",
    "verified_public_key",
]
