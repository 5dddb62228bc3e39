"""Throw-away certificates for TLS tests: a CA, a server certificate for 127.0.0.1/localhost and
a client certificate, all signed by the CA (and a second, unrelated CA). EC P-256, so fast."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class KeyPair:
    key_pem: str
    cert_pem: str


@dataclass(frozen=True)
class Pki:
    ca: KeyPair
    server: KeyPair
    client: KeyPair
    other_ca: KeyPair  # trusted by nobody: its certificates must be refused

    def write(self, folder: Path) -> dict[str, Path]:
        """Every PEM as a file in ``folder``: ca.pem, server.key, server.pem, client.key, ..."""
        files = {
            "ca.pem": self.ca.cert_pem,
            "server.key": self.server.key_pem,
            "server.pem": self.server.cert_pem,
            "client.key": self.client.key_pem,
            "client.pem": self.client.cert_pem,
            "other_ca.pem": self.other_ca.cert_pem,
        }
        paths = {}
        for name, text in files.items():
            paths[name] = folder / name
            paths[name].write_text(text)
        return paths


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _certificate(
    common_name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    is_ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(common_name), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if is_ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pair(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> KeyPair:
    return KeyPair(_key_pem(key), cert.public_bytes(serialization.Encoding.PEM).decode())


def make_pki() -> Pki:
    ca_key, other_key, server_key, client_key = (
        ec.generate_private_key(ec.SECP256R1()) for _ in range(4)
    )
    ca_cert = _certificate("batchbench test CA", ca_key, None, is_ca=True)
    other_cert = _certificate("untrusted CA", other_key, None, is_ca=True)
    ca = (ca_cert.subject, ca_key)
    server_cert = _certificate("localhost", server_key, ca, server=True)
    client_cert = _certificate("load generator", client_key, ca)
    return Pki(
        ca=_pair(ca_key, ca_cert),
        server=_pair(server_key, server_cert),
        client=_pair(client_key, client_cert),
        other_ca=_pair(other_key, other_cert),
    )


def ssl_config_text(pki: Pki, *, client_verify: bool = False) -> str:
    """An SSLConfig text proto (TF Serving's format: PEM texts inline) for ``pki``'s server."""

    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    lines = [
        f"server_key: {quoted(pki.server.key_pem)}",
        f"server_cert: {quoted(pki.server.cert_pem)}",
        f"custom_ca: {quoted(pki.ca.cert_pem)}",
        f"client_verify: {'true' if client_verify else 'false'}",
    ]
    return "\n".join(lines) + "\n"
