"""The hot calls of a JSON-protocol service (Kinesis and DynamoDB Streams GetRecords, SQS
receive, delete and visibility batches) on a lean path: a request signed as botocore signs
it, with the client's own credentials, sent on the client's own aiohttp session, answered
through orjson (or the client's parser, `shaped`).

An idle shard's GetRecords costs about 0.8 ms of CPU through aiobotocore, which builds the
request anew each time (the user-agent string, the endpoint rules, the serialization of the
input shapes) before signing and sending it. Here the endpoint, the target header, the
content type and the user agent are worked out once, from the client: only the body, the
signature and the sending are per call. What stays botocore's:

- the credentials: the client's own provider chain and object, so refreshed credentials
  (IRSA, web identity, SSO, instance roles) are used as the client would use them;
- the transport: the client's HTTP session, with its TLS verification and CA bundle,
  proxies, timeouts and connection pool, and its exceptions (`esm.aws.lean_transport`);
- the signature: Signature Version 4 as botocore's `SigV4Auth` makes it, byte for byte, from
  a signer that works out once what is the same for every call (`esm.aws.sigv4`);
- the errors: an error answer is parsed by the client's own response parser and raised as
  the exception the client's error factory makes for its code, and the transport raises
  what it raises for the client, so `esm.aws.errors.translate_error` sees what it always
  saw;
- the retries: as the client's standard mode with two attempts, one retry with jittered
  backoff on throttling, 5xx answers and lost connections.

Every call is told to the client's call observer (esm_aws_calls_total), as the client's own.
"""

from __future__ import annotations

