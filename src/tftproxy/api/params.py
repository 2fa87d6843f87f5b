"""Request parameters as Sinatra gives them to smart-proxy: the query merged with the body.

Foreman posts ``application/x-www-form-urlencoded``; curl users may post ``multipart/form-data``
or a JSON object. Values are decoded strictly: a byte sequence that is not UTF-8 is refused
with a message naming the parameter, instead of being silently replaced (aiohttp's ``post()``
would write U+FFFD into a boot config). Every value must be text: a JSON string with a lone
surrogate (``"\\ud800"``, which no UTF-8 file can hold) and JSON nested past what a
parameter can be are refused with a 400 too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tftproxy.api.context import context
from tftproxy.errors import (
    BadParameters,
    BodyTimeout,
    BodyTooLarge,
    UnsupportedMediaType,
    printable,
)

# Parameters are flat strings: anything nested deeper than this is not one of ours, and
# json.loads would otherwise recurse until Python's stack limit.
MAX_JSON_DEPTH = 32

T = TypeVar("T")


def _json_depth(text: str) -> int:
    """How deeply brackets nest in ``text`` (strings skipped), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return deepest
        elif c in "]}":
            depth -= 1
    return deepest


def _text(value: str, what: str) -> str:
    """``value`` if it is text a file can hold (no lone surrogate), else BadParameters."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = repr(value[exc.start])[1:-1]
        raise BadParameters(f"{what} contains a lone surrogate ({bad}), which is not "
                            f"text") from None
    return value


def parse_urlencoded(data: bytes, where: str, charset: str = "utf-8") -> dict[str, str]:
    """``a=1&b=2`` with ``+`` as space; the last of repeated keys wins, as in Sinatra.

    Works on bytes: a raw byte and its %-escape must decode alike, in the body's charset.
    """
    params: dict[str, str] = {}
    for pair in data.split(b"&"):
        if not pair:
            continue
        raw_key, _, raw_val = pair.partition(b"=")
        try:
            key = unquote_to_bytes(raw_key.replace(b"+", b" ")).decode(charset)
        except UnicodeDecodeError:
            raise BadParameters(f"a parameter name in the {where} is not valid "
                                  f"{charset}") from None
        try:
            params[key] = unquote_to_bytes(raw_val.replace(b"+", b" ")).decode(charset)
        except UnicodeDecodeError:
            raise BadParameters(f"parameter {printable(key)} in the {where} is not valid "
                                  f"{charset}") from None
    return params


async def _within_body_limit(request: web.Request, read: Awaitable[T]) -> T:
    """``read`` (of the request's body) within the API's body time limit."""
    limit = context(request).settings.http_header_timeout
    try:
        # A body trickled byte by byte would hold the connection (and a handler) forever.
        async with asyncio.timeout(limit):
            return await read
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {limit:g} s") from None


async def _body_params(request: web.Request) -> dict[str, str]:
    if not request.body_exists:
        return {}
    return await _within_body_limit(request, _read_body_params(request))


def _load_json(text: str, invalid: type[BadParameters] = BadParameters) -> Any:
    """``text`` parsed, nested no deeper than a parameter can be; ``invalid`` for JSON that
    cannot be read (too deep, malformed), BadParameters for a key or string that is not text."""
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise invalid(f"request body nests JSON more than {MAX_JSON_DEPTH} levels deep; "
                      f"parameters are strings")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    _check_texts(data)
    return data


def _check_texts(data: Any) -> None:
    """Every key and string of parsed JSON is text a file can hold (no lone surrogate)."""
    if isinstance(data, str):
        _text(data, "a JSON string")
    elif isinstance(data, list):
        for item in data:
            _check_texts(item)
    elif isinstance(data, dict):
        for key, val in data.items():
            name = printable(_text(key, "a parameter name"))
            if isinstance(val, str):
                _text(val, f"parameter {name}")
            else:
                _check_texts(val)


async def _read_body_params(request: web.Request) -> dict[str, str]:
    ctype = request.content_type
    if ctype == "multipart/form-data":
        return await _multipart(request)
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"request body larger than {request.client_max_size} "
                              f"bytes") from None
    if not body:
        return {}
    charset = (request.charset or "utf-8").lower()
    try:
        text = body.decode(charset)
    except LookupError:
        raise UnsupportedMediaType(f"unknown charset {printable(charset)}") from None
    except UnicodeDecodeError:
        raise BadParameters(f"request body is not valid {charset}") from None
    if ctype in ("application/x-www-form-urlencoded", "application/octet-stream", ""):
        # curl --data without a type, and clients that omit it, mean a form, as in Sinatra.
        return parse_urlencoded(body.strip(), "request body", charset)
    if ctype == "application/json":
        data = _load_json(text)
        if not isinstance(data, dict):
            raise BadParameters("a JSON request body must be an object")
        out: dict[str, str] = {}
        for key, val in data.items():
            if isinstance(val, bool) or not isinstance(val, str | int | float):
                raise BadParameters(f"parameter {printable(key)} must be a string")
            out[key] = str(val)
        return out
    raise UnsupportedMediaType(f"unsupported Content-Type {printable(ctype)}: send "
                          f"application/x-www-form-urlencoded")


async def _multipart(request: web.Request) -> dict[str, str]:
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"request body larger than {request.client_max_size} "
                              f"bytes") from None
    except (ValueError, HttpProcessingError) as exc:
        # aiohttp's messages may quote the offending bytes: keep them printable.
        raise BadParameters(f"unreadable multipart body: {printable(str(exc), 200)}") from None
    out: dict[str, str] = {}
    for key, val in form.items():
        name = printable(_text(key, "a parameter name"))
        if not isinstance(val, str):
            raise BadParameters(f"parameter {name} must be a text field, not a file")
        out[key] = _text(val, f"parameter {name}")
    return out


async def read_params(request: web.Request) -> dict[str, str]:
    """Query parameters overlaid with body parameters (the body wins, as in Sinatra)."""
    # The request line's bytes, as they came (aiohttp keeps non-UTF-8 ones as surrogates).
    raw = request.rel_url.raw_query_string.encode("utf-8", "surrogateescape")
    params = parse_urlencoded(raw, "query string")
    params.update(await _body_params(request))
    return params


_RUBY_CLASSES = {list: "Array", str: "String", int: "Integer", float: "Float",
                 type(None): "NilClass", bool: "TrueClass"}


class InvalidJson(UnsupportedMediaType):
    """smart-proxy's ``parse_json_body`` refusal; its text is the whole answer (415)."""


async def read_json_params(request: web.Request) -> dict[str, Any]:
    """smart-proxy's ``parse_json_body.merge(params)``: a JSON object body, values of any type,
    with the query's parameters winning on conflict; any other body as :func:`read_params`.

    Unparsable JSON, or JSON that is not an object, is 415 (InvalidJson), as smart-proxy says.
    """
    if request.content_type != "application/json":
        return dict(await read_params(request))
    raw = request.rel_url.raw_query_string.encode("utf-8", "surrogateescape")
    query = parse_urlencoded(raw, "query string")
    try:
        body = await _within_body_limit(request, request.read())
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"request body larger than {request.client_max_size} "
                           f"bytes") from None
    if not body.strip():
        return dict(query)
    try:
        text = body.decode(request.charset or "utf-8")
    except (ValueError, LookupError) as exc:
        raise InvalidJson(f"Invalid JSON content in body of request: {exc}") from None
    try:
        data = _load_json(text, InvalidJson)
    except InvalidJson as exc:
        raise InvalidJson(f"Invalid JSON content in body of request: {exc}") from None
    if not isinstance(data, dict):
        kind = _RUBY_CLASSES.get(type(data), type(data).__name__)
        if data is False:
            kind = "FalseClass"
        raise InvalidJson(f"Invalid JSON content in body of request: data must be a hash, "
                          f"not {kind}")
    return {**data, **query}
