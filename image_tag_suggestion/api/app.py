"""The ASGI app: health, models, our own ``POST /v1/tags``, and the two vendor forms.

``POST /v1/tags`` takes one image as the raw body, or several as multipart form files,
and answers what ``image-tags tag --format jsonl`` prints for them (``{"file", "tags":
[{"label", "score"}]}`` or ``{"file", "error"}``), each tag also with its ``id`` and
whether it is a ``broader`` tag, in ``{"results": [...]}``. The server holds no state
between requests: any number of copies can stand behind one load balancer.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ..formats import record
from . import rekognition, vision
from .auth import AuthError
from .limits import BodyTooLarge, DeadlineExceeded, Overloaded, drain, read_body
from .openapi import docs_page, openapi_document
from .service import Options, Settings, TaggingService

#: Seconds a refused client is told to wait (Retry-After) when every slot is taken.
RETRY_AFTER = 1
MAX_FILES = 64


class BadRequest(ValueError):
    """A parameter or body the server cannot use (400, with a message that says which)."""


def create_app(settings: Settings, service: TaggingService | None = None) -> Starlette:
    """Load the models now (not on the first request) and return the app."""
    service = service or TaggingService(settings)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "models": [m.name for m in service.models], "pool": settings.pool,
                             "queue": settings.queue_size, "in_flight": service.admission.taken})

    async def models(request: Request) -> Response:
        try:
            settings.credentials.check_api_key(request.headers, request.url.query)
        except AuthError as exc:
            return _refused(exc)
        return JSONResponse({"models": [m.describe() for m in service.models]})

    async def tags(request: Request) -> Response:
        try:
            settings.credentials.check_api_key(request.headers, request.url.query)
            options, embedding = _options(request, service)
            slot = service.admission.enter()
        except AuthError as exc:
            return _refused(exc)
        except BadRequest as exc:
            return _error(400, str(exc))
        except Overloaded as exc:
            await drain(request.stream(), settings.max_body)
            return _error(503, f"busy: {exc}; try again shortly", {"Retry-After": str(RETRY_AFTER)})
        try:
            body = await read_body(request.stream(), request.headers.get("content-length"), settings.max_body)
            images = await _images(request, body)
            results = await service.tag(slot, images, options)
        except BodyTooLarge as exc:
            return _error(413, str(exc))
        except BadRequest as exc:
            return _error(400, str(exc))
        except DeadlineExceeded as exc:
            return _error(504, str(exc))
        finally:
            slot.release()
        main = service.models[0].name if options.model is None else None  # names groups only with several models
        records = [_record(r, main, embedding) for r in results]
        return JSONResponse({"results": records}, status_code=200 if all(r.ok for r in results) else 422)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_page(openapi_document()))

    async def amazon(request: Request) -> Response:
        return await rekognition.handle(request, service, settings)

    async def google(request: Request) -> Response:
        return await vision.handle(request, service, settings)

    app = Starlette(routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/tags", tags, methods=["POST"]),
        Route("/v1/images:annotate", google, methods=["POST"]),
        Route("/", amazon, methods=["POST"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ])
    app.state.service = service
    return WorkerHeader(app)


class WorkerHeader:
    """Names the answering process (``x-image-tags-worker: PID``): which replica of a
    scaled-out server answered, for load-balancer checks and the Ray test."""

    def __init__(self, app):
        self.app = app
        self.state = app.state
        self._value = str(os.getpid()).encode()

    async def __call__(self, scope, receive, send):
        async def tagged(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-image-tags-worker", self._value)]
            await send(message)

        await self.app(scope, receive, tagged if scope["type"] == "http" else send)


def _options(request: Request, service: TaggingService) -> tuple[Options, bool]:
    query = request.query_params
    options = Options(top_k=_number(query, "top_k", int, 20, low=1), min_score=_number(query, "min_score", float, None,
                                                                                       low=0.0, high=1.0),
                      include_broader=_flag(query, "broader", True), model=query.get("model") or None)
    if options.model is not None and service.model(options.model) is None:
        raise BadRequest(f"no model named {options.model!r}; GET /v1/models lists them")
    return options, _flag(query, "embedding", False)


def _number(query, name: str, kind, default, low=None, high=None):
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = kind(text)
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {text!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadRequest(f"{name} must be between {low} and {high if high is not None else 'any'}")
    return value


def _flag(query, name: str, default: bool) -> bool:
    text = query.get(name)
    if text is None or text == "":
        return default
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise BadRequest(f"{name} must be true or false, not {text!r}")


async def _images(request: Request, body: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image: the raw body, or every file of a multipart form."""
    if not body:
        raise BadRequest("no image: send the image as the body, or as multipart form files")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return [("upload", body)]

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=MAX_FILES, max_fields=MAX_FILES)
    except Exception as exc:  # Starlette's parser raises its own errors for a broken form
        raise BadRequest(f"the multipart form cannot be read ({exc})") from None
    files = [(value.filename or key, await value.read()) for key, value in form.multi_items()
             if hasattr(value, "filename")]
    await form.close()
    if not files:
        raise BadRequest("the multipart form holds no file")
    return files


def _record(result, main_model, embedding: bool) -> dict:
    """The CLI's record, each tag with its id and broader flag too (and the embedding when asked)."""
    entry = record(result, main_model)
    if result.ok:
        groups = [result.tags, *result.more.values()]
        flat = [t for group in groups for t in group]
        for tag, out in zip(flat, entry["tags"]):
            out["id"], out["broader"] = tag.id, bool(tag.broader)
        if embedding:
            entry["embedding"] = [round(float(v), 6) for v in result.embedding]
    return entry


def _error(status: int, message: str, headers: dict | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _refused(exc: AuthError) -> Response:
    return _error(401, exc.message, {"WWW-Authenticate": "Bearer"})
