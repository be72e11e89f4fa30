"""``image-tags serve``: the tagger as an HTTP service (ASGI, Starlette on uvicorn).

Three doors to the same models, with the same tags and scores as ``image-tags tag``:

- ``POST /v1/tags``: our own JSON (the CLI's records), see ``app.py``;
- ``POST /`` with ``X-Amz-Target: RekognitionService.DetectLabels``: Amazon Rekognition's
  DetectLabels, so boto3 works with ``endpoint_url`` pointed here (``rekognition.py``);
- ``POST /v1/images:annotate``: Google Cloud Vision's LABEL_DETECTION, for
  google-cloud-vision's REST transport (``vision.py``).

Keys and signatures live in ``auth.py``, the limits (body, pixels, deadline, queue) in
``limits.py``, the predictor pool in ``service.py``, scale-out on Ray Serve in
``ray_serve.py``. Needs the ``api`` extra: ``pip install 'image_tag_suggestion[api]'``.
"""

from .service import Settings, TaggingService

__all__ = ["Settings", "TaggingService", "create_app"]


def create_app(settings: Settings, service: TaggingService | None = None):
    """The ASGI app (imported lazily: the library itself does not need Starlette)."""
    from .app import create_app as build

    return build(settings, service)
