"""C9 checks on issued certificates and the trust decisions of C5/C15, with a real estkit CA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from estkit.ca.authority import CertificateAuthority
from estkit.ca.profiles import Profile
from estkit.nmos.anchors import TrustChange, decide_trust
from estkit.nmos.errors import CertificateValidationError, TrustError
from estkit.nmos.validation import validate_issued_certificate
from estkit.protocol.csr import build_csr
from estkit.protocol.keys import generate_private_key

NOW = datetime(2030, 6, 1, tzinfo=UTC)
HOST = "node1.nmos.test"


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(
        tmp_path_factory.mktemp("ca"), key_type="p256", now=NOW - timedelta(days=1)
    )


def issue(authority: CertificateAuthority, **kwargs: object) -> tuple[x509.Certificate, object]:
    key = generate_private_key("p256")
    common_name = str(kwargs.pop("common_name", HOST))
    csr = build_csr(key, common_name=common_name, dns_names=[HOST])
    profile = kwargs.pop("profile", Profile())
    cert = authority.issue(csr, profile, now=kwargs.pop("now", NOW), **kwargs)  # type: ignore[arg-type]
    return cert, key


def check(
    authority: CertificateAuthority, cert: x509.Certificate, key: object
) -> list[x509.Certificate]:
    return validate_issued_certificate(
        cert,
        key,  # type: ignore[arg-type]
        hostnames=[HOST],
        roots=[authority.root_certificate],
        intermediates=authority.chain,
        now=NOW,
    )


def test_a_good_certificate_passes_and_returns_its_chain(authority: CertificateAuthority) -> None:
    cert, key = issue(authority)
    assert check(authority, cert, key) == [authority.issuer_certificate]


def test_key_mismatch_is_refused(authority: CertificateAuthority) -> None:
    cert, _key = issue(authority)
    with pytest.raises(CertificateValidationError, match="does not certify the key"):
        check(authority, cert, generate_private_key("p256"))


def test_not_yet_valid_is_refused_c9(authority: CertificateAuthority) -> None:
    cert, key = issue(authority, now=NOW + timedelta(hours=2))
    with pytest.raises(CertificateValidationError, match="not valid before") as info:
        check(authority, cert, key)
    assert "clock" in (info.value.hint or "")


def test_wrong_common_name_is_refused_c9(authority: CertificateAuthority) -> None:
    # The CA issues CN = the CSR's host name, the SAN keeps HOST: a CN/host mismatch.
    cert, key = issue(authority, common_name="other.nmos.test")
    with pytest.raises(CertificateValidationError, match=r"common name is 'other\.nmos\.test'"):
        check(authority, cert, key)


def test_missing_client_auth_eku_is_refused_s7(authority: CertificateAuthority) -> None:
    cert, key = issue(authority, profile=Profile(ekus=("serverAuth",)))
    with pytest.raises(CertificateValidationError, match="lacks extended key usage clientAuth"):
        check(authority, cert, key)


def test_certificate_of_another_ca_is_refused_c9(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "other", key_type="p256", now=NOW)
    cert, key = issue(stranger)
    with pytest.raises(CertificateValidationError, match="does not chain to the trusted root"):
        validate_issued_certificate(
            cert,
            key,  # type: ignore[arg-type]
            hostnames=[HOST],
            roots=[authority.root_certificate],
            intermediates=[*authority.chain, *stranger.chain],
            now=NOW,
        )


def test_trust_decisions_initial_same_and_new_domain_c5_c15(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    root = authority.root_certificate
    first = decide_trust([], authority.cacerts, NOW)
    assert first.change is TrustChange.INITIAL and first.current_root == root
    assert decide_trust([root], authority.cacerts, NOW).change is TrustChange.SAME
    stranger = CertificateAuthority.create(tmp_path / "other", key_type="p256", now=NOW)
    moved = decide_trust([root], stranger.cacerts, NOW)
    assert moved.change is TrustChange.NEW_DOMAIN
    assert moved.roots == [stranger.root_certificate]


def test_an_unlinked_extra_root_next_to_ours_is_ignored(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    stranger = CertificateAuthority.create(tmp_path / "other", key_type="p256", now=NOW)
    mixed = [*authority.cacerts, stranger.root_certificate]
    decision = decide_trust([authority.root_certificate], mixed, NOW)
    assert decision.change is TrustChange.SAME
    assert decision.roots == [authority.root_certificate]
    assert any("no NewWithOld" in m for m in decision.messages)


def test_rollover_without_old_with_old_is_still_linked_by_new_with_old(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path / "ca", key_type="p256", now=NOW)
    old_root = ca.root_certificate
    result = ca.rollover(now=NOW + timedelta(days=1))
    # A server that already dropped OldWithOld and OldWithNew, but still sends NewWithOld.
    reply = [result.new_with_new, result.new_with_old, ca.issuer_certificate]
    decision = decide_trust([old_root], reply, NOW + timedelta(days=2))
    assert decision.change is TrustChange.ROLLOVER
    assert decision.roots == [result.new_with_new, old_root]


def test_cacerts_without_any_root_is_refused(authority: CertificateAuthority) -> None:
    with pytest.raises(TrustError, match="no valid self-signed root"):
        decide_trust([], [authority.issuer_certificate], NOW)


def _resigned(
    authority: CertificateAuthority, *, ca: bool, eku: bool
) -> tuple[x509.Certificate, object]:
    """A leaf for HOST signed by the real issuing CA, with the given flaws (a hostile or broken
    server signs what it likes with its genuine key)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = generate_private_key("p256")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(authority.issuer_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
    )
    if eku:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    return builder.sign(authority._issuer_key, hashes.SHA256()), key  # type: ignore[arg-type]


def test_a_ca_true_leaf_is_refused_by_the_node_c9(authority: CertificateAuthority) -> None:
    good, good_key = _resigned(authority, ca=False, eku=True)
    assert check(authority, good, good_key) == [authority.issuer_certificate]  # control
    cert, key = _resigned(authority, ca=True, eku=True)
    with pytest.raises(CertificateValidationError, match=r"CA certificate \(CA:TRUE\)"):
        check(authority, cert, key)


def test_a_leaf_without_eku_is_refused_by_the_node_s7(authority: CertificateAuthority) -> None:
    cert, key = _resigned(authority, ca=False, eku=False)
    with pytest.raises(CertificateValidationError, match="no TLS extended key usage"):
        check(authority, cert, key)
