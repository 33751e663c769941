"""``/docs``: the API reference as one HTML page, rendered here from the OpenAPI document.

Swagger UI loads its scripts and styles from a CDN, so on a machine without internet (the
case this local server is for) it shows a blank page. This page needs nothing but the
server: every endpoint with its parameters, body and answers, and every schema (the job
request and each engine's options, with types, defaults, ranges and help) as plain tables.
The interactive Swagger UI stays one link away for those who are online.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

METHODS = ("get", "post", "put", "patch", "delete")

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; padding: 0 1rem; color: #222; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
h3 { margin: 1.6rem 0 .3rem; font-family: ui-monospace, monospace; }
.verb { display: inline-block; min-width: 3.6rem; color: #fff; background: #456; border-radius: 3px;
        padding: 0 .35rem; text-align: center; }
.post { background: #2a7a3b; }
table { border-collapse: collapse; margin: .4rem 0 1rem; width: 100%; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
code, td.name { font-family: ui-monospace, monospace; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: .5rem; }
"""


def _anchor(ref: str) -> str:
    """The page's id for a schema (a name or a ``$ref``), escaped for an attribute."""
    return escape("schema-" + ref.rsplit("/", 1)[-1], quote=True)


def type_text(s: dict[str, Any]) -> str:
    """A schema's type in words (HTML): links for references, choices, item types, alternatives."""
    if "$ref" in s:
        name = s["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#{_anchor(s["$ref"])}">{escape(name)}</a>'
    if "enum" in s:
        return "one of " + ", ".join(f"<code>{escape(str(v))}</code>" for v in s["enum"])
    for key in ("anyOf", "oneOf"):
        if key in s:
            return " or ".join(type_text(alt) for alt in s[key])
    kind = s.get("type", "any")
    if kind == "array":
        items = type_text(s.get("items", {}))
        n = s.get("minItems"), s.get("maxItems")
        count = f" ({n[0]})" if n[0] is not None and n[0] == n[1] else ""
        return f"array{count} of {items}"
    if isinstance(kind, list):
        kind = " or ".join(kind)
    extra = s.get("format") or s.get("contentMediaType")
    return escape(f"{kind} ({extra})" if extra else str(kind))


def _limits(s: dict[str, Any]) -> str:
    parts = []
    for key, word in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in s:
            parts.append(f"{word} {s[key]}")
    return escape(", ".join(parts))


def _fields_table(schema: dict[str, Any]) -> str:
    props = schema.get("properties") or {}
    if not props:
        return "<p>(no fields)</p>"
    required = set(schema.get("required") or ())
    rows = []
    for name, s in props.items():
        default = f"<code>{escape(json.dumps(s['default']))}</code>" if "default" in s else ""
        rows.append(f'<tr><td class="name">{escape(name)}{" *" if name in required else ""}</td>'
                    f"<td>{type_text(s)}</td><td>{default}</td><td>{_limits(s)}</td>"
                    f"<td>{escape(s.get('description', ''))}</td></tr>")
    return ("<table><tr><th>field (* required)</th><th>type</th><th>default</th><th>range</th>"
            "<th>meaning</th></tr>" + "".join(rows) + "</table>")


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    out = [f'<h3 id="{escape(method + path)}"><span class="verb {method}">{method.upper()}</span> {escape(path)}</h3>',
           f"<p>{escape(op.get('summary', ''))}</p>"]
    if op.get("description"):
        out.append(f"<pre>{escape(op['description'])}</pre>")
    params = op.get("parameters") or []
    if params:
        rows = "".join(f'<tr><td class="name">{escape(p["name"])}{" *" if p.get("required") else ""}</td>'
                       f"<td>{escape(p.get('in', ''))}</td><td>{type_text(p.get('schema', {}))}</td>"
                       f"<td>{escape(p.get('description', ''))}</td></tr>" for p in params)
        out.append("<table><tr><th>parameter (* required)</th><th>in</th><th>type</th><th>meaning</th></tr>"
                   f"{rows}</table>")
    for media, content in ((op.get("requestBody") or {}).get("content") or {}).items():
        out.append(f"<p>Body: <code>{escape(media)}</code></p>")
        out.append(_fields_table(content.get("schema") or {}))
    answers = "".join(f"<li><code>{escape(str(code))}</code> {escape(r.get('description', ''))}"
                      + "".join(f" <code>{escape(m)}</code>" for m in (r.get("content") or {})) + "</li>"
                      for code, r in (op.get("responses") or {}).items())
    if answers:
        out.append(f"<p>Answers:</p><ul>{answers}</ul>")
    return "\n".join(out)


def render_reference(doc: dict[str, Any], *, swagger_href: str, openapi_href: str) -> str:
    """The whole page for OpenAPI document ``doc`` (links keep the caller's token)."""
    info = doc.get("info") or {}
    title = escape(f"{info.get('title', 'API')} {info.get('version', '')}".strip())
    ops = [(path, m, item[m]) for path, item in (doc.get("paths") or {}).items() for m in METHODS if m in item]
    toc = "".join(f'<li><a href="#{escape(m + path)}">{m.upper()} {escape(path)}</a> {escape(op.get("summary", ""))}'
                  "</li>" for path, m, op in ops)
    schemas = (doc.get("components") or {}).get("schemas") or {}
    body = [f"<h1>{title} HTTP API</h1>",
            f"<p>{escape(info.get('description', ''))}</p>",
            f'<p>Made by the server from <a href="{escape(openapi_href)}">/openapi.json</a> (OpenAPI '
            f"{escape(str(doc.get('openapi', '')))}); nothing here is fetched from elsewhere. The interactive "
            f'<a href="{escape(swagger_href)}">Swagger UI</a> loads its scripts from a CDN (online only).</p>',
            f"<h2>Endpoints</h2><ul>{toc}</ul>",
            "<h2>Schemas</h2><p>" + ", ".join(f'<a href="#{_anchor(name)}">{escape(name)}</a>' for name in schemas)
            + "</p>",
            *(_operation(path, m, op) for path, m, op in ops),
            "<h2>Schemas in full</h2>"]
    for name, s in schemas.items():
        head = f'<h3 id="{_anchor(name)}">{escape(name)}</h3>'
        what = f"<p>{escape(s.get('title', ''))} {escape(s.get('description', ''))}</p>" if (
            s.get("title") or s.get("description")) else ""
        body.append(head + what + (_fields_table(s) if s.get("properties") else f"<p>{type_text(s)}</p>"))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} API reference</title>'
            f"<style>{STYLE}</style></head><body>" + "\n".join(body) + "</body></html>")
