"""`estkit server trust / untrust / trust --list` (issue 15, item 6; BCP-003-03 S3): what may be
trusted, what a repeat keeps, paths that survive moving the data directory, and a device that
stops enrolling once its manufacturer is no longer trusted (real server, real TLS, curl)."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from estkit.ca.manufacturer import create_manufacturer_ca, issue_device_certificate
from estkit.cli.main import cli
from estkit.protocol.certs import sha256_fingerprint
from estkit.server.config import MAX_TRUST_FILE_BYTES, load_config
from estkit.server.datadir import init_data_dir

from .witness import curl, openssl_csr


def _server(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["server", *map(str, args)])


def _roots(data_dir: Path) -> list[dict[str, Any]]:
    return tomllib.loads((data_dir / "estkit.toml").read_text())["trusted_client_roots"]


def _second_manufacturer(tmp_path: Path) -> Any:
    return create_manufacturer_ca(tmp_path / "acme", common_name="Acme Devices CA")


def test_trust_refuses_a_leaf_and_a_non_certificate(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "d", key_type="p256")
    before = (paths.config).read_bytes()

    leaf = _server("trust", paths.data_dir, paths.device_certificate)
    assert leaf.exit_code != 0
    assert "is not a CA certificate" in leaf.stderr
    assert "not a device (leaf) certificate" in leaf.stderr

    text = tmp_path / "notes.txt"
    text.write_text("just some notes\n")
    junk = _server("trust", paths.data_dir, text)
    assert junk.exit_code != 0
    assert "holds no certificate" in junk.stderr

    big = tmp_path / "huge.pem"
    big.write_bytes(b"x" * (MAX_TRUST_FILE_BYTES + 1))
    huge = _server("trust", paths.data_dir, big)
    assert f"larger than {MAX_TRUST_FILE_BYTES} bytes" in huge.stderr

    for result in (leaf, junk, huge):
        assert "Traceback" not in result.output + result.stderr
    assert paths.config.read_bytes() == before, "a refused file leaves the config untouched"


def test_trust_keeps_the_crl_and_writes_relative_paths(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "d", key_type="p256")
    acme = _second_manufacturer(tmp_path)
    crl = tmp_path / "acme.crl"
    crl.write_bytes(acme.build_crl([]))

    first = _server("trust", paths.data_dir, acme.certificate_path, "--crl", crl)
    assert first.exit_code == 0, first.stderr
    assert "Acme Devices CA" in first.stdout
    assert sha256_fingerprint(acme.certificate) in first.stdout

    again = _server("trust", paths.data_dir, acme.certificate_path, "--accept-expired")
    assert again.exit_code == 0, again.stderr
    entries = [e for e in _roots(paths.data_dir) if "acme" in e["certificate"]]
    assert entries == [
        {"certificate": "../acme/manufacturer-ca.pem", "accept_expired": True, "crl": "../acme.crl"}
    ]
    assert all(not Path(e["certificate"]).is_absolute() for e in _roots(paths.data_dir))

    # Relative paths: the data directory moves together with what it refers to.
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.copytree(tmp_path, moved)
    config = load_config(moved / "d")
    assert {root.certificate for root in config.trusted_client_roots} == {
        moved / "acme" / "manufacturer-ca.pem",
        moved / "d" / "manufacturer" / "manufacturer-ca.pem",
    }


def test_trust_refuses_a_crl_from_another_ca(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "d", key_type="p256")
    acme = _second_manufacturer(tmp_path)
    other = create_manufacturer_ca(tmp_path / "other", common_name="Other CA")
    crl = tmp_path / "other.crl"
    crl.write_bytes(other.build_crl([]))
    result = _server("trust", paths.data_dir, acme.certificate_path, "--crl", crl)
    assert result.exit_code != 0
    assert "the CRL was issued by CN=Other CA" in result.stderr


def test_trust_list_and_untrust(tmp_path: Path) -> None:
    paths = init_data_dir(tmp_path / "d", key_type="p256")
    acme = _second_manufacturer(tmp_path)
    assert _server("trust", paths.data_dir, acme.certificate_path).exit_code == 0

    listed = _server("trust", paths.data_dir, "--list", "--json")
    assert listed.exit_code == 0, listed.stderr
    roots = json.loads(listed.stdout)["trusted_client_roots"]
    assert [r["subjects"] for r in roots] == [
        ["CN=estkit Demo Manufacturer CA,O=estkit demo manufacturer"],
        ["CN=Acme Devices CA,O=estkit demo manufacturer"],
    ]
    assert roots[1]["fingerprints"] == [sha256_fingerprint(acme.certificate)]
    human = _server("trust", paths.data_dir, "--list")
    assert f"fingerprint {sha256_fingerprint(acme.certificate)}" in human.stdout

    removed = _server("untrust", paths.data_dir, sha256_fingerprint(acme.certificate))
    assert removed.exit_code == 0, removed.stderr
    assert "no longer trusting" in removed.stdout
    assert len(_roots(paths.data_dir)) == 1

    missing = _server("untrust", paths.data_dir, sha256_fingerprint(acme.certificate))
    assert missing.exit_code != 0
    assert "no trusted manufacturer CA matches" in missing.stderr

    by_path = _server("untrust", paths.data_dir, paths.manufacturer_ca)
    assert by_path.exit_code == 0, by_path.stderr
    assert _roots(paths.data_dir) == []


def test_untrusted_manufacturer_devices_are_refused_by_the_running_server(
    fresh_server: Any, tmp_path: Path
) -> None:
    server = fresh_server()
    acme = _second_manufacturer(tmp_path)
    credential = issue_device_certificate(acme, device_serial="ACME-1")
    cert, key = tmp_path / "acme-dev.pem", tmp_path / "acme-dev.key"
    credential.write(cert, key)

    def enroll() -> Any:
        return curl(
            server.est_url("simpleenroll"),
            cacert=server.paths.ca_certificates,
            cert=cert,
            key=key,
            data=openssl_csr(tmp_path).b64,
            workdir=tmp_path,
        )

    assert enroll().status == 403
    assert _server("trust", server.data_dir, acme.certificate_path).exit_code == 0
    trusted = enroll()
    assert trusted.status == 200, trusted.text
    assert _server("untrust", server.data_dir, acme.certificate_path).exit_code == 0
    refused = enroll()
    assert refused.status == 403
    assert "client certificate not trusted" in refused.text
    assert "issued by 'CN=Acme Devices CA" in refused.text
