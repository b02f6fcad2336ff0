"""The `--metrics-port` and `--metrics-host` flags the dispatcher and the fleet share."""

from __future__ import annotations

import argparse

from fleetroom.common import whole

PORT = whole(0, 65535)
DEFAULT_HOST = "127.0.0.1"


def add_metrics_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str) -> None:
    """Add the flags that serve `what`'s metrics for Prometheus (off unless a port is given)."""
    parser.add_argument("--metrics-port", type=PORT, metavar="PORT",
                        help=f"serve {what}'s metrics for Prometheus at http://HOST:PORT/metrics; 0 takes any "
                             "free port, printed at start (default: no metrics)")
    parser.add_argument("--metrics-host", default=DEFAULT_HOST, metavar="HOST",
                        help="address the metrics are served on (default: %(default)s, this machine only)")

