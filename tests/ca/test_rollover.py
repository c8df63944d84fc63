"""RFC 4210 §4.4 root key update: the four certificates, what /cacerts serves, chains that
openssl validates from the old root and from the new one, and crash safety of the switch.

Requirement IDs: E1 (cacerts holds OldWithOld, OldWithNew, NewWithOld during a rollover),
C5 (clients must handle those certificates).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

import estkit.ca.authority as authority_module
from estkit.ca import CaError, CertificateAuthority, Profile
from estkit.protocol import (
    PrivateKey,
    build_csr,
    classify_ca_certificates,
    is_self_signed,
    public_keys_equal,
)

from .conftest import OpenSSL


def _ski(cert: x509.Certificate) -> bytes:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest


def _aki(cert: x509.Certificate) -> bytes | None:
    value = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    return value.key_identifier


@pytest.fixture
def rolled(tmp_path: Path, subject_keys: dict[str, PrivateKey]):
    """A P-256 CA with one leaf issued before and one after a rollover."""
    authority = CertificateAuthority.create(tmp_path / "ca", key_type="p256")
    old_issuing = authority.issuer_certificate
    old_leaf = authority.issue(
        build_csr(subject_keys["p256"], common_name="old.nmos.test"), Profile()
    )
    result = authority.rollover()
    new_leaf = authority.issue(
        build_csr(subject_keys["p384"], common_name="new.nmos.test"), Profile()
    )
    return authority, result, old_issuing, old_leaf, new_leaf


def test_rollover_certificates_follow_rfc4210(rolled) -> None:
    authority, result, old_issuing, _old_leaf, _new_leaf = rolled
    old, new = result.old_with_old, result.new_with_new
    assert old.subject == new.subject  # same name, new key
    assert not public_keys_equal(old.public_key(), new.public_key())
    assert is_self_signed(old) and is_self_signed(new)

    # OldWithNew: the old public key, signed by the new key, with the old validity period.
    assert public_keys_equal(result.old_with_new.public_key(), old.public_key())
    result.old_with_new.verify_directly_issued_by(new)
    assert _ski(result.old_with_new) == _ski(old) and _aki(result.old_with_new) == _ski(new)
    assert result.old_with_new.not_valid_before_utc == old.not_valid_before_utc
    assert result.old_with_new.not_valid_after_utc == old.not_valid_after_utc

    # NewWithOld: the new public key, signed by the old key, from the new key's start until the
    # old key ends.
    assert public_keys_equal(result.new_with_old.public_key(), new.public_key())
    result.new_with_old.verify_directly_issued_by(old)
    assert _ski(result.new_with_old) == _ski(new) and _aki(result.new_with_old) == _ski(old)
    assert result.new_with_old.not_valid_before_utc == new.not_valid_before_utc
    assert result.new_with_old.not_valid_after_utc == old.not_valid_after_utc
    for cross in (result.old_with_new, result.new_with_old):
        assert not is_self_signed(cross)
        assert cross.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    # The new issuing CA hangs under the new root and has a distinct name.
    assert result.issuing is not None
    result.issuing.verify_directly_issued_by(new)
    assert result.issuing.subject != old_issuing.subject
    assert result.issuing.subject.rfc4514_string() == "CN=estkit Issuing CA G2"
    assert authority.generation == result.generation == "g2"


def test_cacerts_serves_everything_and_classifies(rolled) -> None:
    authority, result, old_issuing, _old_leaf, _new_leaf = rolled
    cacerts = authority.cacerts
    # The three RFC 4210 certificates, the new root and issuing CA, and the previous issuing CA,
    # which still anchors everything issued before the rollover (the server's TLS certificate).
    assert len(cacerts) == 6
    assert set(map(bytes, (c.fingerprint(_sha256()) for c in cacerts))) == {
        c.fingerprint(_sha256())
        for c in (
            result.new_with_new,
            result.old_with_old,
            result.old_with_new,
            result.new_with_old,
            result.issuing,
            old_issuing,
        )
    }
    classified = classify_ca_certificates(cacerts)
    assert classified.in_rollover
    assert classified.current_root == result.new_with_new
    assert classified.new_with_new == result.new_with_new
    assert classified.old_with_old == result.old_with_old
    assert classified.old_with_new == result.old_with_new
    assert classified.new_with_old == result.new_with_old
    assert classified.intermediates == [result.issuing, old_issuing]
    assert authority.root_certificates == [result.new_with_new, result.old_with_old]
    assert authority.previous_issuers == [old_issuing]
    bundle = x509.load_pem_x509_certificates(authority.cacerts_path.read_bytes())
    assert bundle == cacerts


def test_chains_validate_from_the_old_and_the_new_root(rolled, openssl: OpenSSL) -> None:
    authority, result, old_issuing, old_leaf, new_leaf = rolled
    old_root, new_root = result.old_with_old, result.new_with_new
    new_leaf.verify_directly_issued_by(result.issuing)
    cases = [
        # A node that already has the new root.
        (new_leaf, [new_root], [result.issuing]),
        # A node still trusting only the old root learns the new chain through NewWithOld.
        (new_leaf, [old_root], [result.issuing, result.new_with_old]),
        # The non-root part of the /cacerts bundle as untrusted pool, old root as anchor. (The
        # self-signed NewWithNew must not be in the untrusted pool: OpenSSL then stops at it
        # instead of trying NewWithOld — clients classify /cacerts first, as C5 asks.)
        (new_leaf, [old_root], [c for c in authority.cacerts if not is_self_signed(c)]),
        # Old leaves keep working for old-root holders...
        (old_leaf, [old_root], [old_issuing]),
        # ...and for new-root holders through OldWithNew.
        (old_leaf, [new_root], [old_issuing, result.old_with_new]),
    ]
    for leaf, roots, untrusted in cases:
        checked = openssl.verify(leaf, roots=roots, untrusted=untrusted, extra=["-x509_strict"])
        assert checked.returncode == 0, (leaf.subject, checked.stdout, checked.stderr)
    # And the cross certificates are what makes it work: without NewWithOld, old-root holders
    # cannot validate the new leaf.
    without = openssl.verify(new_leaf, roots=[old_root], untrusted=[result.issuing])
    assert without.returncode != 0


def test_rollover_is_persisted_and_issuing_uses_the_new_key(
    rolled, subject_keys: dict[str, PrivateKey]
) -> None:
    authority, result, _old_issuing, _old_leaf, _new_leaf = rolled
    loaded = CertificateAuthority.load(authority.directory)
    assert loaded.generation == "g2"
    assert loaded.cacerts == authority.cacerts
    assert loaded.rollover_certificates == {
        "old_with_old": result.old_with_old,
        "old_with_new": result.old_with_new,
        "new_with_old": result.new_with_old,
        "new_with_new": result.new_with_new,
    }
    leaf = loaded.issue(build_csr(subject_keys["p256"], common_name="after.nmos.test"), Profile())
    assert result.issuing is not None
    leaf.verify_directly_issued_by(result.issuing)


def test_a_stale_instance_cannot_roll_over_again(rolled, tmp_path: Path) -> None:
    authority, *_ = rolled
    # Another process loaded generation g2 and rolls over to g3 ...
    other = CertificateAuthority.load(authority.directory)
    other.rollover()
    # ... so a rollover from this (now stale) object must not silently fork the CA.
    stale = CertificateAuthority.__new__(CertificateAuthority)
    stale.__dict__.update(authority.__dict__)
    with pytest.raises(CaError, match="changed since it was loaded"):
        stale.rollover()
    assert CertificateAuthority.load(authority.directory).generation == "g3"


def test_crash_before_the_pointer_moves_keeps_the_old_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = CertificateAuthority.create(tmp_path / "ca", key_type="p256")
    before = authority.cacerts
    real_write = authority_module.write_file_atomic

    def crash_on_pointer(path, data, *args, **kwargs):
        if Path(path).name == "authority.json":
            raise OSError("simulated power cut")
        return real_write(path, data, *args, **kwargs)

    monkeypatch.setattr(authority_module, "write_file_atomic", crash_on_pointer)
    with pytest.raises(OSError, match="simulated power cut"):
        authority.rollover()
    monkeypatch.undo()
    reloaded = CertificateAuthority.load(tmp_path / "ca")
    assert reloaded.generation == "g1"
    assert reloaded.cacerts == before
    # The next attempt still succeeds (the orphaned directory is skipped, not reused).
    reloaded.rollover()
    assert CertificateAuthority.load(tmp_path / "ca").generation == "g3"


def test_crash_while_writing_a_generation_leaves_no_partial_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = CertificateAuthority.create(tmp_path / "ca", key_type="p256")

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(authority_module, "write_private_file_atomic", fail)
    with pytest.raises(OSError, match="disk full"):
        authority.rollover()
    generations = sorted(path.name for path in (tmp_path / "ca" / "generations").iterdir())
    assert generations == ["g1"]
    assert CertificateAuthority.load(tmp_path / "ca").generation == "g1"


def test_rollover_can_change_the_key_type(
    tmp_path: Path, subject_keys: dict[str, PrivateKey], openssl: OpenSSL
) -> None:
    authority = CertificateAuthority.create(tmp_path / "ca", key_type="p256")
    result = authority.rollover(key_type="rsa2048")
    assert isinstance(result.new_with_new.public_key(), rsa.RSAPublicKey)
    leaf = authority.issue(
        build_csr(subject_keys["p256"], common_name="mixed.nmos.test"), Profile()
    )
    assert result.issuing is not None
    checked = openssl.verify(
        leaf, roots=[result.old_with_old], untrusted=[result.issuing, result.new_with_old]
    )
    assert checked.returncode == 0, checked.stderr
    assert authority.key_type == "rsa2048"


def test_rollover_without_an_issuing_ca(tmp_path: Path, openssl: OpenSSL) -> None:
    authority = CertificateAuthority.create(tmp_path / "ca", key_type="p256", with_issuing_ca=False)
    result = authority.rollover()
    assert result.issuing is None
    assert authority.issuer_certificate == result.new_with_new
    assert len(authority.cacerts) == 4
    classified = classify_ca_certificates(authority.cacerts)
    assert classified.old_with_new == result.old_with_new
    assert classified.new_with_old == result.new_with_old
    assert classified.intermediates == []


def test_crl_for_leaves_of_the_previous_issuer(rolled, openssl: OpenSSL, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from estkit.ca import RevokedEntry

    authority, _result, old_issuing, old_leaf, _new_leaf = rolled
    der = authority.build_crl(
        [RevokedEntry(old_leaf.serial_number, datetime.now(UTC))], issuer=old_issuing
    )
    crl = x509.load_der_x509_crl(der)
    assert crl.issuer == old_issuing.subject
    assert crl.is_signature_valid(old_issuing.public_key())
    with pytest.raises(CaError, match="is not an issuing CA of this authority"):
        authority.build_crl([], issuer=old_leaf)


def _sha256():
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()
