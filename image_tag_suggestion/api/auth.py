"""Who may call the server: API keys, and AWS Signature Version 4 for the Rekognition form.

API keys come from a file (one per line, ``#`` comments) and from ``IMAGE_TAGS_API_KEYS``
(comma separated). A key arrives as ``Authorization: Bearer KEY``, as ``x-goog-api-key:
KEY`` (what google-cloud-vision sends when given ``client_options={"api_key": KEY}``) or as
``?key=KEY`` (Google's query form). AWS pairs come from a file (``ACCESS_KEY_ID:SECRET``
a line) and from ``IMAGE_TAGS_AWS_CREDENTIALS`` (comma separated pairs): boto3 signs each
request with the secret, we recompute the signature from the same bytes and compare.

Every comparison of a secret goes through ``hmac.compare_digest`` (constant time), and every
configured key is tried, so timing says neither which key nor how much of one matched.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote

#: A signature dated further than this from the server's clock is refused (AWS uses 5 minutes too).
MAX_CLOCK_SKEW = 300.0
SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"
API_KEYS_ENV = "IMAGE_TAGS_API_KEYS"
AWS_CREDENTIALS_ENV = "IMAGE_TAGS_AWS_CREDENTIALS"
_AUTH_HEADER = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})\s*$")


class AuthError(Exception):
    """A request that may not pass; ``code`` names the reason in the AWS vocabulary
    (each door turns it into its own error shape)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Credentials:
    """The keys a server accepts; empty: anyone may call (the server then binds to loopback only)."""

    api_keys: tuple[str, ...] = ()
    aws: dict[str, str] = field(default_factory=dict)  # access key id -> secret

    @property
    def configured(self) -> bool:
        return bool(self.api_keys or self.aws)

    @classmethod
    def load(cls, api_keys_file: str | None = None, aws_file: str | None = None,
             environ: dict | None = None) -> "Credentials":
        """Keys from the files given and the environment; a malformed line is an error, not a silent skip."""
        environ = os.environ if environ is None else environ
        keys = [k.strip() for k in environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
        if api_keys_file:
            keys += _lines(api_keys_file)
        pairs = [p.strip() for p in environ.get(AWS_CREDENTIALS_ENV, "").split(",") if p.strip()]
        if aws_file:
            pairs += _lines(aws_file)
        aws = {}
        for pair in pairs:
            key_id, sep, secret = pair.partition(":")
            if not sep or not key_id.strip() or not secret.strip():
                raise ValueError("an AWS credential must read ACCESS_KEY_ID:SECRET")
            aws[key_id.strip()] = secret.strip()
        return cls(tuple(dict.fromkeys(keys)), aws)

    def check_api_key(self, headers, query: str) -> None:
        """Pass when a configured key arrives in any of the three forms; else AuthError
        (``MissingKey`` when none was sent, ``InvalidKey`` when the one sent is not ours)."""
        if not self.configured:
            return
        sent = _sent_key(headers, query)
        if sent is None:
            raise AuthError("MissingKey", "the request is missing an API key (Authorization: Bearer KEY, "
                                          "x-goog-api-key: KEY or ?key=KEY)")
        if not _matches_any(sent, self.api_keys):
            raise AuthError("InvalidKey", "API key not valid; pass a valid API key")

    def check_sigv4(self, method: str, path: str, query: str, headers, body: bytes, now: float | None = None) -> str:
        """Verify an AWS SigV4 signature over this request; returns the access key id.

        Refused: no or malformed signature (``AccessDeniedException``), an unknown access
        key (``UnrecognizedClientException``), a signature that does not match the secret and
        these bytes (``InvalidSignatureException``: wrong secret, changed body or header) or a
        date more than ``MAX_CLOCK_SKEW`` seconds off (``InvalidSignatureException``, as AWS)."""
        if not self.configured:
            return ""
        header = headers.get("authorization")
        match = _AUTH_HEADER.match(header or "")
        if not match:
            raise AuthError("AccessDeniedException", "the request is not signed with AWS Signature Version 4")
        key_id, _, scope = match["credential"].partition("/")
        scope_parts = scope.split("/")
        signed = match["signed"].split(";")
        amz_date = headers.get("x-amz-date", "")
        if len(scope_parts) != 4 or scope_parts[3] != "aws4_request" or scope_parts[0] != amz_date[:8]:
            raise AuthError("InvalidSignatureException", "the credential scope does not match the request date")
        if "host" not in signed or "x-amz-date" not in signed:
            raise AuthError("InvalidSignatureException", "the signature must cover the host and x-amz-date headers")
        try:
            stamp = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            raise AuthError("InvalidSignatureException", "x-amz-date must read YYYYMMDDTHHMMSSZ") from None
        now = time.time() if now is None else now
        if abs(now - stamp) > MAX_CLOCK_SKEW:
            raise AuthError("InvalidSignatureException", f"Signature expired: {amz_date} is more than "
                                                         f"{MAX_CLOCK_SKEW / 60:.0f} minutes from the server's time")
        secret = _lookup(key_id, self.aws)
        if secret is None:
            raise AuthError("UnrecognizedClientException", "The security token included in the request is invalid.")
        expected = sigv4_signature(secret, method, path, query, headers, signed, body, amz_date, scope)
        if not hmac.compare_digest(expected.encode(), match["signature"].encode()):
            raise AuthError("InvalidSignatureException", "The request signature we calculated does not match the "
                                                         "signature you provided. Check your AWS Secret Access Key "
                                                         "and signing method.")
        return key_id


def sigv4_signature(secret: str, method: str, path: str, query: str, headers, signed_headers: list[str],
                    body: bytes, amz_date: str, scope: str) -> str:
    """The hex SigV4 signature of a request, as AWS (and botocore) compute it."""
    canonical_headers = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_headers)
    canonical = "\n".join([
        method.upper(),
        quote(unquote(path) or "/", safe="/~"),
        _canonical_query(query),
        canonical_headers,
        ";".join(signed_headers),
        hashlib.sha256(body).hexdigest(),
    ])
    to_sign = "\n".join([SIGV4_ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    date, region, service, terminal = scope.split("/")
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, terminal):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def _canonical_query(query: str) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{k}={v}" for k, v in pairs)


def _sent_key(headers, query: str) -> str | None:
    bearer = headers.get("authorization", "")
    if bearer[:7].lower() == "bearer ":
        return bearer[7:].strip()
    if headers.get("x-goog-api-key"):
        return headers["x-goog-api-key"].strip()
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "key":
            return value
    return None


def _matches_any(sent: str, keys) -> bool:
    """Constant time in the key's content: every key is compared, whatever matched first."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(sent.encode(), key.encode())
    return found


def _lookup(key_id: str, pairs: dict[str, str]) -> str | None:
    """The secret of an access key id (the id is not secret, but look it up the same careful way)."""
    secret = None
    for known, value in pairs.items():
        if hmac.compare_digest(known.encode(), key_id.encode()):
            secret = value
    return secret


def _lines(path: str) -> list[str]:
    text = Path(path).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
