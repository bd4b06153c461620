"""The http backend as a plugin: its settings (`type: http`) and its factory.

The factory imports the implementation (esm.backends.http) when called: the
configuration loads every backend's settings, and `esm validate` or `esm schema` should
not pay for aiohttp.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from esm.redact import redact
from esm.settings import (
    ConfigModel,
    FunctionSettings,
    config_problem,
    show,
    url_problem,
)

if TYPE_CHECKING:
    from esm.protocols import FunctionBackend
    from esm.registry import BackendContext

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class HeaderSourceConfig(ConfigModel):
    """A header value read from the environment or a (mounted secret) file."""

    env: str | None = Field(None, description="The environment variable holding the value.")
    file: str | None = Field(
        None, description="The file holding the value; re-read when it changes."
    )
    prefix: str = Field("", description='Written before the value, e.g. "Bearer ".')

    @model_validator(mode="after")
    def _one_source(self) -> HeaderSourceConfig:
        if (self.env is None) == (self.file is None):
            raise config_problem("give exactly one of env or file")
        return self


class TlsConfig(ConfigModel):
    """TLS towards an https:// function endpoint."""

    ca_bundle: str | None = Field(
        None,
        description="PEM file of the certificate authorities that sign the endpoint's "
        "certificate (only these are trusted).",
    )
    client_cert: str | None = Field(
        None,
        description="PEM client certificate, for endpoints that require mutual TLS "
        "(with client_key).",
    )
    client_key: str | None = Field(None, description="The client certificate's PEM key.")
    verify: bool = Field(
        True, description="false skips verification of the endpoint (logged as a warning)."
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.client_cert is None) != (self.client_key is None):
            raise config_problem("client_cert and client_key go together")
        return self


class HttpFunctionConfig(FunctionSettings):
    """A function reached over HTTP: the event is POSTed to `url`."""

    type: Literal["http"]
    url: str = Field(
        description="The endpoint: an http:// or https:// URL. Credentials in it "
        "(user:password@) are sent as Basic authentication and never shown."
    )
    headers: dict[str, str | HeaderSourceConfig] = Field(
        default_factory=dict,
        description="Request headers: a value, or where to read it ({env: VAR} or "
        "{file: /path}, with an optional prefix), so that secrets stay out of the file; "
        "values are never logged.",
    )
    tls: TlsConfig = Field(
        default_factory=lambda: TlsConfig(), description="TLS towards an https:// endpoint."
    )
    max_connections: int = Field(
        100,
        ge=1,
        le=10000,
        description="Connections kept open to the endpoint (keep-alive pool); keep it at "
        "least the function's concurrency.",
    )

    @field_validator("headers", mode="before")
    @classmethod
    def _header_forms(cls, value: Any) -> Any:
        # One clear message rather than one per member of the union.
        if isinstance(value, dict):
            bad = [k for k, v in value.items() if not isinstance(v, str | dict)]
            if bad:
                raise config_problem(
                    f"{', '.join(map(str, bad))}: a header value is a string, "
                    "{env: VARIABLE} or {file: /path}"
                )
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if problem := url_problem(value):
            raise config_problem(problem)
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(
        cls, value: dict[str, str | HeaderSourceConfig]
    ) -> dict[str, str | HeaderSourceConfig]:
        problems = [
            f"{show(name)} is not a valid header name"
            for name in value
            if not _HEADER_NAME.fullmatch(name)
        ]
        problems += [
            f"{name}: the value must be on one line"
            for name, text in value.items()
            if isinstance(text, str) and ("\n" in text or "\r" in text)
        ]
        if problems:
            raise config_problem(*problems)
        return value

    @model_validator(mode="after")
    def _one_authorization(self) -> HttpFunctionConfig:
        # aiohttp turns credentials in the url into an Authorization header, and refuses
        # every request that would carry two.
        if "@" in urlsplit(self.url).netloc and any(
            name.lower() == "authorization" for name in self.headers
        ):
            raise config_problem(
                "url has credentials (user:password@) and headers has an Authorization "
                "header: give only one of them"
            )
        return self

    def target(self) -> str:
        return redact(self.url)


async def create(context: BackendContext, config: HttpFunctionConfig) -> FunctionBackend:
    from esm.backends.http import HeaderSource, HttpBackend

    headers: dict[str, str | HeaderSource] = {
        key: value if isinstance(value, str) else HeaderSource(value.env, value.file, value.prefix)
        for key, value in config.headers.items()
    }
    return HttpBackend(
        config.url,
        timeout=config.timeout,
        headers=headers,
        function_name=context.name,
        max_connections=config.max_connections,
        ca_bundle=config.tls.ca_bundle,
        client_cert=config.tls.client_cert,
        client_key=config.tls.client_key,
        verify_tls=config.tls.verify,
    )