import asyncio
import inspect
import random
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson
from botocore.exceptions import (
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from esm.aws.call_metrics import THROTTLING_CODES, CallObserver, call_outcome
from esm.aws.lean_transport import Answer, RawHeaders, SessionTransport
from esm.aws.sigv4 import JsonPostSigner

__all__ = ["LeanJsonCalls", "parse_wire"]

_RETRYABLE_STATUS: Final = frozenset({500, 502, 503, 504})
# What botocore's standard mode retries when no answer came.
_CONNECTION_ERRORS: Final = (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError)
# botocore's standard mode: the first retry waits up to 1 s, with full jitter.
_FIRST_RETRY_MAX_SECONDS: Final = 1.0


class LeanJsonCalls:
    """Calls of one aiobotocore client's service sent on the lean path; `aclose()` at the end."""

    def __init__(self, client: Any, *, observe: CallObserver | None = None) -> None:
        meta = client.meta
        metadata = meta.service_model.metadata
        if metadata.get("protocol") != "json":
            raise ValueError(f"{meta.service_model.service_name} does not speak the JSON protocol")
        self._client = client
        self._url: str = meta.endpoint_url
        self._service = meta.service_model.service_id.hyphenize()
        self._target = f"{metadata['targetPrefix']}."
        self._signers: dict[str, JsonPostSigner] = {}
        self._signing_name: str = metadata.get("signingName") or metadata["endpointPrefix"]
        self._content_type = f"application/x-amz-json-{metadata.get('jsonVersion', '1.0')}"
        self._observe = observe
        self._transport = SessionTransport(client._endpoint.http_session, self._url)

    async def call(
        self, operation: str, params: Mapping[str, Any], *, shaped: bool = False
    ) -> dict[str, Any]:
        """The parsed answer of `operation`; raises what the client would raise.

        The answer is orjson's parse of the body as it travels (the wire form), or with
        `shaped` the client's own parse (blobs decoded to bytes, as the client answers).
        """
        status, raw, headers = await self._exchange(operation, params)
        if shaped:
            return await self._parsed(operation, status, raw, headers)
        return parse_wire(raw)

    async def call_body(self, operation: str, params: Mapping[str, Any]) -> bytes:
        """The body of a successful answer of `operation`, as it travels (for a caller that
        looks at the bytes before parsing them, `parse_wire`); raises as `call` does."""
        _, raw, _ = await self._exchange(operation, params)
        return raw

    async def _exchange(self, operation: str, params: Mapping[str, Any]) -> Answer:
        """A successful answer to `operation`, after the retries; an error answer raised as
        the client raises it."""
        body = orjson.dumps(params)
        started = time.monotonic()
        outcome = "error"
        try:
            status, raw, headers = await self._attempt(operation, body)
            if status >= 300:
                error = await self._error(operation, status, raw, headers)
                if _retryable(error):
                    await asyncio.sleep(random.random() * _FIRST_RETRY_MAX_SECONDS)
                    status, raw, headers = await self._attempt(operation, body)
                    if status >= 300:
                        error = await self._error(operation, status, raw, headers)
            if status >= 300:
                outcome = call_outcome(status, error)
                # The modeled exception botocore raises for the code (ExpiredIteratorException,
                # ...), or its ClientError.
                raise self._client.exceptions.from_code(self._error_code(error))(error, operation)
            outcome = "ok"
            return status, raw, headers
        finally:
            if self._observe is not None:
                self._observe(self._service, operation, outcome, time.monotonic() - started)

    def _error_code(self, error: Mapping[str, Any]) -> str | None:
        """The code the client's error factory is asked for: for SQS, which moved from the
        query protocol, the query error's code, as botocore's after-call handler for SQS
        makes it (`_handle_sqs_compatible_error`)."""
        details = error.get("Error", {})
        if self._service == "sqs" and details.get("QueryErrorCode"):
            return str(details["QueryErrorCode"])
        code = details.get("Code")
        return str(code) if code is not None else None

    async def _error(
        self, operation: str, status: int, body: bytes, headers: RawHeaders
    ) -> dict[str, Any]:
        """The error answer parsed by the client's own response parser, as the client would."""
        return await self._parsed(operation, status, body, headers)

    async def _parsed(
        self, operation: str, status: int, body: bytes, headers: RawHeaders
    ) -> dict[str, Any]:
        # The headers as aiobotocore hands them to the parser: names in lower case.
        named = {name.decode().lower(): value.decode() for name, value in headers}
        model = self._client.meta.service_model.operation_model(operation)
        parsed = self._client._response_parser.parse(
            {"status_code": status, "headers": named, "body": body}, model.output_shape
        )
        if inspect.isawaitable(parsed):
            parsed = await parsed
        return dict(parsed)

    async def _attempt(self, operation: str, body: bytes) -> Answer:
        """One request, and once more after a lost connection or a timeout."""
        try:
            return await self._send(operation, body)
        except _CONNECTION_ERRORS:
            await asyncio.sleep(random.random() * _FIRST_RETRY_MAX_SECONDS)
        return await self._send(operation, body)

    async def _send(self, operation: str, body: bytes) -> Answer:
        credentials = self._client._request_signer._credentials
        if credentials is None:
            raise NoCredentialsError()
        frozen = await credentials.get_frozen_credentials()
        return await self._transport.post(self._signer(operation).sign(body, frozen), body)

    def _signer(self, operation: str) -> JsonPostSigner:
        signer = self._signers.get(operation)
        if signer is None:
            meta = self._client.meta
            headers = {"X-Amz-Target": self._target + operation, "Content-Type": self._content_type}
            # The client's own user agent (as CloudTrail shows it), made once: unsigned, as
            # botocore leaves it.
            agent = getattr(self._client, "_user_agent_creator", None)
            if agent is not None:
                headers["User-Agent"] = agent.to_string()
            signer = JsonPostSigner(self._url, self._signing_name, meta.region_name, headers)
            self._signers[operation] = signer
        return signer

    async def aclose(self) -> None:
        """Nothing of its own to close: the transport is the client's."""


def parse_wire(body: bytes) -> dict[str, Any]:
    """A JSON answer's body parsed by orjson: an empty body, or one that is not an object,
    is an answer without fields."""
    answer = orjson.loads(body) if body else {}
    return answer if isinstance(answer, dict) else {}


def _retryable(error: Mapping[str, Any]) -> bool:
    status = error.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if status in _RETRYABLE_STATUS or status == 429:
        return True
    return error.get("Error", {}).get("Code") in THROTTLING_CODES
