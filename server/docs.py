"""What the ``/docs`` page shows, from the OpenAPI document: contents first, then each operation
with its parameters and answers, then the shape of every answer, field by field.

The methods a path refuses (our API answers them 400) are one line under that path, not an
operation each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from server.openapi import NOT_SUPPORTED, Doc

REF_PREFIX = "#/components/schemas/"
# Headers the page explains once (under Errors) rather than on every answer.
COMMON_HEADERS = frozenset({"Retry-After", "X-MBX-USED-WEIGHT-1M"})


@dataclass
class Answer:
    """One documented status of an operation."""

    status: str
    description: str
    shape: str  # what comes back: a schema's name, "list of BinanceTrade", "HTML", ... ("" for nothing)
    schema: str  # the response shape listed on the page, if any ("" for none)
    headers: list[tuple[str, str]] = field(default_factory=list)  # (name, description), but COMMON's


@dataclass
class Operation:
    """One method of one path."""

    anchor: str
    method: str
    path: str
    summary: str
    parameters: list[Doc]
    answers: list[Answer]
    refused: list[str] = field(default_factory=list)  # other methods: a 400


@dataclass
class Group:
    """Operations under one tag."""

    name: str
    description: str
    operations: list[Operation]

    @property
    def anchor(self) -> str:
        """Its id on the page."""
        return self.name.lower().replace(" ", "-")


@dataclass
class Field:
    """One property of a response shape."""

    name: str
    type: str
    required: bool
    description: str


def type_of(schema: Doc) -> str:
    """A short, readable type: ``string``, ``integer or null``, ``list of BookTicker``, ``object``."""
    if "$ref" in schema:
        return str(schema["$ref"]).removeprefix(REF_PREFIX)
    if "oneOf" in schema:
        return " or ".join(type_of(s) for s in schema["oneOf"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"list of {type_of(schema.get('items', {}))}"
    return str(kind)


def _refs(schema: Doc) -> list[str]:
    """The component schemas a schema names, directly or through a list or a choice."""
    if "$ref" in schema:
        return [str(schema["$ref"]).removeprefix(REF_PREFIX)]
    inner = [*schema.get("oneOf", []), *([schema["items"]] if "items" in schema else [])]
    return [name for sub in inner for name in _refs(sub)]


def _answer(status: str, response: Doc) -> Answer:
    content: Doc = response.get("content", {})
    media = next(iter(content), "")
    headers = [
        (k, h.get("description", ""))
        for k, h in response.get("headers", {}).items()
        if k not in COMMON_HEADERS
    ]
    if media == "application/json":
        schema = content[media]["schema"]
        return Answer(
            status, response["description"], type_of(schema), next(iter(_refs(schema)), ""), headers
        )
    shape = {"text/html": "HTML", "text/event-stream": "event stream", "text/plain": "text"}.get(media, media)
    return Answer(status, response["description"], shape, "", headers)


def groups(doc: Doc) -> list[Group]:
    """The operations, grouped by tag in the document's order; refused methods folded."""
    by_tag: dict[str, list[Operation]] = {tag["name"]: [] for tag in doc.get("tags", [])}
    for path, methods in doc["paths"].items():
        refused = [m.upper() for m, op in methods.items() if op.get("summary") == NOT_SUPPORTED]
        for method, op in methods.items():
            if op.get("summary") == NOT_SUPPORTED:
                continue
            anchor = re.sub(r"[^a-z0-9]+", "-", f"{method} {path}".lower()).strip("-")
            operation = Operation(
                anchor, method.upper(), path, op["summary"], op.get("parameters", []),
                [_answer(status, r) for status, r in op["responses"].items()], refused,
            )  # fmt: skip
            for tag in op.get("tags", ["Other"]):
                by_tag.setdefault(tag, []).append(operation)
    descriptions = {tag["name"]: tag.get("description", "") for tag in doc.get("tags", [])}
    return [Group(name, descriptions.get(name, ""), ops) for name, ops in by_tag.items() if ops]


def shapes(doc: Doc) -> dict[str, list[Field]]:
    """Every response shape (component schema) with its fields."""
    out: dict[str, list[Field]] = {}
    for name, schema in doc["components"]["schemas"].items():
        required = set(schema.get("required", []))
        props: dict[str, Any] = schema.get("properties", {})
        fields = [Field(k, type_of(p), k in required, p.get("description", "")) for k, p in props.items()]
        fields += [Field(k, "", True, "") for k in schema.get("required", []) if k not in props]
        out[name] = fields
    return out
