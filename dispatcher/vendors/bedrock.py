"""AWS Bedrock Converse: content blocks, a binary event stream, errors named by type.

Request: `POST {endpoint}/model/{modelId}/converse` (`/converse-stream` to
stream), the model id percent-encoded as one path segment (`:` is `%3A`; an
inference-profile ARN fits too). The endpoint is `base_url`, else
`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, else `https://bedrock-runtime.{region}
.amazonaws.com`, the region being `region`, else `AWS_REGION`, else
`AWS_DEFAULT_REGION`. Auth (`bedrock_auth`): a Bedrock API key as Bearer, or
SigV4 by botocore. Body: `messages`, `system` blocks, `inferenceConfig`
(`maxTokens`, `temperature`, `topP`, `stopSequences`), `toolConfig`,
`outputConfig` and `additionalModelRequestFields` (all of `extra_body`); the
mapping of messages, tools and formats is `bedrock_blocks`. Converse has no
seed and no user field: a seed is refused, the user is not sent.
Replies and streams are read by `bedrock_replies`.
Errors: by AWS's error type (`bedrock_errors`).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx

from dispatcher.config.schema import VendorConfig
from dispatcher.errors import ConfigError, DispatcherError, InvalidRequest
from dispatcher.models import Request
from dispatcher.vendors import bedrock_blocks as blocks
from dispatcher.vendors.base import Completion, HttpVendor, StreamParser, path_segment
from dispatcher.vendors.bedrock_auth import BedrockAuth, SigV4Auth, bedrock_auth
from dispatcher.vendors.bedrock_errors import classify_error
from dispatcher.vendors.bedrock_replies import (
    FINISH_REASONS,
    ConverseStreamParser,
    parse_converse,
    parse_usage,
)

__all__ = [
    "FINISH_REASONS",
    "BedrockVendor",
    "ConverseStreamParser",
    "classify_error",
    "control_plane_url",
    "converse_body",
    "endpoint_and_region",
    "parse_converse",
    "parse_usage",
]

ENDPOINT_ENV = "AWS_ENDPOINT_URL_BEDROCK_RUNTIME"
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")


def endpoint_and_region(
    name: str, config: VendorConfig, env: Mapping[str, str]
) -> tuple[str, str | None]:
    """The base URL to call and the region (None when only an endpoint is known).

    Raises:
        ConfigError: neither an endpoint nor a region is configured.
    """
    region = config.region or next((env[n] for n in REGION_ENVS if env.get(n)), None)
    endpoint = config.base_url or env.get(ENDPOINT_ENV)
    if endpoint:
        return endpoint.rstrip("/"), region
    if region is None:
        raise ConfigError(
            [f"vendors.{name}.region: is required for type 'bedrock' (or set AWS_REGION)"]
        )
    return f"https://bedrock-runtime.{region}.amazonaws.com", region


def control_plane_url(runtime_url: str) -> str:
    """Where ListFoundationModels answers, beside a runtime endpoint.

    AWS's hosts (`bedrock-runtime[-fips].REGION.amazonaws.com`) have the control
    plane at `bedrock[-fips].REGION...`; any other endpoint (a proxy, a VPC
    endpoint, a stand-in) is asked at its own base URL.
    """
    url = httpx.URL(runtime_url)
    host = url.host
    if host.startswith("bedrock-runtime") and host.endswith(
        (".amazonaws.com", ".amazonaws.com.cn")
    ):
        url = url.copy_with(host="bedrock" + host.removeprefix("bedrock-runtime"))
    return str(url).rstrip("/")


def converse_body(request: Request) -> dict[str, Any]:
    """The Converse (and ConverseStream) body for `request`.

    Raises:
        InvalidRequest: a seed, an image by URL, a call whose arguments are no
            object, one call per reply, or no user or assistant message.
    """
    if request.seed is not None:
        raise InvalidRequest(
            "seed: Bedrock has no repeatable sampling; leave seed out for this vendor"
        )
    messages = blocks.wire_messages(request.messages)
    if not messages:
        raise InvalidRequest("Bedrock needs at least one user or assistant message")
    body: dict[str, Any] = {"messages": messages}
    system = blocks.system_blocks(request)
    if system:
        body["system"] = system
    inference: dict[str, Any] = {}
    if request.max_tokens is not None:
        inference["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        inference["temperature"] = request.temperature
    if request.top_p is not None:
        inference["topP"] = request.top_p
    if request.stop:
        inference["stopSequences"] = list(request.stop)
    if inference:
        body["inferenceConfig"] = inference
    tools = blocks.tool_config(request)
    if tools is not None:
        body["toolConfig"] = tools
    output = blocks.output_config(request)
    if output is not None:
        body["outputConfig"] = output
    if request.extra_body:
        body["additionalModelRequestFields"] = dict(request.extra_body)
    return body


class BedrockVendor(HttpVendor):
    """bedrock-runtime in the configured region, or any endpoint given."""

    request_id_header = "x-amzn-requestid"

    def __init__(
        self,
        name: str,
        config: VendorConfig,
        client: httpx.AsyncClient | None = None,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        # AWS's own variables are read where AWS's SDKs read them: when the vendor is
        # built (once, at a worker's start); tests pass `env`.
        env = os.environ if env is None else env
        endpoint, region = endpoint_and_region(name, config, env)
        self.region = region
        self.auth: BedrockAuth = bedrock_auth(name, config, env, region or "")
        if isinstance(self.auth, SigV4Auth) and not region:
            raise ConfigError(
                [f"vendors.{name}.region: SigV4 signing needs the region (or set AWS_REGION)"]
            )
        super().__init__(name, config.model_copy(update={"base_url": endpoint}), client)
        self.base_url = endpoint

    def build_request(self, request: Request, model: str, *, stream: bool) -> httpx.Request:
        try:
            body = converse_body(request)
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, vendor=self.name) from None
        action = "converse-stream" if stream else "converse"
        # No Accept header, as AWS's SDKs send none: the action decides JSON or event stream.
        headers = httpx.Headers({"Content-Type": "application/json"})
        headers.update(self.config.headers)
        http_request = httpx.Request(
            "POST",
            self.parsed_url(f"{self.base_url}/model/{path_segment(model)}/{action}"),
            headers=headers,
            content=json.dumps(body).encode(),
        )
        return self.auth.sign(http_request)

    def parse_response(self, body: Any) -> Completion:
        return parse_converse(body, self.name)

    def stream_parser(self) -> StreamParser:
        return ConverseStreamParser(self.name)

    async def _items(self, response: httpx.Response) -> AsyncIterator[Any]:
        # The body is binary event-stream frames, not lines: the parser frames them.
        async for chunk in response.aiter_bytes():
            yield chunk

    def classify_error(self, status: int, headers: httpx.Headers, body: str) -> DispatcherError:
        return classify_error(status, headers, body, self.name)

    def health_request(self) -> httpx.Request:
        # bedrock-runtime lists no models; the control plane's ListFoundationModels does,
        # signed for the same service and region (`control_plane_url`).
        url = f"{control_plane_url(self.base_url)}/foundation-models?byOutputModality=TEXT"
        return self.auth.sign(httpx.Request("GET", url))
