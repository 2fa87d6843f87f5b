"""Request parameters as Sinatra gives them to smart-proxy: the query merged with the body.

Foreman posts ``application/x-www-form-urlencoded``; curl users may post ``multipart/form-data``
or a JSON object. Values are decoded strictly: a byte sequence that is not UTF-8 is refused
with a message naming the parameter, instead of being silently replaced (aiohttp's ``post()``
would write U+FFFD into a boot config).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tftproxy.errors import BadParameters, BodyTooLarge, UnsupportedMediaType, printable


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


async def _body_params(request: web.Request) -> dict[str, str]:
    if not request.body_exists:
        return {}
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
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BadParameters(f"request body is not valid JSON: {exc}") from None
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
        if not isinstance(val, str):
            raise BadParameters(f"parameter {printable(key)} must be a text field, not a file")
        out[key] = val
    return out


async def read_params(request: web.Request) -> dict[str, str]:
    """Query parameters overlaid with body parameters (the body wins, as in Sinatra)."""
    params = parse_urlencoded(request.rel_url.raw_query_string.encode(), "query string")
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
    query = parse_urlencoded(request.rel_url.raw_query_string.encode(), "query string")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"request body larger than {request.client_max_size} "
                           f"bytes") from None
    if not body.strip():
        return dict(query)
    try:
        data = json.loads(body.decode(request.charset or "utf-8"))
    except (ValueError, LookupError) as exc:
        raise InvalidJson(f"Invalid JSON content in body of request: {exc}") from None
    if not isinstance(data, dict):
        kind = _RUBY_CLASSES.get(type(data), type(data).__name__)
        if data is False:
            kind = "FalseClass"
        raise InvalidJson(f"Invalid JSON content in body of request: data must be a hash, "
                          f"not {kind}")
    return {**data, **query}
