"""Write the JSON Schema of every message and an AsyncAPI document of the topics.

With these, any MQTT client in any language can join the fleet, watch it or submit work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fleetroom.common import CliError, topics_from
from protocol.fleet_telemetry import default_base


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("fleetroom-schema"), help="directory (default: %(default)s)")
    parser.add_argument("--topic-prefix", default="fleetroom", help="topic prefix (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from protocol.schema import asyncapi_document, fleet_telemetry_schemas, message_schemas

    topics = topics_from(args)
    records = fleet_telemetry_schemas()
    try:
        for folder, schemas in (("messages", message_schemas()), ("fleet-telemetry", records)):
            (args.out / folder).mkdir(parents=True, exist_ok=True)
            for name, schema in schemas.items():
                (args.out / folder / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
        document = asyncapi_document(topics, default_base(topics))
        (args.out / "asyncapi.json").write_text(json.dumps(document, indent=2) + "\n")
    except OSError as exc:
        raise CliError(f"cannot write to {args.out}: {exc.strerror}") from None
    print(f"wrote {len(message_schemas())} message schemas, {len(records)} fleet-telemetry record schemas "
          f"and asyncapi.json to {args.out}")
    return 0
