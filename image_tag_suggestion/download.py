"""Fetching over http(s) without trusting the server: every wait bounded, every byte counted,
every file checked against its sha256 and written whole or not at all, and redirects followed
only where :func:`redirect_refusal` allows.

Bundles (``bundle.py``) and the original app's model (``seed_model.py``) are downloaded
through here. It is imported only when something is downloaded: ``urllib.request`` and
``http.client`` cost a cold start more than the rest of a bundle's loading.
"""

from __future__ import annotations

import hashlib
import http.client
import time
import urllib.parse
import urllib.request
from pathlib import Path

from .files import atomic_output

#: Redirects followed per request: enough for a mirror or a CDN, few enough to end a loop quickly.
MAX_REDIRECTS = 3
#: A download's default deadline: DEADLINE_BASE seconds, plus one second for every
#: MIN_RATE bytes the config declares (a 10 MB bundle: 220 s, at worst 100 kB/s).
DEADLINE_BASE = 120.0
MIN_RATE = 100_000
_CHUNK = 1 << 20


class DownloadError(ValueError):
    """A download refused or failed; the message says which URL and why."""


class Deadline:
    """The wall-clock limit of one download. Socket timeouts bound each wait, not the whole:
    a server that sends a byte now and then would otherwise hold a download for ever.

    ``seconds`` fixes the limit; without it the limit is :data:`DEADLINE_BASE` seconds, plus
    one second per :data:`MIN_RATE` bytes once the size to come is known (:meth:`expect`).
    The clock starts when the object is made.
    """

    def __init__(self, seconds: float | None = None):
        self.start = time.monotonic()
        self.fixed = seconds is not None
        self.seconds = float(seconds) if seconds is not None else DEADLINE_BASE

    def expect(self, nbytes: int) -> None:
        """Allow a default deadline the time ``nbytes`` more bytes take at :data:`MIN_RATE`."""
        if not self.fixed:
            self.seconds = DEADLINE_BASE + nbytes / MIN_RATE

    def left(self, url: str) -> float:
        """Seconds left; a DownloadError (about ``url``) once there are none."""
        left = self.start + self.seconds - time.monotonic()
        if left <= 0:
            raise self.error(url)
        return left

    def passed(self) -> bool:
        return time.monotonic() >= self.start + self.seconds

    def error(self, url: str) -> DownloadError:
        return DownloadError(f"{url}: the download did not finish within its {self.seconds:g} s deadline "
                             "(a server too slow or stalled); refusing it")


def download_verified(url: str, target: Path, digest: str, timeout: float, limit: int, deadline: float | None = None,
                      allow_hosts: tuple[str, ...] = ()) -> int:
    """Stream ``url`` into ``target``, whole or not at all, refused unless its sha256 is ``digest``;
    returns the bytes written. At most ``limit`` bytes, within ``deadline`` seconds (default:
    as :class:`Deadline` allows for ``limit`` bytes); redirects as :func:`redirect_refusal`
    allows, to the request's host or to ``allow_hosts`` over https."""
    clock = Deadline(deadline)
    clock.expect(limit)
    return download_verified_within(url, Path(target), digest, timeout, limit, clock, allow_hosts)


def download_verified_within(url: str, target: Path, digest: str, timeout: float, limit: int, deadline: Deadline,
                       allow_hosts: tuple[str, ...] = ()) -> int:
    hasher, size = hashlib.sha256(), 0
    with atomic_output(target) as out, _open_url(url, timeout, deadline, allow_hosts) as response:
        for chunk in _chunks(response, url, timeout, deadline):
            size += len(chunk)
            if size > limit:
                raise DownloadError(f"{url}: larger than the {limit} bytes allowed (config.yaml's size or the "
                                  "download limit); refusing it")
            hasher.update(chunk)
            out.write(chunk)
        if hasher.hexdigest() != digest:
            raise DownloadError(f"{url}: sha256 {hasher.hexdigest()} does not match {digest} from config.yaml; refusing it")
    return size


