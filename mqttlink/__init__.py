"""The MQTT client helper every fleetroom part uses: URLs, client ids, Last Will, reconnection, operator commands."""

from __future__ import annotations

from mqttlink.backoff import Backoff
from mqttlink.bulk import BulkLink, BulkLinkError, Outgoing, WillSpec, stay_connected_bulk
from mqttlink.client import (
    BrokerUnreachable,
    LinkEvent,
    LinkState,
    check_broker,
    client_id_of,
    describe_error,
    make_client,
    new_client_id,
    stay_connected,
)
from mqttlink.operator import NoDispatcher, OperatorCommand, OperatorLink, new_job_id
from mqttlink.packets import Received
from mqttlink.tasks import cancel_and_wait
from mqttlink.tls import client_ssl_context, per_user_certs, silent_close_hint, tls_problem
from mqttlink.url import (
    BROKER_ENV,
    CA_ENV,
    CLIENT_CERT_ENV,
    CLIENT_KEY_ENV,
    BrokerUrl,
    BrokerUrlError,
    broker_url_from,
    parse_broker_url,
    tls_files_from_env,
)

__all__ = [
    "BROKER_ENV",
    "CA_ENV",
    "CLIENT_CERT_ENV",
    "CLIENT_KEY_ENV",
    "Backoff",
    "BrokerUnreachable",
    "BrokerUrl",
    "BrokerUrlError",
    "BulkLink",
    "BulkLinkError",
    "LinkEvent",
    "LinkState",
    "NoDispatcher",
    "OperatorCommand",
    "OperatorLink",
    "Outgoing",
    "Received",
    "WillSpec",
    "broker_url_from",
    "cancel_and_wait",
    "check_broker",
    "client_id_of",
    "client_ssl_context",
    "describe_error",
    "make_client",
    "new_client_id",
    "new_job_id",
    "parse_broker_url",
    "per_user_certs",
    "silent_close_hint",
    "stay_connected",
    "stay_connected_bulk",
    "tls_files_from_env",
    "tls_problem",
]
