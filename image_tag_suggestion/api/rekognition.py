"""Amazon Rekognition's DetectLabels, so code written for boto3 can point ``endpoint_url`` here.

The wire format is AWS's JSON 1.1 protocol: ``POST /`` with ``X-Amz-Target:
RekognitionService.DetectLabels``, a JSON body (``Image.Bytes`` in base64) signed with
SigV4 (``auth.py``). Answers keep the service's shape: ``Labels`` with ``Name``,
``Confidence`` (our score x 100), ``Parents`` (our broader tags above it), ``Aliases`` (its
synonyms) and ``Categories`` (where one of ours maps to one of theirs); errors carry the
service's own codes in ``__type`` and ``x-amzn-ErrorType``, so botocore raises the same
``ClientError`` an application already handles. Tag names stay ours ("golden retriever").
"""

from __future__ import annotations

import base64
import binascii
import json

from starlette.requests import Request
from starlette.responses import Response

from .auth import AuthError
from .limits import BodyTooLarge, DeadlineExceeded, Overloaded, drain, read_body
from .service import Options, Settings, TaggingService

TARGET = "RekognitionService.DetectLabels"
CONTENT_TYPE = "application/x-amz-json-1.1"
RETRY_AFTER = 1

#: Our broader tags (or the tag itself) -> Rekognition's label categories; the narrowest match wins.
CATEGORIES = {
    "Animals and Pets": ("animal",),
    "Vehicles and Automotive": ("vehicle", "car", "truck", "bus", "aircraft", "boat", "ship", "bicycle", "locomotive",
                                "railcar", "wagon"),
    "Food and Beverage": ("food", "fruit", "vegetable", "drink", "dish (food)", "dessert", "bread", "sandwich", "sauce",
                          "alcohol", "citrus", "loaf"),
    "Plants and Flowers": ("plant", "flower"),
    "Home and Indoors": ("furniture", "seat", "chair", "table", "cabinet", "curtain", "lamp", "heater", "oven", "towel"),
    "Buildings and Architecture": ("building", "monument", "bridge", "roof", "theatre", "place of business", "store",
                                   "shed", "fence"),
    "Tools and Machinery": ("tool", "hand tool", "power tool", "machine"),
    "Technology and Computing": ("computer", "camera", "telephone", "screen", "keyboard"),
    "Weapons and Military": ("weapon", "gun", "firearm", "military vehicle", "armor", "shield"),
    "Apparel and Accessories": ("hat", "cap (headgear)", "coat", "skirt", "shoe", "tie", "scarf", "sweater",
                                "bathing suit", "robe (garment)", "bag"),
    "Nature and Outdoors": ("mountain", "ridge", "shore", "landscape", "coast", "beach", "sky", "forest", "sea"),
    "Hobbies and Interests": ("musical instrument", "toy", "game", "ball"),
    "Person Description": ("person", "portrait", "group of people"),
}
_CATEGORY_OF = {name: category for category, names in CATEGORIES.items() for name in names}

#: Error code -> HTTP status, as the service answers them.
STATUS = {
    "AccessDeniedException": 403, "UnrecognizedClientException": 403, "InvalidSignatureException": 403,
    "InvalidParameterException": 400, "InvalidImageFormatException": 400, "ImageTooLargeException": 400,
    "InvalidS3ObjectException": 400, "UnknownOperationException": 400, "SerializationException": 400,
    "ThrottlingException": 503, "InternalServerError": 500,
}


class RekognitionError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def error(code: str, message: str, headers: dict | None = None) -> Response:
    """The JSON 1.1 error shape botocore reads: ``__type`` and ``message``, and ``x-amzn-ErrorType``."""
    return Response(json.dumps({"__type": code, "message": message}), status_code=STATUS.get(code, 400),
                    media_type=CONTENT_TYPE, headers={"x-amzn-ErrorType": code, **(headers or {})})


async def handle(request: Request, service: TaggingService, settings: Settings) -> Response:
    """One DetectLabels call, from admission to answer."""
    target = request.headers.get("x-amz-target", "")
    if target != TARGET:
        return error("UnknownOperationException", f"this server answers {TARGET} only, not {target or 'no target'}")
    if settings.credentials.configured and "authorization" not in request.headers:
        return error("AccessDeniedException", "the request is not signed (no Authorization header)")
    try:
        slot = service.admission.enter()
    except Overloaded as exc:
        await drain(request.stream(), settings.max_body)
        return error("ThrottlingException", f"Rate exceeded: {exc}", {"Retry-After": str(RETRY_AFTER)})
    try:
        body = await read_body(request.stream(), request.headers.get("content-length"), settings.max_body)
        settings.credentials.check_sigv4(request.method, request.url.path, request.url.query, request.headers, body)
        image, options = _parse(body, service)
        [result] = await service.tag(slot, [("Image.Bytes", image)], options)
    except AuthError as exc:
        return error(exc.code, exc.message)
    except BodyTooLarge as exc:
        return error("ImageTooLargeException", f"Image size is too large: {exc}")
    except RekognitionError as exc:
        return error(exc.code, exc.message)
    except DeadlineExceeded as exc:
        return error("ThrottlingException", f"the request took too long: {exc}", {"Retry-After": str(RETRY_AFTER)})
    finally:
        slot.release()
    if not result.ok:
        too_large = "too many pixels" in result.error
        return error("ImageTooLargeException" if too_large else "InvalidImageFormatException",
                     result.error.replace("Image.Bytes: ", "", 1))
    model = service.models[0]
    labels = [_label(tag, model) for tag in result.tags]
    return Response(json.dumps({"Labels": labels, "LabelModelVersion": model.name}), media_type=CONTENT_TYPE)


def _parse(body: bytes, service: TaggingService) -> tuple[bytes, Options]:
    """The image bytes and options of a DetectLabels request, or the error the service gives."""
    try:
        request = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RekognitionError("SerializationException", "the body is not JSON") from None
    image = request.get("Image") if isinstance(request, dict) else None
    if not isinstance(image, dict):
        raise RekognitionError("InvalidParameterException", "Image is required")
    if "S3Object" in image:
        raise RekognitionError("InvalidS3ObjectException", "this server works offline: send Image.Bytes, not "
                                                           "Image.S3Object")
    try:
        data = base64.b64decode(image.get("Bytes") or "", validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise RekognitionError("InvalidParameterException", "Image.Bytes is not base64") from None
    if not data:
        raise RekognitionError("InvalidParameterException", "Image.Bytes is required")
    max_labels = request.get("MaxLabels")
    if max_labels is not None and (not isinstance(max_labels, int) or isinstance(max_labels, bool) or max_labels < 0):
        raise RekognitionError("InvalidParameterException", "MaxLabels must be an integer of 0 or more")
    confidence = request.get("MinConfidence")
    if confidence is not None and (not isinstance(confidence, (int, float)) or isinstance(confidence, bool)
                                   or not 0 <= confidence <= 100):
        raise RekognitionError("InvalidParameterException", "MinConfidence must be between 0 and 100")
    options = Options(top_k=max_labels or None, min_score=None if confidence is None else confidence / 100.0,
                      model=service.models[0].name)
    return data, options


def _label(tag, model) -> dict:
    parents, synonyms = model.tag_info(tag.id)
    category = next((_CATEGORY_OF[n] for n in [tag.label, *reversed(parents)] if n in _CATEGORY_OF), None)
    return {"Name": tag.label, "Confidence": round(tag.score * 100.0, 2), "Instances": [],
            "Parents": [{"Name": name} for name in reversed(parents)],
            "Aliases": [{"Name": word} for word in synonyms],
            "Categories": [{"Name": category}] if category else []}
