"""A throw-away PKI for TLS tests, made with ``cryptography``: a CA, a broker certificate for
127.0.0.1/localhost, client certificates (common name = MQTT identity), and an unrelated CA.

The files go into a world-readable directory of their own: Mosquitto started as root drops to
its own user before it reads them, and pytest's ``tmp_path`` is not reachable for that user.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: Pair
    broker: Pair
    other_ca: Pair  # signs nothing we use: the "wrong CA"

    def client(self, common_name: str, *, ca: Pair | None = None) -> Pair:
        """A client certificate for ``common_name`` signed by ``ca`` (default: the CA)."""
        return _issue(self.directory, common_name, ca or self.ca, server=False)

    def cleanup(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def make_pki() -> Pki:
    directory = Path(tempfile.mkdtemp(prefix="edgefleet-pki-"))
    directory.chmod(0o755)
    ca = _self_signed(directory, "edgefleet-test-ca")
    other = _self_signed(directory, "some-other-ca")
    broker = _issue(directory, "localhost", ca, server=True)
    return Pki(directory=directory, ca=ca, broker=broker, other_ca=other)


def mosquitto_tls(
    pki: Pki, *, require_certificate: bool = False, tls_version: str = "tlsv1.2"
) -> str:
    """mosquitto.conf lines for the listener above them (Mosquitto 2.0 syntax)."""
    lines = [
        f"cafile {pki.ca.cert}",
        f"certfile {pki.broker.cert}",
        f"keyfile {pki.broker.key}",
        f"tls_version {tls_version}",
    ]
    if require_certificate:
        lines += ["require_certificate true", "use_identity_as_username true"]
    return "\n".join(lines) + "\n"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Pair:
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for path in (cert_path, key_path):
        path.chmod(0o644)  # test keys: readable by the broker's user
    return Pair(cert_path, key_path)


def _self_signed(directory: Path, common_name: str) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(directory, common_name, cert, key)


def _issue(directory: Path, common_name: str, ca: Pair, *, server: bool) -> Pair:
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(ca_key, hashes.SHA256())
    return _write(directory, f"{common_name}-{'server' if server else 'client'}", cert, key)
