"""Client TLS for mqtts:// URLs: a verifying SSL context (TLS 1.2+, host names checked), and its failures in words."""

from __future__ import annotations

import os
import ssl
from functools import lru_cache

from mqttlink.url import BrokerUrl, BrokerUrlError

# What OpenSSL says, and what the user should hear (first match wins).
_TLS_PROBLEMS = (
    ("hostname mismatch", "the broker's certificate is not for this host name"),
    ("ip address mismatch", "the broker's certificate is not for this address"),
    ("certificate has expired", "a certificate has expired"),
    ("self-signed certificate", "the broker's certificate is not signed by the CA given (--ca-file)"),
    ("unable to get local issuer certificate", "the broker's certificate is not signed by the CA given (--ca-file)"),
    ("certificate verify failed", "the broker's certificate failed verification"),
    ("certificate required", "the broker requires a client certificate (--client-cert, --client-key)"),
    ("unknown ca", "the broker does not trust the client certificate's CA"),
    ("bad certificate", "the broker refused the client certificate"),
    ("wrong version number", "the broker did not answer in TLS (is it a plain mqtt:// port?)"),
    ("unsupported protocol", "the broker does not speak TLS 1.2 or later"),
)


def client_cert_files(url: BrokerUrl) -> tuple[str, str] | None:
    """The certificate and key this login presents: the given files, or `NAME.crt`/`NAME.key` in a directory."""
    if not url.client_cert:
        return None
    if os.path.isdir(url.client_cert):
        if not url.username:
            return None  # an anonymous login has no name to find its certificate by
        base = os.path.join(url.client_cert, url.username)
        return f"{base}.crt", url.client_key if url.client_key and not os.path.isdir(url.client_key) else f"{base}.key"
    return url.client_cert, url.client_key or url.client_cert


def per_user_certs(url: BrokerUrl) -> bool:
    """Whether `url` names a directory of client certificates, one per user name."""
    return bool(url.client_cert) and os.path.isdir(url.client_cert or "")


def client_ssl_context(url: BrokerUrl) -> ssl.SSLContext:
    """A new SSL context for `url`: the broker verified (CA file, else the system's), TLS 1.2+, a client certificate.

    Raises `BrokerUrlError` with one line when a file is missing or not what it should be.
    """
    cert = client_cert_files(url)
    return _context(url.ca_file, *(cert or (None, None)))


@lru_cache(maxsize=256)
def shared_client_ssl_context(url: BrokerUrl) -> ssl.SSLContext:
    """`client_ssl_context`, built once per URL (loading the system's CAs costs milliseconds)."""
    return client_ssl_context(url)


def _context(ca_file: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise BrokerUrlError(f"cannot use CA file {ca_file}: {_os_reason(exc)}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerUrlError(f"cannot use client certificate {cert} with key {key}: {_os_reason(exc)}") from None
    return context


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason.lower().replace("_", " ") if exc.reason else str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


def silent_close_hint(url: BrokerUrl) -> str:
    """What to suspect when a TLS broker ends a connection without a word (amqtt sends no alert).

    A broker that requires client certificates may close the connection of a client without
    one right after the handshake, and the client then only sees silence or an end of stream.
    """
    if url.tls and not url.client_cert:
        return " (over TLS without a client certificate: if the broker requires one, give --client-cert)"
    return ""


def tls_problem(text: str) -> str | None:
    """What a TLS failure's message means for the user, or None if it is not a TLS failure."""
    lowered = text.lower()
    for needle, meaning in _TLS_PROBLEMS:
        if needle in lowered:
            detail = text.split("] ", 1)[-1].split(" (_ssl.c", 1)[0]
            return f"{meaning} ({detail})"
    if "[ssl" in lowered or "tlsv1" in lowered or "sslv3" in lowered:
        return text.split(" (_ssl.c", 1)[0]
    return None
