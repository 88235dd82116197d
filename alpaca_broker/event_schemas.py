"""JSON Schema (draft 2020-12) of every event type, generated from :mod:`alpaca_broker.events`.

A copy is committed under ``alpaca_broker/schemas/`` and shipped as package data, one file per
definition (``trade.json``, ``bar.json`` for ``bar``/``updated_bar``/``daily_bar``, ...) plus
``event.json``, which accepts any event. Regenerate it with
``python -m alpaca_broker.event_schemas`` (a test fails when the copy is stale).
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Final

from pydantic import TypeAdapter

from alpaca_broker.events import DEFINITIONS, field_names

DRAFT: Final = "https://json-schema.org/draft/2020-12/schema"
ID_BASE: Final = "https://alpaca-broker.invalid/schemas/"
TIME_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$"
"""``timestamp`` and ``received_at``: RFC 3339 UTC with ``Z`` and exactly nine digits."""
SCHEMA_DIR: Final = Path(__file__).resolve().parent / "schemas"


def file_stem(definition: type[Any]) -> str:
    """``TradeEvent`` -> ``trade``, ``CancelErrorEvent`` -> ``cancel_error``."""
    name = definition.__name__.removesuffix("Event")
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_")


def _definitions() -> list[type[Any]]:
    return list(dict.fromkeys(DEFINITIONS.values()))


def schema_of(definition: type[Any]) -> dict[str, Any]:
    """The JSON Schema of one definition: its fields in event order, no other keys allowed."""
    generated = TypeAdapter(definition).json_schema()
    properties = generated["properties"]
    for name in ("timestamp", "received_at"):
        properties[name]["pattern"] = TIME_PATTERN
    stem = file_stem(definition)
    schema: dict[str, Any] = {
        "$schema": DRAFT,
        "$id": f"{ID_BASE}{stem}.json",
        "title": generated["title"],
    }
    if "description" in generated:
        schema["description"] = generated["description"]
    schema["type"] = "object"
    schema["properties"] = {name: properties[name] for name in field_names(definition)}
    schema["required"] = [n for n in field_names(definition) if n in generated["required"]]
    schema["additionalProperties"] = False
    return schema


def generate() -> dict[str, dict[str, Any]]:
    """Every schema file's name -> its content (``event.json`` dispatches on ``type``)."""
    files = {f"{file_stem(d)}.json": schema_of(d) for d in _definitions()}
    files["event.json"] = {
        "$schema": DRAFT,
        "$id": f"{ID_BASE}event.json",
        "title": "Event",
        "description": "Any normalized alpaca-broker event, by its `type`.",
        "type": "object",
        "required": ["type"],
        "properties": {"type": {"enum": list(DEFINITIONS)}},
        "allOf": [
            {
                "if": {"properties": {"type": {"const": kind}}},
                "then": {"$ref": f"{file_stem(definition)}.json"},
            }
            for kind, definition in DEFINITIONS.items()
        ],
    }
    return files


def render(schema: dict[str, Any]) -> str:
    """The committed text of one schema file."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in generate().items():
        path = directory / name
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written


def load(kind: str) -> dict[str, Any]:
    """The shipped schema of event ``type`` ``kind`` (e.g. ``"trade"``), or of any event
    (``"event"``), read from the installed package data."""
    stem = "event" if kind == "event" else file_stem(DEFINITIONS[kind])
    text = resources.files("alpaca_broker").joinpath("schemas", f"{stem}.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def load_all() -> dict[str, dict[str, Any]]:
    """Every shipped schema by its ``$id``, for a ``$ref``-resolving validator registry."""
    folder = resources.files("alpaca_broker").joinpath("schemas")
    files = (f for f in folder.iterdir() if f.name.endswith(".json"))
    schemas = (json.loads(f.read_text("utf-8")) for f in files)
    return {schema["$id"]: schema for schema in schemas}


def main(argv: list[str] | None = None) -> int:
    """``python -m alpaca_broker.event_schemas [DIR]``: regenerate the schema files."""
    args = sys.argv[1:] if argv is None else argv
    for path in write(Path(args[0]) if args else SCHEMA_DIR):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
