"""Signature Version 4 for the lean path's one request form: a POST of a JSON body to one
endpoint, with a fixed set of headers.

botocore's `SigV4Auth` handles every request form there is (query strings, streaming
bodies, unsigned payloads, presigning), and pays for that generality on every call: a
header map rebuilt three times, the URL split twice, the signing key derived anew. For the
lean path's requests everything but the body, the time and the credentials is fixed, so the
canonical URI, the host and the signed-header list are worked out once, from botocore's own
functions, and the signing key once per day, region and secret. The result is byte for byte
what `SigV4Auth.add_auth` produces for the same request at the same second (the tests
compare the two).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Final, Protocol
from urllib.parse import quote, urlsplit

from botocore.auth import SIGNED_HEADERS_BLACKLIST, _host_from_url
from botocore.utils import normalize_url_path

__all__ = ["FrozenCredentials", "JsonPostSigner"]

_ALGORITHM: Final = "AWS4-HMAC-SHA256"


class FrozenCredentials(Protocol):
    """botocore's `ReadOnlyCredentials`: one consistent set of keys."""

    @property
    def access_key(self) -> str: ...

    @property
    def secret_key(self) -> str: ...

    @property
    def token(self) -> str | None: ...


class JsonPostSigner:
    """Signs POSTs of a body to `url` with `headers` (plus the date and, with temporary
    credentials, the session token) for `service` in `region`."""

    def __init__(self, url: str, service: str, region: str, headers: Mapping[str, str]) -> None:
        self._service = service
        self._region = region
        self._headers = dict(headers)
        lowered = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
        signed = {
            name: value for name, value in lowered.items() if name not in SIGNED_HEADERS_BLACKLIST
        }
        # The host as botocore signs it (and as the HTTP client sends it): with the port
        # only where it is not the scheme's own.
        signed.setdefault("host", _host_from_url(url))
        self._signed = signed
        parts = urlsplit(url)
        self._canonical_uri = quote(normalize_url_path(parts.path), safe="/~")
        self._canonical_query = _canonical_query(parts.query)
        self._key_for: tuple[str, str, bytes] = ("", "", b"")
        """(date, secret, key): the signing key of the last day and secret used."""

    def sign(
        self, body: bytes, credentials: FrozenCredentials, *, now: float | None = None
    ) -> dict[str, str]:
        """The request's headers, signed: `headers`, X-Amz-Date, X-Amz-Security-Token (with a
        session token) and Authorization."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
        day = stamp[:8]
        signed = dict(self._signed)
        signed["x-amz-date"] = stamp
        headers = dict(self._headers)
        headers["X-Amz-Date"] = stamp
        token = credentials.token
        if token:
            signed["x-amz-security-token"] = " ".join(token.split())
            headers["X-Amz-Security-Token"] = token
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical = "\n".join(
            (
                "POST",
                self._canonical_uri,
                self._canonical_query,
                "".join(f"{name}:{signed[name]}\n" for name in names),
                signed_names,
                hashlib.sha256(body).hexdigest(),
            )
        )
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        string_to_sign = "\n".join(
            (_ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest())
        )
        signature = hmac.new(
            self._signing_key(day, credentials.secret_key), string_to_sign.encode(), "sha256"
        ).hexdigest()
        headers["Authorization"] = (
            f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={signed_names}, Signature={signature}"
        )
        return headers

    def _signing_key(self, day: str, secret: str) -> bytes:
        cached_day, cached_secret, key = self._key_for
        if cached_day == day and cached_secret == secret:
            return key
        key = f"AWS4{secret}".encode()
        for part in (day, self._region, self._service, "aws4_request"):
            key = hmac.new(key, part.encode(), "sha256").digest()
        self._key_for = (day, secret, key)
        return key


def _canonical_query(query: str) -> str:
    """The endpoint URL's own query string, in botocore's canonical order (rarely any)."""
    if not query:
        return ""
    pairs = sorted(pair.partition("=")[::2] for pair in query.split("&"))
    return "&".join(f"{key}={value}" for key, value in pairs)
