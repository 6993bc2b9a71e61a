"""A node's TLS: its certificate, key and the cluster CA, and the gRPC credentials made of them.

The node serves TLS with its certificate; clients need no certificate of
their own. Links are mutual: the dialling region's TLS checks that the
acceptor's certificate names the region dialled (`<region>.region.plexus`),
and the acceptor checks that the dialler's certificate names the region its
hello claims. gRPC Python cannot ask a TLS client for an optional
certificate (only require one of every client, SDK clients included), so the
dialler proves its certificate inside the TLS stream instead: the call's
metadata carries the certificate and a signature, made with its key, over
the cluster, both regions, the time and a fresh nonce (`LinkProof`);
the acceptor verifies it against the cluster CA and never accepts a nonce
twice. plexus/certs.py makes such certificates.

A node imports this module (and with it cryptography) only when it has TLS:
node/server.py's `_load_tls`. What a node without TLS also needs, channels and
listener contexts, is in federation/transport.py.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from federation.transport import REGION_DOMAIN
from plexus.errors import ConfigError

__all__ = ["LinkProof", "NodeTls", "load_node_tls"]

# The link proof in a Link.Connect call's metadata (`-bin`: gRPC carries the bytes as base64).
CERT_KEY = "plexus-link-cert-bin"
PROOF_KEY = "plexus-link-proof-bin"
STAMP_KEY = "plexus-link-stamp"
# How far a proof's time may be from the acceptor's clock: covers clock skew between hosts.
PROOF_SKEW_MS = 120_000
# Nonces remembered against a replay: more than links can dial within the skew window.
SEEN_NONCES = 100_000


@dataclass(frozen=True)
class NodeTls:
    """The PEM bytes of a node's certificate, key and cluster CA, checked to belong together."""

    cert: bytes = field(repr=False)
    key: bytes = field(repr=False)
    ca: bytes = field(repr=False)
    private_key: Any = field(repr=False)
    ca_cert: x509.Certificate = field(repr=False)
    # The regions the certificate names (DNS `<region>.region.plexus`).
    regions: tuple[str, ...] = ()

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=False
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Verifying the peer against the cluster CA, presenting this node's certificate."""
        return grpc.ssl_channel_credentials(self.ca, self.key, self.cert)

    def link_proof(self, cluster: str) -> LinkProof:
        """What the links this node dials present, and what checks the links it accepts."""
        return LinkProof(self, cluster)


def load_node_tls(cert_file: Path, key_file: Path, ca_file: Path) -> NodeTls:
    """Read and check the three files; a ConfigError naming the file that is wrong."""
    cert_pem, key_pem, ca_pem = (_read(p) for p in (cert_file, key_file, ca_file))
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise ConfigError(str(cert_file), ["not a PEM certificate"]) from None
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError:
        raise ConfigError(str(ca_file), ["not a PEM certificate (the cluster CA)"]) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError(str(key_file), ["not an unencrypted PEM private key"]) from None
    if key.public_key() != cert.public_key():
        raise ConfigError(str(key_file), [f"is not the key of the certificate {cert_file}"])
    if cert.issuer != ca.subject:
        raise ConfigError(str(cert_file), [f"is not signed by the CA in {ca_file}"])
    return NodeTls(cert_pem, key_pem, ca_pem, key, ca, _regions_of(cert))


class LinkProof:
    """The dialler's proof that it holds a certificate naming its region, and its check."""

    def __init__(self, tls: NodeTls, cluster: str) -> None:
        self.tls = tls
        self.cluster = cluster
        self._seen: OrderedDict[bytes, int] = OrderedDict()

    def metadata(self, region: str, peer: str, now_ms: int) -> list[tuple[str, str | bytes]]:
        """What region `region` sends with the Link.Connect call it dials to `peer`."""
        nonce = os.urandom(16)
        signature = _sign(self.tls.private_key, self._message(region, peer, now_ms, nonce))
        return [
            (CERT_KEY, self.tls.cert),
            (PROOF_KEY, signature),
            (STAMP_KEY, f"{region}:{now_ms}:{nonce.hex()}"),
        ]

    def certified(
        self, metadata: Sequence[tuple[str, Any]], region: str, now_ms: int
    ) -> tuple[tuple[str, ...], str]:
        """(regions the dialler's certificate names, "") once its proof checks out at
        region `region`; else ((), why not)."""
        given = dict(metadata)
        cert_pem, signature, stamp = given.get(CERT_KEY), given.get(PROOF_KEY), given.get(STAMP_KEY)
        if not (isinstance(cert_pem, bytes) and isinstance(signature, bytes) and stamp):
            return (), "no certificate presented (is the dialler's TLS on?)"
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            cert.verify_directly_issued_by(self.tls.ca_cert)
        except (ValueError, TypeError, InvalidSignature):
            return (), "its certificate is not signed by this cluster's CA"
        if not cert.not_valid_before_utc.timestamp() * 1000 <= now_ms:
            return (), "its certificate is not valid yet"
        if now_ms > cert.not_valid_after_utc.timestamp() * 1000:
            return (), "its certificate has expired"
        claimed, sent_ms, nonce_hex = [*str(stamp).split(":"), "", ""][:3]
        try:
            sent, nonce = int(sent_ms), bytes.fromhex(nonce_hex)
        except ValueError:
            return (), "a malformed proof"
        if abs(now_ms - sent) > PROOF_SKEW_MS:
            return (), f"its proof is {abs(now_ms - sent) / 1000:.0f} s off this node's clock"
        message = self._message(claimed, region, sent, nonce)
        if not _verify(cert.public_key(), signature, message):
            return (), "its proof does not verify with its certificate (made for another region?)"
        if nonce in self._seen:
            return (), "a replayed proof"
        self._remember(nonce, sent)
        return _regions_of(cert), ""

    def _message(self, region: str, peer: str, at_ms: int, nonce: bytes) -> bytes:
        return f"plexus-link-cert-v1|{self.cluster}|{region}|{peer}|{at_ms}|".encode() + nonce

    def _remember(self, nonce: bytes, sent_ms: int) -> None:
        self._seen[nonce] = sent_ms
        while len(self._seen) > SEEN_NONCES:
            self._seen.popitem(last=False)


def _sign(key: Any, message: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(message)
    raise TypeError(f"unsupported key type {type(key).__name__}")


def _verify(public_key: Any, signature: bytes, message: bytes) -> bool:
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, message)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _regions_of(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    suffix = "." + REGION_DOMAIN
    return tuple(
        n.removesuffix(suffix) for n in san.get_values_for_type(x509.DNSName) if n.endswith(suffix)
    )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read: {exc.strerror}"]) from None
