"""The OpenAPI document (``/openapi.json``) and a page that shows it (``/docs``).

Written by hand because the app is plain Starlette (the ``api`` extra needs nothing the
Docker image does not already have). The page is rendered on the server, with no script
or stylesheet from elsewhere: it works on a machine without internet, like the rest.
"""

from __future__ import annotations

import html

from .. import __version__

_QUERY = [
    ("top_k", "integer", "tags per image (default 20)"),
    ("min_score", "number", "0..1: show tags scored at least this (default: the model's 'likely' cut-off; 0: all)"),
    ("model", "string", "one model by name (GET /v1/models); default: every model, each tag naming its model"),
    ("broader", "boolean", "include broader tags such as 'dog', 'animal' (default true)"),
    ("embedding", "boolean", "also return the image's embedding (default false)"),
]
_KEY = [{"bearer": []}, {"googleKey": []}, {"keyQuery": []}]


def openapi_document() -> dict:
    tag_schema = {"type": "object", "properties": {
        "label": {"type": "string"}, "score": {"type": "number"}, "id": {"type": "string"},
        "broader": {"type": "boolean"}, "model": {"type": "string"}}}
    record = {"type": "object", "properties": {
        "file": {"type": "string"}, "tags": {"type": "array", "items": tag_schema}, "error": {"type": "string"},
        "embedding": {"type": "array", "items": {"type": "number"}}}}
    error = {"description": "error", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "image-tags", "version": __version__,
                 "description": "Offline photo tagging: the tags and scores of `image-tags tag`, over HTTP."},
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "googleKey": {"type": "apiKey", "in": "header", "name": "x-goog-api-key"},
            "keyQuery": {"type": "apiKey", "in": "query", "name": "key"},
            "sigv4": {"type": "apiKey", "in": "header", "name": "Authorization",
                      "description": "AWS Signature Version 4 (the Rekognition form)"}}},
        "paths": {
            "/healthz": {"get": {"summary": "Liveness: the models are loaded", "responses": {"200": {"description": "ok"}}}},
            "/v1/models": {"get": {"summary": "The loaded models: name, kind, vocabulary size, cut-off",
                                   "security": _KEY, "responses": {"200": {"description": "models"}, "401": error}}},
            "/v1/tags": {"post": {
                "summary": "Tag one image (the raw body) or several (multipart form files)",
                "security": _KEY,
                "parameters": [{"name": n, "in": "query", "schema": {"type": t}, "description": d} for n, t, d in _QUERY],
                "requestBody": {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                                            "multipart/form-data": {"schema": {"type": "object", "additionalProperties": {
                                                "type": "string", "format": "binary"}}}}},
                "responses": {
                    "200": {"description": "every image tagged", "content": {"application/json": {"schema": {
                        "type": "object", "properties": {"results": {"type": "array", "items": record}}}}}},
                    "422": {"description": "some image could not be tagged (its record holds the error)"},
                    "400": error, "401": error, "413": error,
                    "503": {"description": "every place in the pool and queue is taken; see Retry-After"},
                    "504": error}}},
            "/v1/images:annotate": {"post": {
                "summary": "Google Cloud Vision images:annotate (LABEL_DETECTION)", "security": _KEY,
                "responses": {"200": {"description": "responses, one per request"}}}},
            "/": {"post": {
                "summary": "Amazon Rekognition DetectLabels (X-Amz-Target: RekognitionService.DetectLabels)",
                "security": [{"sigv4": []}],
                "responses": {"200": {"description": "Labels"}, "400": {"description": "the service's error codes"}}}},
        },
    }


def docs_page(document: dict) -> str:
    """A self-contained HTML page listing each endpoint, its parameters and answers."""
    rows = []
    for path, methods in document["paths"].items():
        for method, spec in methods.items():
            params = "".join(f"<li><code>{html.escape(p['name'])}</code> ({p['schema']['type']}): "
                              f"{html.escape(p['description'])}</li>" for p in spec.get("parameters", []))
            answers = ", ".join(f"{code}: {html.escape(r.get('description', ''))}"
                                for code, r in spec.get("responses", {}).items())
            rows.append(f"<h2><code>{method.upper()} {html.escape(path)}</code></h2><p>{html.escape(spec['summary'])}"
                        f"</p>{f'<ul>{params}</ul>' if params else ''}<p><small>{answers}</small></p>")
    info = document["info"]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{info['title']} API</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}code{background:#eee}</style>"
            f"</head><body><h1>{info['title']} API {info['version']}</h1><p>{html.escape(info['description'])}</p>"
            "<p>The machine-readable document: <a href='/openapi.json'>/openapi.json</a>. Keys: "
            "<code>Authorization: Bearer KEY</code>, <code>x-goog-api-key: KEY</code> or <code>?key=KEY</code>; "
            "the Rekognition form is signed with AWS SigV4.</p>" + "".join(rows) + "</body></html>")
