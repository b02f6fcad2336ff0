"""JSON Schemas of every message and an AsyncAPI 2.6 document of the topic map.

They let anyone use the fleet from any MQTT client: `fleetroom schema --out DIR`. Both formats are
described: the project's own messages, and the fleet-telemetry records a fleet started with
`--telemetry-format fleet-telemetry` publishes as well (`protocol.fleet_telemetry`).
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel

from protocol.base import SCHEMA_VERSION, WIRE_CONTRACT_VERSION
from protocol.codec import CHANNEL_KINDS, AnyMessage
from protocol.fleet_telemetry import (
    CONNECTIVITY_DELIVERY,
    FIELD_DELIVERY,
    FIELDS,
    SOURCE_REPOSITORY,
    connectivity_schema,
    field_schemas,
)
from protocol.topics import DELIVERY, Channel, Topics

# channel -> (topic template below the root, publisher, description); QoS and retain come from DELIVERY
CHANNEL_DOCS: dict[Channel, tuple[str, str, str]] = {
    Channel.VEHICLE_STATUS: ("vehicles/{vehicleId}/status", "vehicle",
                             "Liveness of one car; its `offline` form is the car's Last Will."),
    Channel.TELEMETRY: ("vehicles/{vehicleId}/telemetry", "vehicle",
                        "Periodic telemetry, fields named after fleet-telemetry signals."),
    Channel.OFFER: ("vehicles/{vehicleId}/offer", "vehicle", "Compute offers (ClassAd-like) and their withdrawal."),
    Channel.SHARDS: ("vehicles/{vehicleId}/shards", "vehicle",
                     "Shard progress with checkpoints, results, preemptions and refusals."),
    Channel.COMMANDS: ("commands/{vehicleId}", "dispatcher",
                       "Shard assignments and cancellations addressed to one car."),
    Channel.CONNECTION_STATUS: ("connections/{userName}/status", "fleet gateway, dispatcher",
                                "Liveness of a fleet gateway or the dispatcher (Last Will)."),
    Channel.JOB_SUBMIT: ("jobs/submit", "operator", "Job submissions."),
    Channel.JOB_STATE: ("jobs/{jobId}/state", "dispatcher",
                        "The ledger's view of one job; a rejected submission says why here."),
    Channel.SUMMARY: ("dispatcher/summary", "dispatcher", "Fleet aggregates, once a second."),
    Channel.DISPATCHER_CONTROL: ("control/dispatcher", "operator", "Policy changes, job cancellation."),
    Channel.FLEET_CONTROL: ("control/fleet", "operator", "Drive a car away; add cars; set a car's owner mode."),
    Channel.TRIPS: ("vehicles/{vehicleId}/trips", "vehicle", "One paid robotaxi trip; the dispatcher prices it."),
    Channel.EARNINGS: ("dispatcher/earnings", "dispatcher",
                       "The ledger's money: fleet, per owner mode, top cars and owners; every few seconds."),
    Channel.CAR_EARNINGS: ("dispatcher/earnings/cars/{vehicleId}", "dispatcher",
                           "One car's ledger figures, sent when they change."),
    Channel.ROSTER: ("gateways/{userName}/roster/{block}", "fleet gateway",
                     "The status of every car in one block of a gateway's cars (a snapshot superseding the "
                     "last); what per-car status messages say, for many cars at once."),
    Channel.OFFER_FRAME: ("gateways/{userName}/offers", "fleet gateway",
                          "Offers and withdrawals of many of a gateway's cars, in order; each item is the car's own."),
}

PARAMETERS = {
    "vehicleId": "A car's pseudonymous id (never VIN-like).",
    "userName": "The user name a process logs in as (a fleet gateway gw-*, or dispatcher), not its client id.",
    "jobId": "The id the submitter chose for its job.",
    "block": "A roster block: car i of a gateway, in join order, is in block i // 500.",
}
SCHEMA_ID_BASE = f"https://fleetroom.invalid/schema/v{SCHEMA_VERSION}"


def message_models() -> list[type[BaseModel]]:
    """Every wire message class, in the order of the union."""
    return list(get_args(get_args(AnyMessage)[0]))


def message_schemas() -> dict[str, dict[str, Any]]:
    """kind -> JSON Schema (validation mode) of that message."""
    out: dict[str, dict[str, Any]] = {}
    for model in message_models():
        kind = model.model_fields["kind"].default
        schema = model.model_json_schema(mode="validation")
        schema["$id"] = f"{SCHEMA_ID_BASE}/{kind}.json"
        out[str(kind)] = schema
    return out


def fleet_telemetry_schemas() -> dict[str, dict[str, Any]]:
    """Record name (a field name, or `connectivity`) -> JSON Schema of its payload."""
    return {**field_schemas(SCHEMA_ID_BASE), "connectivity": connectivity_schema(SCHEMA_ID_BASE)}


def fleet_telemetry_channels(base: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """AsyncAPI channels, messages and schemas of the fleet-telemetry records under `base`."""
    level = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"}
    vehicle = {"vehicleId": {"description": "The `<VIN>` level: " + PARAMETERS["vehicleId"], "schema": level}}
    schemas = {f"ft_{name}": schema for name, schema in fleet_telemetry_schemas().items()}
    messages = {
        key: {"name": key, "contentType": "application/json", "payload": {"$ref": f"#/components/schemas/{key}"}}
        for key in schemas
    }
    field_refs = [{"$ref": f"#/components/messages/ft_{name}"} for name in FIELDS]
    source = f"Tesla fleet-telemetry MQTT layout ({SOURCE_REPOSITORY}), sent with --telemetry-format fleet-telemetry."
    channels = {
        f"{base}/{{vehicleId}}/v/{{field}}": {
            "description": f"One vehicle field per message, the value alone. {source} Published by: vehicle.",
            "parameters": {**vehicle, "field": {"description": "A fleet-telemetry `Field` name.",
                                                "schema": {"type": "string", "enum": list(FIELDS)}}},
            "subscribe": {"operationId": "receive_fleet_telemetry_field", "message": {"oneOf": field_refs},
                          "bindings": {"mqtt": {"qos": FIELD_DELIVERY.qos, "retain": FIELD_DELIVERY.retain}}},
        },
        f"{base}/{{vehicleId}}/connectivity": {
            "description": f"A car's connection came up or went down. {source} Published by: vehicle or gateway.",
            "parameters": vehicle,
            "subscribe": {"operationId": "receive_fleet_telemetry_connectivity",
                          "message": {"$ref": "#/components/messages/ft_connectivity"},
                          "bindings": {"mqtt": {"qos": CONNECTIVITY_DELIVERY.qos,
                                                "retain": CONNECTIVITY_DELIVERY.retain}}},
        },
    }
    return channels, messages, schemas


def asyncapi_document(topics: Topics, telemetry_base: str | None = None) -> dict[str, Any]:
    """An AsyncAPI 2.6 description of the topics under `topics.root`, and of the fleet-telemetry base if given."""
    schemas = message_schemas()
    channels: dict[str, Any] = {}
    for channel, (template, publisher, text) in CHANNEL_DOCS.items():
        delivery = DELIVERY[channel]
        kinds = sorted(str(m.model_fields["kind"].default) for m in CHANNEL_KINDS[channel])
        refs = [{"$ref": f"#/components/messages/{k}"} for k in kinds]
        level = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"}
        params = {p: {"description": PARAMETERS[p], "schema": level} for p in PARAMETERS if "{" + p + "}" in template}
        entry: dict[str, Any] = {
            "description": f"{text} Published by: {publisher}.",
            "subscribe": {
                "operationId": f"receive_{channel.value}",
                "bindings": {"mqtt": {"qos": delivery.qos, "retain": delivery.retain}},
                "message": refs[0] if len(refs) == 1 else {"oneOf": refs},
            },
        }
        if params:
            entry["parameters"] = params
        channels[f"{topics.root}/{template}"] = entry
    messages = {
        kind: {"name": kind, "contentType": "application/json", "payload": {"$ref": f"#/components/schemas/{kind}"}}
        for kind in schemas
    }
    if telemetry_base is not None:
        ft_channels, ft_messages, ft_schemas = fleet_telemetry_channels(telemetry_base)
        channels.update(ft_channels)
        messages.update(ft_messages)
        schemas.update(ft_schemas)
    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "fleetroom fleet API",
            "version": WIRE_CONTRACT_VERSION,
            "description": "Parked electric cars as one distributed AI datacenter, over MQTT 3.1.1. "
            "Every payload is one JSON object whose `kind` names its message; see the schemas.",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"url": "127.0.0.1:1883", "protocol": "mqtt", "protocolVersion": "3.1.1"}},
        "channels": channels,
        "components": {"messages": messages, "schemas": schemas},
    }
