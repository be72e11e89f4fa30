"""Google Cloud Vision's ``images:annotate`` with LABEL_DETECTION, for google-cloud-vision.

``ImageAnnotatorClient(transport="rest", client_options={"api_endpoint":
"http://HOST:PORT", "api_key": KEY})`` posts here: the REST transport keeps an
``http://`` scheme given in the endpoint, and sends the key as ``x-goog-api-key``. The
body holds up to 16 ``requests`` (the service's limit), each an ``image.content`` in base64
and its ``features``; a feature type comes as a name ("LABEL_DETECTION") or, from the
client library, as its number (4). Each image gets ``labelAnnotations`` (``mid`` = our tag
id, ``description``, ``score``, ``topicality``) or, as the service does, its own ``error``
(``{code, message}``, code 3 = INVALID_ARGUMENT) while the other images are answered.
Errors of the whole call use Google's shape ``{"error": {code, message, status}}``.
"""

from __future__ import annotations

import base64
import binascii
import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .auth import AuthError
from .limits import BodyTooLarge, DeadlineExceeded, Overloaded, drain, read_body
from .service import Options, Settings, TaggingService

LABEL_DETECTION = ("LABEL_DETECTION", 4)
DEFAULT_MAX_RESULTS = 10  # the service's default for LABEL_DETECTION
MAX_REQUESTS = 16
INVALID_ARGUMENT = 3  # google.rpc.Code
RETRY_AFTER = 1


def error(status: int, rpc_status: str, message: str, headers: dict | None = None) -> Response:
    return JSONResponse({"error": {"code": status, "message": message, "status": rpc_status}}, status_code=status,
                        headers=headers)


async def handle(request: Request, service: TaggingService, settings: Settings) -> Response:
    try:
        settings.credentials.check_api_key(request.headers, request.url.query)
    except AuthError as exc:  # what the service answers: a wrong key is 400, a missing one 403
        if exc.code == "InvalidKey":
            return error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
        return error(403, "PERMISSION_DENIED", "The request is missing a valid API key.")
    try:
        slot = service.admission.enter()
    except Overloaded as exc:
        await drain(request.stream(), settings.max_body)
        return error(503, "UNAVAILABLE", f"busy: {exc}; try again shortly", {"Retry-After": str(RETRY_AFTER)})
    try:
        body = await read_body(request.stream(), request.headers.get("content-length"), settings.max_body)
        entries = _requests(body)
        responses: list[dict | None] = [None] * len(entries)
        images = []
        for position, entry in enumerate(entries):
            image, max_results, problem = _entry(entry)
            if problem:
                responses[position] = {"error": {"code": INVALID_ARGUMENT, "message": problem}}
            elif image is None:
                responses[position] = {}  # no LABEL_DETECTION asked: nothing to say
            else:
                images.append((position, image, max_results))
        # One pool job for the whole call; each image's own MaxResults is applied afterwards.
        top = max([m for _, _, m in images], default=DEFAULT_MAX_RESULTS)
        options = Options(top_k=top, model=service.models[0].name)
        results = await service.tag(slot, [(f"image {p}", data) for p, data, _ in images], options) if images else []
    except BodyTooLarge as exc:
        return error(400, "INVALID_ARGUMENT", f"Request payload size exceeds the limit: {settings.max_body} bytes. "
                                              f"({exc})")
    except ValueError as exc:
        return error(400, "INVALID_ARGUMENT", str(exc))
    except DeadlineExceeded as exc:
        return error(504, "DEADLINE_EXCEEDED", str(exc))
    finally:
        slot.release()
    for (position, _, max_results), result in zip(images, results):
        if not result.ok:
            responses[position] = {"error": {"code": INVALID_ARGUMENT, "message": result.error}}
            continue
        responses[position] = {"labelAnnotations": [
            {"mid": t.id, "description": t.label, "score": round(t.score, 4), "topicality": round(t.score, 4)}
            for t in result.tags[:max_results]]}
    return JSONResponse({"responses": responses})


def _requests(body: bytes) -> list:
    try:
        document = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("Invalid JSON payload received.") from None
    entries = document.get("requests") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError("requests: at least one request is required")
    if len(entries) > MAX_REQUESTS:
        raise ValueError(f"At most {MAX_REQUESTS} images may be sent in one call.")
    return entries


def _entry(entry) -> tuple[bytes | None, int, str | None]:
    """(image bytes or None when no labels are asked, max results, a per-image problem or None)."""
    if not isinstance(entry, dict):
        return None, 0, "each request must be an object"
    features = [f for f in entry.get("features") or [] if isinstance(f, dict) and f.get("type") in LABEL_DETECTION]
    if not features:
        return None, 0, None
    max_results = features[0].get("maxResults") or DEFAULT_MAX_RESULTS
    if not isinstance(max_results, int) or max_results < 1:
        return None, 0, "maxResults must be a positive integer"
    image = entry.get("image") if isinstance(entry.get("image"), dict) else {}
    if image.get("source"):
        return None, 0, "this server works offline: send image.content, not image.source (URIs are not fetched)"
    content = image.get("content") or ""
    try:  # standard base64, or the URL-safe alphabet (both are accepted by the service)
        data = base64.b64decode(content, altchars=b"-_" if "-" in content or "_" in content else None, validate=True)
    except (binascii.Error, TypeError, ValueError):
        return None, 0, "image.content is not base64"
    if not data:
        return None, 0, "image.content is required"
    return data, max_results, None
