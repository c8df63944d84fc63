"""The RA through the CLI (issue 21): `estkit server ra-cert` on the upstream,
`estkit server init --upstream …` for the RA, `estkit server certs` on the RA lists what it
obtained; refusals say what to fix."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509

from conftest import EstkitTestServer, make_server
from estkit.cli.main import cli
from estkit.client import ClientCredentials, CsrSpec, EstClient, RetryPolicy
from estkit.protocol.certs import sha256_fingerprint
from estkit.protocol.keys import generate_private_key
from estkit.server.config import load_config
from estkit.server.datadir import DEMO_DEVICE_SERIAL, InitResult
from estkit.server.runner import start_server_thread
from estkit.server.upstream import ID_KP_CMC_RA


def test_ra_cert_init_enroll_and_certs_through_the_cli(tmp_path: Path) -> None:
    upstream = make_server(tmp_path / "up", {})
    runner = CliRunner()
    try:
        cert, key = tmp_path / "ra.pem", tmp_path / "ra.key"
        made = runner.invoke(
            cli,
            ["server", "ra-cert", str(upstream.data_dir), "--cn", "plant-ra",
             "--out-cert", str(cert), "--out-key", str(key), "--json"],
        )  # fmt: skip
        assert made.exit_code == 0, made.output
        ra_cert = x509.load_pem_x509_certificate(cert.read_bytes())
        ekus = ra_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ID_KP_CMC_RA in ekus
        assert key.stat().st_mode & 0o077 == 0
        fingerprint = sha256_fingerprint(ra_cert)
        assert json.loads(made.stdout)["fingerprint"] == fingerprint
        assert load_config(upstream.paths.config).ra_trusted == (fingerprint,)

        ra_dir = tmp_path / "ra"
        init = runner.invoke(
            cli,
            ["server", "init", str(ra_dir), "--upstream", upstream.url,
             "--upstream-trust", str(upstream.paths.root_ca),
             "--upstream-cert", str(cert), "--upstream-key", str(key), "--json"],
        )  # fmt: skip
        assert init.exit_code == 0, init.output
        assert not (ra_dir / "ca").exists()
        paths = InitResult.for_directory(ra_dir)
        ra = EstkitTestServer(running=start_server_thread(ra_dir), paths=paths)
        try:
            device = EstClient(
                ra.url,
                trust=[upstream.paths.root_ca],
                credentials=ClientCredentials.from_files(
                    paths.device_certificate, paths.device_key
                ),
                retry=RetryPolicy(max_attempts=1),
            )
            spec = CsrSpec(
                key=generate_private_key("p256"),
                common_name="cam-3.example.com",
                dns_names=("cam-3.example.com",),
                serial_number=DEMO_DEVICE_SERIAL,
            )
            with device:
                issued = device.simpleenroll(spec, pop=True).certificate
        finally:
            ra.stop()
        listed = runner.invoke(cli, ["server", "certs", str(ra_dir), "--json"])
        assert listed.exit_code == 0, listed.output
        records = json.loads(listed.stdout)["certificates"]
        # The RA's own TLS certificate came from the upstream but is not the RA's record;
        # the device's certificate is.
        serials = [int(r["serial"], 16) for r in records]
        assert serials == [issued.serial_number]
        assert records[0]["operation"] == "simpleenroll"
    finally:
        upstream.stop()


def test_init_refusals_say_what_to_fix(tmp_path: Path) -> None:
    upstream = make_server(tmp_path / "up", {})
    runner = CliRunner()
    try:
        missing = runner.invoke(
            cli, ["server", "init", str(tmp_path / "ra"), "--upstream", upstream.url]
        )
        assert missing.exit_code != 0
        assert "--upstream needs --upstream-trust, --upstream-cert and --upstream-key" in (
            missing.output
        )
        # A certificate the upstream does not trust as an RA: init stops with the reason.
        cert, key = tmp_path / "c.pem", tmp_path / "c.key"
        runner.invoke(
            cli,
            ["server", "ra-cert", str(upstream.data_dir), "--cn", "ra-two",
             "--out-cert", str(cert), "--out-key", str(key)],
        )  # fmt: skip
        config = upstream.paths.config
        config.write_text(config.read_text().replace("[ra]", "[ra_disabled]"))
        refused = runner.invoke(
            cli,
            ["server", "init", str(tmp_path / "ra2"), "--upstream", upstream.url,
             "--upstream-trust", str(upstream.paths.root_ca),
             "--upstream-cert", str(cert), "--upstream-key", str(key)],
        )  # fmt: skip
        assert refused.exit_code != 0
        assert "did not serve the RA" in refused.output
        assert "may only ask for that certificate's names" in refused.output
        assert "Traceback" not in refused.output
        assert not (tmp_path / "ra2" / "estkit.toml").exists()
    finally:
        upstream.stop()
