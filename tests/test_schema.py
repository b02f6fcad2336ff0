"""`fleetroom schema`: every message's JSON Schema accepts real messages; AsyncAPI covers every topic."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from protocol import CHANNEL_KINDS, DELIVERY, Channel, Delivery, Topics, encode
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


def test_every_channel_has_one_delivery_and_the_asyncapi_bindings_are_that_table() -> None:
    assert set(DELIVERY) == set(CHANNEL_DOCS) == set(CHANNEL_KINDS) == set(Channel)
    channels = asyncapi_document(Topics("fleet"))["channels"]
    for channel, (template, _, _) in CHANNEL_DOCS.items():
        binding = channels[f"fleet/v1/{template}"]["subscribe"]["bindings"]["mqtt"]
        assert Delivery(binding["qos"], binding["retain"]) == DELIVERY[channel], channel
    # once a second and superseded by the next one: QoS 0, retained (it was QoS 1 in the docs)
    assert DELIVERY[Channel.SUMMARY] == Delivery(qos=0, retain=True)


def _protocol_md_rows() -> dict[str, tuple[int, bool]]:
    """docs/PROTOCOL.md's topic table: template (parameter names blanked) -> (QoS, retained)."""
    text = (Path(__file__).parents[1] / "docs" / "PROTOCOL.md").read_text()
    table = text[text.index("## Topics"):]
    rows: dict[str, tuple[int, bool]] = {}
    for line in table.splitlines()[3:]:
        if not line.startswith("| `"):
            break
        topic, _, qos, retained, _ = (cell.strip() for cell in line.strip("|").split(" | "))
        rows[re.sub(r"\{[^}]*\}", "{}", topic.strip("`"))] = (int(qos), {"yes": True, "no": False}[retained])
    return rows


def test_the_protocol_docs_table_says_what_delivery_says() -> None:
    rows = _protocol_md_rows()
    expected = {re.sub(r"\{[^}]*\}", "{}", template): (DELIVERY[channel].qos, DELIVERY[channel].retain)
                for channel, (template, _, _) in CHANNEL_DOCS.items()}
    assert rows == expected


def test_schema_command_writes_files(tmp_path: Path) -> None:
    out = tmp_path / "s"
    proc = subprocess.run([sys.executable, "-m", "fleetroom", "schema", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (out / "asyncapi.json").exists()
    assert len(list((out / "messages").glob("*.schema.json"))) == len(message_schemas())
