"""An NMOS node provisions through a registration authority exactly as through a CA
(issue 21 item 6): `estkit nmos workflow` against the RA installs the upstream's root and
certificates the upstream signed, enrolled and renewed through the RA."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from cryptography.x509.oid import NameOID

from conftest import make_server
from estkit.ca.authority import CertificateAuthority
from estkit.ca.store import open_store
from estkit.cli.main import cli
from estkit.protocol.certs import dns_names, is_signed_by, load_pem_certificates
from estkit.server.datadir import DEMO_DEVICE_SERIAL

from .test_ra import _ra


def test_nmos_workflow_through_the_ra_installs_the_upstreams_root(tmp_path: Path) -> None:
    upstream = make_server(tmp_path / "up", {})
    ra, _cert = _ra(tmp_path, upstream)
    try:
        paths = ra.paths
        out = tmp_path / "node"
        result = CliRunner().invoke(
            cli,
            [
                "nmos", "workflow", "--ip", "localhost", "--port", str(ra.port),
                "--cert", str(paths.device_certificate), "--key", str(paths.device_key),
                "--hostname", "node1.nmos.test", "--out-dir", str(out),
                "--cacert", str(tmp_path / "root.pem"), "--json",
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        upstream_ca = CertificateAuthority.load(upstream.paths.data_dir / "ca")
        installed_root = load_pem_certificates(Path(data["root_ca"]).read_bytes())[0]
        assert installed_root == upstream_ca.root_certificate
        assert [c["key_type"] for c in data["certificates"]] == ["rsa", "ecdsa"]
        serials = set()
        for entry in data["certificates"]:
            assert entry["renewed"] is True
            cert = load_pem_certificates(Path(entry["certificate"]).read_bytes())[0]
            assert is_signed_by(cert, upstream_ca.issuer_certificate)
            assert dns_names(cert) == ["node1.nmos.test"]
            serial = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
            assert [a.value for a in serial] == [DEMO_DEVICE_SERIAL]
            serials.add(cert.serial_number)
        # Both sides recorded the renewals: the RA what it obtained, the upstream the RA as
        # the requester.
        with open_store(paths.database_url) as store:
            ra_records = {int(r.serial, 16): r for r in store.list_issued()}
        with open_store(upstream.paths.database_url) as store:
            up_records = {int(r.serial, 16): r for r in store.list_issued()}
        for serial in serials:
            assert ra_records[serial].operation == "simplereenroll"
            assert up_records[serial].requester.startswith("ra:sha256:")
    finally:
        ra.stop()
        upstream.stop()
