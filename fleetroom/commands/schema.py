"""Write the JSON Schema of every message and an AsyncAPI document of the topics.

With these, any MQTT client in any language can join the fleet, watch it or submit work.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fleetroom.common import CliError, topics_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("fleetroom-schema"), help="directory (default: %(default)s)")
    parser.add_argument("--topic-prefix", default="fleetroom", help="topic prefix (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from protocol.schema import asyncapi_document, message_schemas

    topics = topics_from(args)
    try:
        (args.out / "messages").mkdir(parents=True, exist_ok=True)
        for kind, schema in message_schemas().items():
            (args.out / "messages" / f"{kind}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
        (args.out / "asyncapi.json").write_text(json.dumps(asyncapi_document(topics), indent=2) + "\n")
    except OSError as exc:
        raise CliError(f"cannot write to {args.out}: {exc.strerror}") from None
    print(f"wrote {len(message_schemas())} message schemas and asyncapi.json to {args.out}")
    return 0
