"""The API reference pages of the docs site, rendered from the OpenAPI document of the gateway
and the AsyncAPI document of the bus (``vertac schemas export`` writes them; a test checks the
committed pages match)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOCS_API = REPO / "docs" / "api"
METHODS = ("get", "post", "put", "patch", "delete")
NONE = "-"


def _ref_name(schema: dict[str, Any]) -> str:
    """A schema in a few words: its component's name, ``list of X``, or its type."""
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    if schema.get("type") == "array" and "items" in schema:
        return f"list of {_ref_name(schema['items'])}"
    if "anyOf" in schema:
        return " or ".join(_ref_name(s) for s in schema["anyOf"] if s.get("type") != "null")
    return str(schema.get("type", "object"))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _body_of(content: dict[str, Any]) -> str:
    return "; ".join(f"{_ref_name(c.get('schema', {}))} ({kind})" for kind, c in content.items())


def rest_markdown(openapi: dict[str, Any]) -> str:
    """Every path and method: what it does, its parameters, body and answers."""
    out = [
        "# REST endpoints",
        "",
        f"Generated from the gateway's OpenAPI document (version {openapi['info']['version']}; "
        "served at `/openapi.json`, browsable at `/docs` of a running gateway). "
        "[REST and WebSocket](index.md) explains them with examples.",
        "",
    ]
    for path in sorted(openapi["paths"]):
        for method in METHODS:
            op = openapi["paths"][path].get(method)
            if op is None:
                continue
            out += [f"## `{method.upper()} {path}`", ""]
            text = op.get("description") or op.get("summary") or ""
            if text:
                out += [" ".join(text.split()), ""]
            params = op.get("parameters", [])
            if params:
                out += [
                    "| parameter | in | required | type | meaning |",
                    "| --- | --- | --- | --- | --- |",
                ]
                for p in params:
                    out.append(
                        f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                        f"{_ref_name(p.get('schema', {}))} | {_cell(p.get('description', ''))} |"
                    )
                out.append("")
            body = op.get("requestBody", {}).get("content")
            if body:
                out += [f"Body: {_body_of(body)}.", ""]
            out += ["| answer | meaning | body |", "| --- | --- | --- |"]
            for status, answer in sorted(op.get("responses", {}).items()):
                content = _body_of(answer.get("content", {})) or NONE
                out.append(f"| {status} | {_cell(answer.get('description', ''))} | {content} |")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def bus_markdown(asyncapi: dict[str, Any]) -> str:
    """Every channel of the bus: its subject, what flows on it and who sends or receives it."""
    actions: dict[str, list[str]] = {}
    for name, op in asyncapi.get("operations", {}).items():
        channel = op["channel"]["$ref"].rsplit("/", 1)[-1]
        actions.setdefault(channel, []).append(f"{op['action']} ({name})")
    out = [
        "# Bus channels",
        "",
        f"Generated from the AsyncAPI document of the bus (version {asyncapi['info']['version']}; "
        "`schemas/json/asyncapi.json`). [The bus](../concepts/bus.md) explains the streams and "
        "consumers. Message bodies are the JSON Schemas of `schemas/json/`.",
        "",
        "| channel | subject | messages | operations | what |",
        "| --- | --- | --- | --- | --- |",
    ]
    messages = asyncapi.get("components", {}).get("messages", {})
    for name in sorted(asyncapi["channels"]):
        ch = asyncapi["channels"][name]
        bodies = []
        for ref in ch.get("messages", {}).values():
            message = messages.get(ref["$ref"].rsplit("/", 1)[-1], {})
            payload = message.get("payload", {})
            bodies.append(_ref_name(payload) if payload else message.get("name", "?"))
        out.append(
            f"| {name} | `{ch['address']}` | {', '.join(bodies) or NONE} | "
            f"{', '.join(actions.get(name, [])) or NONE} | {_cell(ch.get('description', ''))} |"
        )
    return "\n".join(out).rstrip() + "\n"


def render() -> dict[Path, str]:
    """The pages, by path."""
    from schemas import asyncapi
    from services.common.config import CommonSettings
    from services.gateway.app import build_app
    from services.gateway.config import Settings

    openapi = build_app(Settings(), CommonSettings()).openapi()
    return {
        DOCS_API / "rest.md": rest_markdown(openapi),
        DOCS_API / "bus.md": bus_markdown(json.loads(asyncapi.render())),
        CONCEPTS_BUS: concepts_bus(CONCEPTS_BUS.read_text()),
    }


CONCEPTS_BUS = REPO / "docs" / "concepts" / "bus.md"
_TABLE = re.compile(r"(<!-- catalogue:[^\n]*-->\n).*?(<!-- /catalogue -->)", re.S)


def concepts_bus(page: str) -> str:
    """``page`` with its subject table made anew from the catalogue and the subscriptions."""
    from schemas import catalogue
    from services.common.sites import SITE_IMPORTS
    from services.common.subscriptions import SUBSCRIPTIONS

    table = catalogue.markdown_table(
        [(row.kind, row.service) for row in SUBSCRIPTIONS]
        + [("site", row.service) for row in SITE_IMPORTS]  # at central
    )
    if not _TABLE.search(page):
        raise ValueError(f"{CONCEPTS_BUS} has no <!-- catalogue: --> ... <!-- /catalogue --> block")
    return _TABLE.sub(lambda m: m.group(1) + table + m.group(2), page, count=1)


def write() -> list[Path]:
    pages = render()
    for path, text in pages.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(pages)
