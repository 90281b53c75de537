"""wss:// and https:// to the server: one verified TLS context per run, --ca-file, --insecure.

livekit-server has no TLS of its own here, so the integration tests put a small TLS-terminating
TCP relay (asyncio, in a thread) on 127.0.0.1 in front of the ``livekit_server`` fixture's port,
with a throwaway CA and a server certificate for 127.0.0.1 and localhost.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers import LKSWARM, assert_outcomes_reconcile, run_cli, run_engine
from lkswarm.app.server import LocalServer
from lkswarm.auth import Credentials
from lkswarm.config import RunConfig
from lkswarm.engine.context import Run
from lkswarm.net.ws_driver import tls_context
from lkswarm.report.build import INSECURE_WARNING
from relays import TlsRelay

PARTICIPANTS = 20
SHAPE = ["--signal-only", "--rooms", "1", "--participants", str(PARTICIPANTS), "--rate", "20", "--duration", "4s"]


def _pem_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def make_certs(directory: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate it signed, for 127.0.0.1 and localhost: (ca, cert, key) PEMs."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lkswarm test CA")])
    unused = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "encipher_only")
    usage = dict.fromkeys((*unused, "decipher_only"), False)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_path = directory / "server-key.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return _pem_cert(ca, directory / "ca.pem"), _pem_cert(cert, directory / "server.pem"), key_path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def wss_url(livekit_server: LocalServer, certs: tuple[Path, Path, Path]) -> Iterator[str]:
    _, cert, key = certs
    with TlsRelay(livekit_server.port, cert, key) as relay:
        yield f"wss://127.0.0.1:{relay.port}"


def count_contexts(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts `ssl.SSLContext` constructions from now on (`ssl.create_default_context` and urllib build one too)."""
    created = [0]
    original = ssl.SSLContext.__new__

    def counting_new(cls: type[ssl.SSLContext], *args: Any, **kwargs: Any) -> ssl.SSLContext:
        created[0] += 1
        return original(cls, *args, **kwargs)

    # Not a subclass put in ssl.SSLContext's place: ssl.py names its own class inside its property setters.
    monkeypatch.setattr(ssl.SSLContext, "__new__", counting_new)
    return created


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LIVEKIT_")}


# -- socket-free ---------------------------------------------------------------------------------------


def test_tls_context_verifies_unless_insecure(certs: tuple[Path, Path, Path]) -> None:
    verified = tls_context(ca_file=str(certs[0]))
    assert verified.verify_mode is ssl.CERT_REQUIRED and verified.check_hostname
    insecure = tls_context(insecure=True)
    assert insecure.verify_mode is ssl.CERT_NONE and not insecure.check_hostname


