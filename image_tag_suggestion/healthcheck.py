"""The container's health check: healthy when whatever the container runs answers on ``$PORT``,
the app (Streamlit's ``/_stcore/health``) or the API (``image-tags serve``: ``/healthz``).

    python -m image_tag_suggestion.healthcheck      # exit 0 healthy, 1 not
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

PATHS = ("/_stcore/health", "/healthz")


def healthy(port: str | int, timeout: float = 2.0) -> bool:
    for path in PATHS:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            continue
    return False


if __name__ == "__main__":
    sys.exit(0 if healthy(os.environ.get("PORT", "8501")) else 1)
