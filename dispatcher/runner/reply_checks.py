"""What a reply must be besides text, checked for every vendor after its call.

A request with a JSON response format gets the parsed value in
`Response.parsed` (checked against the schema when the format is strict); a
call to a strict tool gets its arguments checked against the tool's
parameters schema, and a call to a tool the request never declared is refused.
A reply that fails is `InvalidVendorOutput` keeping the raw text: final, since
the same prompt tends to fail the same way. A tool turn (calls and no text) and
a refusal (`content_filter`) have no JSON to parse and pass as they are.
"""

from __future__ import annotations

from dispatcher.errors import InvalidVendorOutput
from dispatcher.models import FinishReason, JsonObjectFormat, JsonSchemaFormat, Request, Response
from dispatcher.models.formats import check_against_schema

__all__ = ["checked_reply"]


def checked_reply(request: Request, response: Response) -> Response:
    """`response` with its JSON parsed into `parsed`; `InvalidVendorOutput` if it fails."""
    if request.response_format is None and not request.tools:
        return response
    try:
        if request.tools and response.tool_calls:
            _check_tool_calls(request, response)
        return _parsed(request, response)
    except InvalidVendorOutput as exc:
        exc.vendor = exc.vendor or response.vendor
        raise


def _parsed(request: Request, response: Response) -> Response:
    fmt = request.response_format
    if not isinstance(fmt, JsonObjectFormat | JsonSchemaFormat):
        return response
    if response.finish_reason is FinishReason.CONTENT_FILTER:
        return response
    if response.tool_calls and not response.content.strip():
        return response
    if response.finish_reason is FinishReason.LENGTH:
        raise InvalidVendorOutput(
            "the reply was cut at max_tokens, so its JSON is incomplete; raise max_tokens",
            raw_text=response.content,
        )
    return response.model_copy(update={"parsed": fmt.parse(response.content)})


def _check_tool_calls(request: Request, response: Response) -> None:
    declared = {tool.function.name: tool.function for tool in request.tools or ()}
    for call in response.tool_calls:
        function = declared.get(call.name)
        if function is None:
            raise InvalidVendorOutput(
                f"the reply calls {call.name!r}, a tool the request did not declare "
                f"(declared: {', '.join(sorted(declared))})",
                raw_text=call.arguments,
            )
        if function.strict and function.parameters is not None:
            check_against_schema(
                call.parsed_arguments(),
                function.parameters,
                call.arguments,
                f"the arguments of tool call {call.id!r} ({call.name})",
            )