def test_run_builds_one_context_that_its_endpoint_carries(
    certs: tuple[Path, Path, Path], credentials: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RunConfig(ca_file=str(certs[0]))
    created = count_contexts(monkeypatch)
    run = Run(config, credentials, "wss://127.0.0.1:7443")
    assert created == [1]
    assert run.tls is not None and run.endpoint.tls is run.tls and run.endpoint.ssl_context is run.tls
    plain = Run(config, credentials, "ws://127.0.0.1:7880")
    assert plain.tls is None and plain.endpoint.ssl_context is None
    assert created == [1]  # ws:// builds none


@pytest.mark.parametrize(("content", "reason"), [(None, "No such file"), (b"not a certificate\n", "not a PEM CA")])
def test_bad_ca_file_is_a_one_line_usage_error(tmp_path: Path, content: bytes | None, reason: str) -> None:
    ca = tmp_path / "ca.pem"
    if content is not None:
        ca.write_bytes(content)
    # Refused while the options are checked, before anything connects (the URL's port is never tried).
    out = subprocess.run(
        [*LKSWARM, "run", "--url", "wss://127.0.0.1:9", "--ca-file", str(ca), "--signal-only", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean_env(), "LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "s" * 32},
    )
    assert out.returncode == 2, out.stderr
    assert reason in out.stderr and str(ca) in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr, out.stderr


def test_scenario_file_sets_ca_file_and_insecure(tmp_path: Path, certs: tuple[Path, Path, Path]) -> None:
    from lkswarm.app.scenario import load_scenario

    scenario = tmp_path / "tls.toml"
    scenario.write_text(f'insecure = true\nca_file = "{certs[0]}"\n')
    config = RunConfig(**load_scenario(scenario).fields)
    assert config.insecure and config.ca_file == str(certs[0])


# -- against livekit-server behind the TLS relay -----------------------------------------------------------


def test_wss_with_ca_file_joins_all_at_about_the_cpu_of_ws(
    livekit_server: LocalServer, wss_url: str, certs: tuple[Path, Path, Path], credentials: Credentials, tmp_path: Path
) -> None:
    runs: dict[str, dict[str, Any]] = {}
    for name, url, extra in (("ws", livekit_server.url, []), ("wss", wss_url, ["--ca-file", str(certs[0])])):
        (tmp_path / name).mkdir()
        code, report, stderr = run_cli(["--url", url, *SHAPE, *extra], credentials, tmp_path / name)
        assert code == 0, stderr
        assert_outcomes_reconcile(report)
        assert report["participants"]["joined"] == PARTICIPANTS, report["participants"]
        assert report["room_check"].get("matched") == PARTICIPANTS, report["room_check"]  # RoomService over https
        assert INSECURE_WARNING not in report["warnings"]
        runs[name] = report
    ws_cpu_s, wss_cpu_s = (runs[name]["generator"]["cpu_s"] for name in ("ws", "wss"))
    numbers = (
        f"generator CPU over {PARTICIPANTS} joins: ws {ws_cpu_s:.3f} s ({ws_cpu_s / PARTICIPANTS * 1000:.1f} ms/join), "
        f"wss {wss_cpu_s:.3f} s ({wss_cpu_s / PARTICIPANTS * 1000:.1f} ms/join)"
    )
    print(numbers)
    # A context per participant cost about 33 ms of CPU per join (0.66 s here); a shared one, a handshake's worth.
    assert wss_cpu_s < ws_cpu_s * 3 + 0.3, numbers
    assert runs["wss"]["config"]["ca_file"] == str(certs[0]) and not runs["wss"]["config"]["insecure"]


def test_wss_without_the_ca_fails_each_participant_on_verification(
    wss_url: str, credentials: Credentials, tmp_path: Path
) -> None:
    code, report, stderr = run_cli(["--url", wss_url, *SHAPE], credentials, tmp_path)
    assert code == 1, stderr
    assert_outcomes_reconcile(report)
    p = report["participants"]
    assert p["joined"] == 0 and p["failures"] == {"tls_verify_failed": PARTICIPANTS}, p
    detail = p["failure_details"]["failed:tls_verify_failed"]
    assert "certificate verify failed" in detail and "\n" not in detail, detail
    assert "--ca-file" in detail and "--insecure" in detail


def test_wss_insecure_joins_without_the_ca_and_the_report_says_so(
    wss_url: str, credentials: Credentials, tmp_path: Path
) -> None:
    code, report, stderr = run_cli(["--url", wss_url, *SHAPE, "--insecure"], credentials, tmp_path)
    assert code == 0, stderr
    assert report["participants"]["joined"] == PARTICIPANTS, report["participants"]
    assert report["room_check"].get("matched") == PARTICIPANTS, report["room_check"]
    assert report["config"]["insecure"] is True
    assert INSECURE_WARNING in report["warnings"]


def test_in_process_run_builds_one_tls_context(
    wss_url: str, certs: tuple[Path, Path, Path], credentials: Credentials, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = RunConfig(
        url=wss_url, signal_only=True, rooms=1, participants=10, rate=20, duration_s=2, ca_file=str(certs[0])
    )
    created = count_contexts(monkeypatch)
    report = run_engine(config, credentials, wss_url)
    assert report["participants"]["joined"] == 10, report["participants"]
    assert report["room_check"].get("matched") == 10, report["room_check"]  # RoomService over https, same context
    assert created == [1], f"{created[0]} TLS contexts built for one run of 10 participants"
