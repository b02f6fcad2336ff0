"""`fleetroom schema`: every message's JSON Schema accepts real messages; AsyncAPI covers every topic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from protocol import CHANNEL_KINDS, Topics, encode
from protocol.schema import CHANNEL_DOCS, asyncapi_document, message_schemas
from tests.support.samples import all_samples


@pytest.mark.parametrize("message", all_samples(), ids=lambda m: m.kind)
def test_schema_accepts_the_encoded_message(message: object) -> None:
    schema = message_schemas()[message.kind]  # type: ignore[attr-defined]
    jsonschema.validate(json.loads(encode(message)), schema)  # type: ignore[arg-type]


def test_schema_rejects_an_extra_field() -> None:
    message = all_samples()[0]
    obj = json.loads(encode(message))
    obj["extra"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, message_schemas()[message.kind])


def test_asyncapi_names_every_channel_and_message() -> None:
    doc = asyncapi_document(Topics("fleet"))
    assert set(CHANNEL_DOCS) == set(CHANNEL_KINDS)
    assert len(doc["channels"]) == len(CHANNEL_KINDS)
    assert "fleet/v1/vehicles/{vehicleId}/telemetry" in doc["channels"]
    assert set(doc["components"]["messages"]) == set(message_schemas())
    telemetry = doc["channels"]["fleet/v1/vehicles/{vehicleId}/telemetry"]
    assert telemetry["subscribe"]["bindings"]["mqtt"] == {"qos": 0, "retain": False}


def test_schema_command_writes_files(tmp_path: Path) -> None:
    out = tmp_path / "s"
    proc = subprocess.run([sys.executable, "-m", "fleetroom", "schema", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (out / "asyncapi.json").exists()
    assert len(list((out / "messages").glob("*.schema.json"))) == len(message_schemas())
