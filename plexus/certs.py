"""A cluster's own certificates: a CA, and one certificate per region signed by it.

`plexus cert` and `plexus up` make them with `cryptography`; the nodes load
them (federation/tls.py). A node certificate names its region twice: CN = the
region, and the DNS name `<region>.region.plexus`, which is what a link checks
(the other names are the hosts and addresses the node is reached on, which is
what clients check). Keys are ECDSA P-256: small, fast, spoken by every TLS stack.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from plexus.errors import InvalidArgument
from plexus.local.private import open_private, private_dir

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CertificateError",
    "NodeFiles",
    "make_ca",
    "make_node_cert",
    "region_dns_name",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_VALID_DAYS = 3650
NODE_VALID_DAYS = 825
# The DNS name suffix that names a region in its certificate (federation/tls.py checks it).
REGION_DOMAIN = "region.plexus"
REGION_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*$")


class CertificateError(InvalidArgument):
    """A CA or certificate that cannot be made or read: names the file or the value."""


@dataclass(frozen=True)
class NodeFiles:
    cert: Path
    key: Path


def region_dns_name(region: str) -> str:
    return f"{region}.{REGION_DOMAIN}"


def make_ca(out: Path, name: str = "plexus cluster CA") -> Path:
    """Write `ca.crt` and `ca.key` into `out` (made 0700); refuses to overwrite a CA."""
    cert_path, key_path = out / CA_CERT, out / CA_KEY
    for path in (cert_path, key_path):
        if path.exists():
            raise CertificateError(f"{path} exists already: a new CA would orphan its certificates")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
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
    _make_dir(out)
    _write(key_path, _key_bytes(key))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def make_node_cert(ca_dir: Path, region: str, hosts: list[str], out: Path) -> NodeFiles:
    """Write `<region>.crt` and `<region>.key` into `out`, signed by the CA in `ca_dir`.

    The certificate names the region (CN and `<region>.region.plexus`) and every
    host name or IP address in `hosts` (the addresses clients and regions dial).
    """
    if not REGION_NAME.match(region):
        raise CertificateError(
            f"region {region!r} must be 1-32 lower-case letters, digits or '-', "
            "starting with a letter"
        )
    names: list[x509.GeneralName] = [x509.DNSName(region_dns_name(region))]
    for host in hosts:
        names.append(_general_name(host))
    ca_cert, ca_key = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, region)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=NODE_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # Both: a node serves clients and regions, and presents it when it dials a link.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = NodeFiles(out / f"{region}.crt", out / f"{region}.key")
    if files.cert.absolute() == (ca_dir / CA_CERT).absolute():
        raise CertificateError(f"region {region!r} would overwrite {files.cert}: use another --out")
    _make_dir(out)
    _write(files.key, _key_bytes(key))
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    if not HOST_NAME.match(host):
        raise CertificateError(f"host {host!r} is neither a host name nor an IP address")
    return x509.DNSName(host)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as exc:
        raise CertificateError(
            f"{cert_path}: cannot read the CA certificate: {exc.strerror}"
        ) from None
    except ValueError:
        raise CertificateError(f"{cert_path}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise CertificateError(f"{key_path}: cannot read the CA key: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise CertificateError(f"{key_path}: not an unencrypted PEM private key") from None
    if key.public_key() != cert.public_key():
        raise CertificateError(f"{key_path} is not the key of {cert_path}")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{key_path}: not an ECDSA key (made by 'plexus cert ca')")
    return cert, key


def _key_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_dir(path: Path) -> None:
    try:
        private_dir(path)
    except FileExistsError:
        raise CertificateError(f"{path}: not a directory") from None
    except OSError as exc:
        raise CertificateError(f"{path}: cannot create the directory: {exc.strerror}") from None


def _write(path: Path, data: bytes) -> None:
    """Created 0600 from the start: a key is never readable by others, not even briefly."""
    try:
        with os.fdopen(open_private(path, os.O_WRONLY | os.O_TRUNC), "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise CertificateError(f"{path}: cannot write: {exc.strerror}") from None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
