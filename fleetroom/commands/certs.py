"""Issue client certificates for mutual TLS: CN = the MQTT user name, signed by the broker's local CA.

`fleetroom certs issue car-aa gw-0-...` writes DIR/clients/NAME.crt and NAME.key (0600),
creating the CA in DIR first if there is none (the same DIR as `fleetroom broker --tls-dir`).
A client then connects with `--client-cert DIR/clients/NAME.crt --client-key DIR/clients/NAME.key`,
or a whole fleet with `--client-cert DIR/clients` (each car finds its own NAME.crt there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fleetroom.common import DEFAULT_TLS_DIR, CliError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    issue = sub.add_parser("issue", help="issue a client certificate for each user name")
    issue.add_argument("names", nargs="+", metavar="NAME", help="fleet user names: car ids, gw-..., dispatcher, ...")
    issue.add_argument("--tls-dir", type=Path, default=DEFAULT_TLS_DIR, metavar="DIR",
                       help="the broker's TLS directory, holding its CA (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from broker.tls import TlsSetupError, issue_client_cert

    for name in args.names:
        try:
            cert, key = issue_client_cert(args.tls_dir, name)
        except TlsSetupError as exc:
            raise CliError(str(exc)) from None
        print(f"{cert} {key}")
    return 0
