"""Running it for real: TLS, a reverse proxy's headers, and logs that keep secrets out."""

from __future__ import annotations

import datetime
import json
import ssl
import urllib.request

import pytest
from conftest import require
from websockets.sync.client import connect

from processes import ServerProcess, run_cli

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
except ImportError:  # pragma: no cover - cryptography comes with tests/requirements.txt
    x509 = None  # type: ignore[assignment]


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1 and localhost: (certfile, keyfile)."""
    require(x509, "cryptography", "pip install -r tests/requirements.txt")
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webrtc_app test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(certfile), str(keyfile)


def test_tls_serves_https_and_wss(certificate):
    certfile, keyfile = certificate
    trust = ssl.create_default_context(cafile=certfile)
    with ServerProcess("--certfile", certfile, "--keyfile", keyfile) as server:
        assert "listening on https://127.0.0.1:" in server.output()
        with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/call?id=a&peer_id=b", context=trust, timeout=10) as page:
            assert page.status == 200 and b"/wscall?id=a&peer_id=b" in page.read()
        base = f"wss://127.0.0.1:{server.port}/wscall"
        with connect(f"{base}?id=a&peer_id=b", ssl=trust) as a, connect(f"{base}?id=b&peer_id=a", ssl=trust) as b:
            a.send("over TLS")
            assert b.recv(timeout=10) == "over TLS"
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain http on the TLS port is refused
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=5)


def test_tls_also_comes_from_the_environment(certificate):
    certfile, keyfile = certificate
    with ServerProcess(env={"WEBRTC_CERTFILE": certfile, "WEBRTC_KEYFILE": keyfile}) as server:
        assert "listening on https://" in server.output()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--certfile", "/nonexistent/cert.pem", "--keyfile", "/nonexistent/key.pem"], "cannot load the TLS certificate or key"),
        (["--certfile", "/nonexistent/cert.pem"], "TLS needs both a certificate (--certfile) and its key (--keyfile)"),
    ],
)
def test_bad_tls_options_get_one_line_and_exit_2(args, message):
    result = run_cli("start", "0", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def request(url: str, headers: dict[str, str]) -> int:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
        return response.status


def test_xheaders_trusts_the_proxy_for_the_client_address():
    proxy_headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    with ServerProcess("--xheaders") as server:
        request(f"{server.http}/healthz", proxy_headers)
        server.wait_for_line(r"200 GET /healthz \(203\.0\.113\.7\)")
    with ServerProcess() as server:
        request(f"{server.http}/healthz", proxy_headers)
        server.wait_for_line(r"200 GET /healthz \(127\.0\.0\.1\)")
        assert "203.0.113.7" not in server.output()


def test_tokens_secrets_and_message_bodies_stay_out_of_the_log():
    secrets = {
        "ice": "ICE-TOKEN-8a1f",
        "admin": "ADMIN-TOKEN-77c2",
        "turn": "TURN-SECRET-5e9d",
        "socket": "SOCKET-JWT-0b3c",
        "body": "MESSAGE-BODY-4d6e",
    }
    env = {
        "WEBRTC_ICE_ACCESS_TOKEN": secrets["ice"],
        "WEBRTC_ADMIN_TOKEN": secrets["admin"],
        "WEBRTC_ICE_SERVERS": json.dumps([{"urls": "turn:127.0.0.1:3478", "secret": secrets["turn"]}]),
    }
    with ServerProcess("--log-level", "info", env=env) as server:
        base = f"{server.ws}/wscall"
        with connect(f"{base}?id=a&peer_id=b&token={secrets['socket']}") as a, connect(f"{base}?id=b&peer_id=a") as b:
            a.send(json.dumps({"type": "message", "text": secrets["body"]}))
            assert secrets["body"] in b.recv(timeout=10)
        ice = urllib.request.Request(f"{server.http}/ice_servers?id=a", data=secrets["ice"].encode(), method="POST")
        with urllib.request.urlopen(ice, timeout=10) as response:
            assert secrets["turn"] not in response.read().decode()
        wrong = urllib.request.Request(f"{server.http}/ice_servers", data=b"guess", method="POST")
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(wrong, timeout=10)
        connections = urllib.request.Request(
            f"{server.http}/connections?id=a", headers={"Authorization": f"Bearer {secrets['admin']}"}
        )
        urllib.request.urlopen(connections, timeout=10).read()
        server.wait_for_line(r"200 GET /connections")
        log = server.output()
        assert "token=***" in log  # the socket's access line is there, its token masked
        for name, value in secrets.items():
            assert value not in log, name


def test_redaction_masks_the_value_however_the_name_is_spelled():
    from webrtc_server import redact_query

    names = ["token", "jwt"]
    assert (
        redact_query("/wscall?id=a&token=S1&Token=S2&%74oken=S3&jwt=S4", names)
        == "/wscall?id=a&token=***&Token=***&%74oken=***&jwt=***"
    )
    assert redact_query("/wscall?id=a&peer_id=b", names) == "/wscall?id=a&peer_id=b"
    assert redact_query("/healthz", names) == "/healthz"
