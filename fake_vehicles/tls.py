"""TLS for the fleet's paho connections, whose handshakes the fleet's own selector drives.

paho's `connect` does the TLS handshake blocking, for up to its connect timeout: with one
thread running thousands of cars, one slow broker would stall them all. The socket class
below leaves the handshake to `step_handshake`, which `Net` calls whenever the socket is
ready, and remembers why a TLS connection failed so that the car can say so in one line.
"""

from __future__ import annotations

import ssl
from typing import Any

from mqttlink import BrokerUrl, client_ssl_context, tls_problem

HANDSHAKE_TIMEOUT_S = 10.0
# failures that will not mend by trying again: like a refused login, they stop the connection
PERMANENT = ("certificate", "unknown ca", "not signed", "not for this", "did not answer in tls", "tls 1.2")


class LoopTlsSocket(ssl.SSLSocket):
    """An SSL socket whose handshake happens in the selector loop, and which remembers its last TLS failure."""

    failure: str | None = None

    def do_handshake(self, block: bool = False) -> None:
        """Do nothing here: paho calls this in `connect` and would block; `step_handshake` does the work."""

    def step_handshake(self) -> bool | None:
        """One non-blocking step: True when done, False to wait for reading, None to wait for writing.

        Raises `ssl.SSLError` (remembered in `failure`) when the handshake fails.
        """
        try:
            super().do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLWantWriteError:
            return None
        except (ssl.SSLError, OSError) as exc:
            self.failure = str(exc) or type(exc).__name__
            raise
        return True

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:  # e.g. the broker's alert that it wants a client certificate
            self.failure = str(exc)
            raise


class TlsContexts:
    """One client context per CA and certificate (a fleet of cars with their own certificates has one each)."""

    def __init__(self) -> None:
        self._contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}

    def for_url(self, url: BrokerUrl) -> ssl.SSLContext:
        """The context for `url`; raises `BrokerUrlError` (one line) if a file cannot be used."""
        per_user = url.username if url.client_cert else None
        key = (url.ca_file, url.client_cert, url.client_key, per_user)
        context = self._contexts.get(key)
        if context is None:
            context = client_ssl_context(url)
            context.sslsocket_class = LoopTlsSocket
            self._contexts[key] = context
        return context


def permanent_failure(failure: str | None) -> str | None:
    """The user's words for a TLS failure that trying again will not mend (a certificate problem), else None."""
    problem = tls_problem(failure) if failure else None
    if problem is not None and any(word in problem.lower() for word in PERMANENT):
        return problem
    return None