def fetch(url: str, timeout: float, deadline: Deadline, limit: int) -> tuple[bytes, str]:
    """A small document (a config) and its URL after redirects (what relative names are relative to)."""
    data = bytearray()
    with _open_url(url, timeout, deadline) as response:
        final_url = response.geturl()
        for chunk in _chunks(response, url, timeout, deadline):
            data += chunk
            if len(data) > limit:
                raise DownloadError(f"{url}: larger than {limit} bytes; not a config.yaml")
    return bytes(data), final_url


def redirect_refusal(old: str, new: str, allow_hosts: tuple[str, ...] = ()) -> str | None:
    """Why a redirect (or a downloaded pointer) from ``old`` to ``new`` is refused, or None.

    Allowed: https on the same host (any port), http to https on the same host (an upgrade),
    and http to http on the same host (plain http there is what was asked for). Also https to
    one of ``allow_hosts`` (for a release server whose files live on a CDN, with fixed hashes).
    Refused: any other scheme (``ftp:``, ``file:``...), any other host, https down to http.
    """
    old_parts, new_parts = urllib.parse.urlsplit(old), urllib.parse.urlsplit(new)
    if new_parts.scheme not in ("http", "https"):
        return f"only http(s) URLs are downloaded, not {new_parts.scheme or 'a path'}"
    if new_parts.scheme == "http" and old_parts.scheme != "http":
        return "it goes from https down to plain http"
    host, old_host = (new_parts.hostname or "").lower(), (old_parts.hostname or "").lower()
    if host == old_host:
        return None
    if new_parts.scheme == "https" and host in {h.lower() for h in allow_hosts}:
        return None
    return f"it leads to another host ({host or 'none'})"


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows at most :data:`MAX_REDIRECTS` redirects, each allowed by :func:`redirect_refusal`
    (urllib alone follows ten, to any host, and to ``ftp:``)."""

    max_redirections = MAX_REDIRECTS + 1  # urllib's own loop check never comes first

    def __init__(self, url: str, allow_hosts: tuple[str, ...] = ()):
        super().__init__()
        self.count = 0
        self.allow_hosts = (urllib.parse.urlsplit(url).hostname or "", *allow_hosts)

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.count += 1
        refusal = redirect_refusal(req.full_url, newurl, self.allow_hosts)
        if refusal is None and self.count > MAX_REDIRECTS:
            refusal = f"more than {MAX_REDIRECTS} redirects"
        if refusal:
            fp.close()
            raise DownloadError(f"{req.full_url}: refusing the redirect to {newurl}: {refusal}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open_url(url: str, timeout: float, deadline: Deadline, allow_hosts: tuple[str, ...] = ()):
    """An http(s) response, through an opener that knows no other scheme and redirects only as allowed."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http(s) URLs are downloaded")
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), _Redirects(url, allow_hosts),
                    urllib.request.HTTPErrorProcessor(), urllib.request.UnknownHandler()):
        opener.add_handler(handler)
    try:
        return opener.open(url, timeout=min(timeout, deadline.left(url)))
    except (OSError, http.client.HTTPException) as exc:  # URLError, HTTPError and timeouts are all OSErrors
        if deadline.passed():  # a wait cut short by the deadline says so
            raise deadline.error(url) from None
        raise DownloadError(f"{url}: download failed ({exc})") from None


def _chunks(response, url: str, timeout: float, deadline: Deadline):
    """The response body as it arrives. ``read1`` returns what one receive brings (``read``
    would wait for a whole chunk), so the deadline is checked between receives, and each
    receive waits at most the time left."""
    # http.client keeps the socket privately; without it each wait still ends within ``timeout``.
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    while True:
        left = deadline.left(url)
        if sock is not None:
            sock.settimeout(min(timeout, left))
        try:
            chunk = response.read1(_CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            if deadline.passed():
                raise deadline.error(url) from None
            raise DownloadError(f"{url}: download failed ({exc!r})") from None
        if not chunk:
            return
        yield chunk


