"""TLS material for the webhook: a private CA and the serving certificate, and where they live."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "MIN_REMAINING",
    "CertBundle",
    "generate_bundle",
    "load_bundle",
    "renewed_bundle",
    "rotation_reasons",
    "service_dns_names",
    "write_bundle",
]

log = logging.getLogger(__name__)

# A pair closer than this to expiry is replaced (cert-manager's default renewBefore is a third of 90 days).
MIN_REMAINING = timedelta(days=30)
# Certificates start this far in the past, so a replica or API server with a slightly slow clock accepts them.
CLOCK_SKEW = timedelta(minutes=5)
DEFAULT_CA_VALID_DAYS = 3650

# File names of the pair (and keys in the Secret): the kubernetes.io/tls pair, plus the CA and its key.
TLS_CERT_KEY = "tls.crt"
TLS_KEY_KEY = "tls.key"
CA_CERT_KEY = "ca.crt"
CA_KEY_KEY = "ca.key"


@dataclass(frozen=True)
class CertBundle:
    """PEM bytes: the CA bundle to trust (``caBundle``), the serving certificate, and its key.

    ``ca_key_pem`` is the key of the first CA in ``ca_pem``, present only for
    bundles Ferry generated (it lets a rotation keep the CA).
    """

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    ca_key_pem: bytes | None = field(default=None, repr=False)


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names the API server may use for a Service: svc, svc.ns, svc.ns.svc, svc.ns.svc.cluster.local."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _new_ca(now: datetime, valid_days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    # A unique name per CA, so an old and a new CA can sit side by side in one caBundle.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ferry"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ferry-webhook-ca-{secrets.token_hex(4)}"),
        ]
    )
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=valid_days))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    dns_names: Sequence[str],
    ip_addresses: Sequence[str],
    now: datetime,
    valid_days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    not_after = min(now + timedelta(days=valid_days), ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def generate_bundle(
    dns_names: Sequence[str],
    *,
    ip_addresses: Sequence[str] = (),
    valid_days: int = 365,
    ca_valid_days: int = DEFAULT_CA_VALID_DAYS,
    now: datetime | None = None,
) -> CertBundle:
    """A new CA and a serving certificate for `dns_names`/`ip_addresses` (SANs, serverAuth EKU).

    `now` moves the validity window (tests make expired bundles with it).
    """
    now = now or datetime.now(UTC)
    ca_key, ca_cert = _new_ca(now, max(ca_valid_days, valid_days))
    key, cert = _issue_leaf(ca_key, ca_cert, dns_names, ip_addresses, now, valid_days)
    return CertBundle(ca_pem=_pem(ca_cert), cert_pem=_pem(cert), key_pem=_key_pem(key), ca_key_pem=_key_pem(ca_key))


def _load_ec_key(pem: bytes) -> ec.EllipticCurvePrivateKey | None:
    key = serialization.load_pem_private_key(pem, password=None)
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _same_public_key(private_key: Any, cert: x509.Certificate) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(private_key.public_key().public_bytes(*fmt) == cert.public_key().public_bytes(*fmt))


def _leaf_dns_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {name.lower() for name in san.get_values_for_type(x509.DNSName)}


def rotation_reasons(
    bundle: CertBundle,
    dns_names: Sequence[str],
    *,
    now: datetime | None = None,
    min_remaining: timedelta = MIN_REMAINING,
) -> list[str]:
    """Why `bundle` cannot keep serving `dns_names` (empty: it can). Never raises."""
    now = now or datetime.now(UTC)
    try:
        cert = x509.load_pem_x509_certificate(bundle.cert_pem)
        cas = x509.load_pem_x509_certificates(bundle.ca_pem)
        key = serialization.load_pem_private_key(bundle.key_pem, password=None)
    except (ValueError, TypeError) as exc:
        return [f"unreadable: {exc}"]
    reasons = []
    if not _same_public_key(key, cert):
        reasons.append("the key does not match the certificate")
    if cert.not_valid_after_utc - now < min_remaining:
        reasons.append(f"the certificate expires at {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    missing = sorted({name.lower() for name in dns_names} - _leaf_dns_names(cert))
    if missing:
        reasons.append(f"the certificate lacks DNS names {', '.join(missing)}")
    issuer = next((ca for ca in cas if ca.subject == cert.issuer), None)
    if issuer is None:
        reasons.append("no CA in the bundle issued the certificate")
    else:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            reasons.append("the certificate's signature does not verify against the CA")
        if issuer.not_valid_after_utc < cert.not_valid_after_utc:
            reasons.append("the CA expires before the certificate")
    return reasons


def renewed_bundle(bundle: CertBundle | None, dns_names: Sequence[str], now: datetime) -> CertBundle:
    """A fresh serving certificate, from the same CA while that CA has life left, else from a new CA."""
    valid_days = 365
    if bundle is not None and bundle.ca_key_pem:
        try:
            ca_key = _load_ec_key(bundle.ca_key_pem)
            cas = x509.load_pem_x509_certificates(bundle.ca_pem)
        except ValueError:
            ca_key, cas = None, []
        current = cas[0] if cas else None
        if (
            ca_key is not None
            and current is not None
            and _same_public_key(ca_key, current)
            and current.not_valid_after_utc - now >= MIN_REMAINING + timedelta(days=valid_days)
        ):
            key, cert = _issue_leaf(ca_key, current, dns_names, (), now, valid_days)
            ca_pem = b"".join(_pem(ca) for ca in cas if ca.not_valid_after_utc > now)
            return CertBundle(ca_pem=ca_pem, cert_pem=_pem(cert), key_pem=_key_pem(key), ca_key_pem=bundle.ca_key_pem)
    fresh = generate_bundle(dns_names, valid_days=valid_days, now=now)
    if bundle is None:
        return fresh
    try:  # keep trusting the old CA(s) until they expire: replicas may still serve the old certificate
        still_valid = [ca for ca in x509.load_pem_x509_certificates(bundle.ca_pem) if ca.not_valid_after_utc > now]
    except ValueError:
        still_valid = []
    ca_pem = fresh.ca_pem + b"".join(_pem(ca) for ca in still_valid)
    return CertBundle(ca_pem=ca_pem, cert_pem=fresh.cert_pem, key_pem=fresh.key_pem, ca_key_pem=fresh.ca_key_pem)


def load_bundle(cert_file: str | Path, key_file: str | Path, ca_file: str | Path | None = None) -> CertBundle:
    """A bundle from files (cert-manager's tls.crt/tls.key/ca.crt); ValueError if the key does not match."""
    cert_pem = Path(cert_file).read_bytes()
    key_pem = Path(key_file).read_bytes()
    ca_pem = Path(ca_file).read_bytes() if ca_file is not None else b""
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not _same_public_key(key, cert):
        raise ValueError(f"{key_file} is not the key of the certificate in {cert_file}")
    return CertBundle(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bundle(bundle: CertBundle, directory: Path) -> tuple[Path, Path, Path]:
    """Write tls.crt, tls.key (mode 0600) and ca.crt into `directory`; returns (cert, key, ca).

    Each file is replaced atomically, so a reader (the server's reloader) sees an
    old or a new file, never half of one; it re-checks that cert and key match.
    The CA key is never written to disk.
    """
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path, ca_path = directory / TLS_CERT_KEY, directory / TLS_KEY_KEY, directory / CA_CERT_KEY
    _write_atomic(key_path, bundle.key_pem, 0o600)
    _write_atomic(cert_path, bundle.cert_pem, 0o644)
    _write_atomic(ca_path, bundle.ca_pem, 0o644)
    return cert_path, key_path, ca_path
