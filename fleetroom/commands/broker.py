"""Run the embedded amqtt broker in the foreground, or write an equivalent Mosquitto config.

By default the broker requires fleet credentials: each user's password is derived from the
fleet secret (--secret-file, $FLEETROOM_SECRET, or .fleetroom/secret, created if missing).
Cars may write only under their own name; `--anonymous` opens it up (the demo does).

With --tls it serves mqtts:// only (port 8883 by default), with a local CA and a server
certificate it keeps in --tls-dir (created if missing); clients pass --ca-file DIR/ca.crt.
--require-client-cert adds mutual TLS: every client needs a certificate from that CA whose
CN is its user name (`fleetroom certs issue NAME`, or --client-certs NAME,...).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fleetroom.common import DEFAULT_TLS_DIR, CliError, read_secret, run_async, setup_logging, topics_from, whole

if TYPE_CHECKING:
    from broker.tls import TlsFiles


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=whole(0, 65535), help="port to bind; 0 picks a free one (default: 1883, with --tls 8883)"
    )
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file once listening")
    parser.add_argument("--anonymous", action="store_true", help="allow anyone to connect and publish anywhere")
    parser.add_argument(
        "--topic-prefix", default="fleetroom", help="topic prefix the ACL applies to (default: %(default)s)"
    )
    parser.add_argument("--secret-file", type=Path, help="fleet secret file (created if missing)")
    parser.add_argument(
        "--write-mosquitto-config", type=Path, metavar="DIR",
        help="build the fleetroom Mosquitto plugin and write mosquitto.conf, secret and rules for the same "
             "security into DIR, then exit (needs cc and Debian's mosquitto-dev, libmosquitto-dev, libssl-dev)",
    )
    parser.add_argument("--user", action="append", default=[], metavar="NAME",
                        help="with --write-mosquitto-config: a car or gateway (gw-*) user name to check; every "
                             "valid fleet user can log in with its derived password, no list is needed")
    parser.add_argument("--users-file", type=Path,
                        help="with --write-mosquitto-config: user names to check, one per line")
    add_tls_server_arguments(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")


def add_tls_server_arguments(parser: argparse.ArgumentParser) -> None:
    """--tls, --tls-dir, --require-client-cert and --client-certs."""
    tls = parser.add_argument_group("TLS")
    tls.add_argument("--tls", action="store_true", help="serve mqtts:// only, with a local CA and server certificate")
    tls.add_argument("--tls-dir", type=Path, default=DEFAULT_TLS_DIR, metavar="DIR",
                     help="where the CA, the server's and the clients' certificates are kept (default: %(default)s)")
    tls.add_argument("--require-client-cert", action="store_true",
                     help="with --tls: mutual TLS; a client needs a certificate from the CA whose CN is its user name")
    tls.add_argument("--client-certs", metavar="NAME,...",
                     help="with --tls: issue client certificates for these users into DIR/clients first")


def _tls_files(args: argparse.Namespace) -> TlsFiles | None:
    """The TLS files for --tls (made or reused), with any client certificates asked for; None without --tls."""
    from broker.tls import TlsSetupError, ensure_server_files, issue_client_cert

    if not args.tls:
        if args.require_client_cert or args.client_certs:
            raise CliError("--require-client-cert and --client-certs need --tls")
        return None
    names = [n.strip() for n in (args.client_certs or "").split(",") if n.strip()]
    try:
        files, created = ensure_server_files(args.tls_dir, [args.host])
        for name in names:
            created += issue_client_cert(args.tls_dir, name)[:1]
    except TlsSetupError as exc:
        raise CliError(str(exc)) from None
    for path in created:
        print(f"created {path}", file=sys.stderr)
    return files


def _checked_users(args: argparse.Namespace) -> list[str]:
    """The --user and --users-file names; a CliError for the first that is not a car or gateway."""
    from protocol.identity import Role, role_of

    names = list(args.user)
    if args.users_file is not None:
        try:
            names += [line.strip() for line in args.users_file.read_text().splitlines() if line.strip()]
        except OSError as exc:
            raise CliError(f"cannot read --users-file {args.users_file}: {exc.strerror}") from None
    bad = [n for n in names if role_of(n) not in (Role.VEHICLE, Role.GATEWAY)]
    if bad:
        raise CliError(f"not a car or gateway user name: {bad[0]!r}")
    return names


def _write_config(args: argparse.Namespace) -> int:
    from broker.mosquitto_config import PluginBuildError, write_mosquitto_config
    from broker.tls import mosquitto_tls_lines

    _checked_users(args)
    if args.port == 0:
        raise CliError("--port 0 cannot be used with --write-mosquitto-config: mosquitto needs a fixed port")
    secret = read_secret(args.secret_file, create=True)
    assert secret is not None
    files = _tls_files(args)
    tls = [] if files is None else mosquitto_tls_lines(files, require_client_cert=args.require_client_cert)
    try:
        paths = write_mosquitto_config(
            args.write_mosquitto_config, secret, topics_from(args), port=args.port, host=args.host,
            extra_lines=tls,
        )
    except (PluginBuildError, ValueError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write the mosquitto config into {args.write_mosquitto_config}: "
                       f"{exc.strerror or exc}") from None
    for path in paths:
        print(path)
    print(f"run: mosquitto -c {paths[0]}", file=sys.stderr)
    if files is not None:
        print(_client_hint(files, args.host, args.port), file=sys.stderr)
    return 0


def _client_hint(files: TlsFiles, host: str, port: int) -> str:
    """How clients reach a TLS broker: its URL and the CA they must trust."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"TLS: CA {files.ca_cert}; clients: --broker mqtts://{shown}:{port} --ca-file {files.ca_cert}"


async def _serve(args: argparse.Namespace) -> int:
    from broker.embedded import BrokerSettings, BrokerStartError, EmbeddedBroker

    secret = None if args.anonymous else read_secret(args.secret_file, create=True)
    files = _tls_files(args)
    try:
        settings = BrokerSettings(
            host=args.host, port=args.port, allow_anonymous=args.anonymous,
            secret=secret or b"", topic_prefix=topics_from(args).prefix,
            tls=files, require_client_cert=args.require_client_cert,
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broker = EmbeddedBroker(settings)
    try:
        await broker.start()
    except BrokerStartError as exc:
        raise CliError(str(exc)) from None
    try:
        mode = "anonymous" if args.anonymous else "fleet credentials required"
        if files is not None:
            mode += ", TLS only" + (", client certificates required" if args.require_client_cert else "")
        scheme = "mqtt" if files is None else "mqtts"
        print(f"fleetroom broker: listening on {scheme}://{args.host}:{broker.port} ({mode})", flush=True)
        if files is not None:
            print(_client_hint(files, args.host, broker.port), flush=True)
        if args.port_file is not None:
            try:
                args.port_file.write_text(f"{broker.port}\n")
            except OSError as exc:
                raise CliError(f"cannot write --port-file {args.port_file}: {exc.strerror or exc}") from None
        await stop.wait()
    finally:
        await broker.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    if args.port is None:
        args.port = 8883 if args.tls else 1883
    if args.write_mosquitto_config is not None:
        return _write_config(args)
    if args.port_file is not None and not args.port_file.parent.is_dir():
        raise CliError(f"cannot write --port-file {args.port_file}: no directory {args.port_file.parent}")
    return run_async(_serve(args))
