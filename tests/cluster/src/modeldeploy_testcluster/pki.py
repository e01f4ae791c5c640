"""A throwaway PKI for the local cluster: one CA, the API server's serving certificate, client
certificates for each component, and the service-account signing key."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=30)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


class ClusterPKI:
    """Creates (once) and hands out the cluster's keys and certificates under one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def sa_key(self) -> Path:
        return self.folder / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.folder / "sa.pub"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def create(
        self,
        serving_ips: list[str],
        serving_dns: list[str],
        clients: dict[str, tuple[str, str | None]],
        servers: dict[str, tuple[str, list[str], list[str]]] | None = None,
    ) -> None:
        """Make the CA, the API server's certificate, one client certificate per entry of
        `clients` (file name -> (common name, organization)) and one more serving certificate per
        entry of `servers` (file name -> (common name, IPs, DNS names); the kubelet's, for one)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        ca_key = _key()
        now = dt.datetime.now(dt.UTC)
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("modeldeploy-local-ca"))
            .issuer_name(_name("modeldeploy-local-ca"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(self.ca_key, ca_key)
        _write_cert(self.ca_cert, ca)

        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in serving_ips]
        sans += [x509.DNSName(dns) for dns in serving_dns]
        self._issue("apiserver", _name("kube-apiserver"), ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, sans)
        for file_name, (common_name, org) in clients.items():
            self._issue(file_name, _name(common_name, org), ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH, [])
        for file_name, (common_name, ips, names) in (servers or {}).items():
            server_sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
            server_sans += [x509.DNSName(dns) for dns in names]
            self._issue(
                file_name, _name(common_name), ca, ca_key, ExtendedKeyUsageOID.SERVER_AUTH, server_sans
            )

        sa = _key()
        _write_key(self.sa_key, sa)
        self.sa_pub.write_bytes(
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def issue_client(self, file_name: str, common_name: str, organization: str | None = None) -> None:
        """One more client certificate from the existing CA (a component added to a running cluster)."""
        ca = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        self._issue(
            file_name, _name(common_name, organization), ca, ca_key, ExtendedKeyUsageOID.CLIENT_AUTH, []
        )

    def _issue(
        self,
        file_name: str,
        subject: x509.Name,
        ca: x509.Certificate,
        ca_key: rsa.RSAPrivateKey,
        usage: x509.ObjectIdentifier,
        sans: list[x509.GeneralName],
    ) -> None:
        key = _key()
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        _write_key(self.key(file_name), key)
        _write_cert(self.cert(file_name), builder.sign(ca_key, hashes.SHA256()))
