# Serving image: LiteRT only (no TensorFlow), non-root, port from $PORT (default 8501).
#   docker build -t image-tags .
#   docker run --rm -p 8501:8501 image-tags          # then open http://localhost:8501
#   docker run --rm -v "$PWD/photos:/photos" image-tags tag /photos --format jsonl   # the CLI
# BASE: the official image by default; a build without a registry passes a local stand-in of its
# own name (scripts/docker_check.sh), never one that shadows the official name.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8501

RUN useradd --create-home --uid 10001 app
WORKDIR /app
COPY requirements.txt pyproject.toml README.md ./
COPY image_tag_suggestion ./image_tag_suggestion
# The api extra: `image-tags serve` (docs/api.md); its packages come with Streamlit already.
RUN pip install -r requirements.txt '.[api]'

USER app
EXPOSE 8501
# Healthy when whichever command runs answers on $PORT: the app or the API (image-tags serve).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "image_tag_suggestion.healthcheck"]
ENTRYPOINT ["image-tags"]
CMD ["app"]
