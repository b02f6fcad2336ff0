"""A local CA, the broker's certificate and per-client certificates, made with `cryptography`; TLS for both brokers.

`ensure_server_files(DIR)` keeps `ca.crt`/`ca.key` (10 years) and `server.crt`/`server.key`
(1 year, for 127.0.0.1 and localhost) in DIR: valid files are reused, a missing or stale
server certificate is issued again, and a CA that cannot be used is never overwritten (that
would silently break every client that trusts it). `issue_client_cert` writes
`DIR/clients/NAME.crt` with CN = the MQTT user name, for mutual TLS. Keys are EC P-256, 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocol.identity import role_of

CA_DAYS = 3650
SERVER_DAYS = 365
CLIENT_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)  # a server certificate this close to its end is issued again
DEFAULT_HOSTS = ("127.0.0.1", "localhost")
CA_NAME = "fleetroom local CA"
CLIENTS_DIR = "clients"


class TlsSetupError(RuntimeError):
    """TLS files that cannot be made or used; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where a broker's TLS files are: the CA (which clients trust) and the server's certificate and key."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def clients(self) -> Path:
        return self.directory / CLIENTS_DIR


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    """Write a secret file that is 0600 from its first byte, whatever the umask; replace atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


Key = ec.EllipticCurvePrivateKey


def _builder(subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
             ) -> x509.CertificateBuilder:
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject),
                                 x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetroom")]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))  # tolerate a little clock skew between machines
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _new_ca(files: TlsFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetroom")])
    cert = (
        _builder(CA_NAME, name, key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_private(files.ca_key, _key_pem(key))
    _write_public(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _issue(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str, days: int,
           usage: x509.ObjectIdentifier, hosts: Sequence[str] = ()) -> tuple[x509.Certificate, Key]:
    """A leaf certificate for `cn` signed by the CA: a server's (with `hosts` as SANs) or a client's."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(cn, ca.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _load_ca(files: TlsFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The CA in `files`, None if there is none; `TlsSetupError` if it is there but cannot be used."""
    present = [p.exists() for p in (files.ca_cert, files.ca_key)]
    if not any(present):
        return None
    if not all(present):
        missing = files.ca_key if present[0] else files.ca_cert
        raise TlsSetupError(f"{missing} is missing; remove the other ca.* file in {files.directory} to create a new CA")
    try:
        cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TlsSetupError(f"cannot use the CA in {files.directory}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise TlsSetupError(f"{files.ca_key} is not the key of {files.ca_cert}")
    if cert.not_valid_after_utc <= _now():
        raise TlsSetupError(f"the CA {files.ca_cert} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                            f"remove {files.directory}/ca.* to create a new one (clients must trust it again)")
    return cert, key


def _server_ok(files: TlsFiles, ca: x509.Certificate, hosts: Sequence[str]) -> bool:
    """Whether the server certificate and key exist, belong together, are signed by the CA and cover `hosts`."""
    try:
        cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
        key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca)
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
        return False
    covered = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} | set(sans.get_values_for_type(x509.DNSName))
    return (
        key.public_key() == cert.public_key()
        and cert.not_valid_after_utc - RENEW_BEFORE > _now()
        and {str(_san(h).value) for h in hosts} <= covered
    )


def ensure_server_files(directory: Path, hosts: Iterable[str] = ()) -> tuple[TlsFiles, list[Path]]:
    """The CA and a server certificate for 127.0.0.1, localhost and `hosts` in `directory`; also what was created."""
    files = TlsFiles(directory.resolve())
    names = list(dict.fromkeys([*DEFAULT_HOSTS, *(h for h in hosts if h not in ("0.0.0.0", "::", ""))]))
    try:
        files.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        created: list[Path] = []
        loaded = _load_ca(files)
        if loaded is None:
            loaded = _new_ca(files)
            created.append(files.ca_cert)
        ca, ca_key = loaded
        if not _server_ok(files, ca, names):
            cert, key = _issue(ca, ca_key, names[0], SERVER_DAYS, ExtendedKeyUsageOID.SERVER_AUTH, names)
            _write_private(files.server_key, _key_pem(key))
            _write_public(files.server_cert, cert.public_bytes(serialization.Encoding.PEM))
            created.append(files.server_cert)
    except OSError as exc:
        raise TlsSetupError(f"cannot write TLS files into {directory}: {exc.strerror or exc}") from None
    return files, created


def issue_client_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A client certificate with CN = `name` (a fleet user name), signed by the CA in `directory`: (cert, key) paths."""
    if role_of(name) is None:
        raise TlsSetupError(f"{name!r} is not a fleet user name (car-*, gw-*, dispatcher, operator, observer)")
    files, _ = ensure_server_files(directory)
    loaded = _load_ca(files)
    assert loaded is not None  # ensure_server_files made one
    cert, key = _issue(*loaded, name, CLIENT_DAYS, ExtendedKeyUsageOID.CLIENT_AUTH)
    try:
        files.clients.mkdir(mode=0o700, exist_ok=True)
        cert_path, key_path = files.clients / f"{name}.crt", files.clients / f"{name}.key"
        _write_private(key_path, _key_pem(key))
        _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    except OSError as exc:
        reason = exc.strerror or exc
        raise TlsSetupError(f"cannot write the client certificate into {files.clients}: {reason}") from None
    return cert_path, key_path


def server_ssl_context(files: TlsFiles, *, require_client_cert: bool = False) -> ssl.SSLContext:
    """The broker's side: TLS 1.2+, our certificate; client certificates checked against our CA (required if asked)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(files.ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.server_cert), str(files.server_key))
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def peer_common_name(peercert: object) -> str | None:
    """The CN of a verified peer certificate as `SSLObject.getpeercert()` returns it, or None."""
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def mosquitto_tls_lines(files: TlsFiles, *, require_client_cert: bool = False) -> list[str]:
    """mosquitto.conf lines for the listener above them: our CA and certificate, TLS 1.2+, and mutual TLS if asked.

    With mutual TLS a client needs a certificate from our CA and still logs in with its user
    name and password: the fleetroom plugin checks both, and that the certificate's CN is that
    user name (`use_identity_as_username` would skip the plugin's login check, and with it the
    binding of client ids to users).
    """
    lines = [
        f"cafile {files.ca_cert}",
        f"certfile {files.server_cert}",
        f"keyfile {files.server_key}",
        "tls_version tlsv1.2",  # the lowest accepted; newer ones are negotiated when both sides have them
    ]
    if require_client_cert:
        lines += ["require_certificate true"]
    return lines
