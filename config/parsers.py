"""The API's request parsers and content negotiation. Its own module, importing only DRF's parsers and
negotiation: DRF resolves ``DEFAULT_PARSER_CLASSES`` and ``DEFAULT_CONTENT_NEGOTIATION_CLASS`` while
``rest_framework.views`` is being imported, so a class living in a module that imports
``rest_framework.views`` would be half-initialised when DRF asks for it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import Http404
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser as DRFJSONParser


class JSONTooDeep(exceptions.ParseError):
    default_detail = "The JSON body is nested too deeply."
    default_code = "json_too_deep"


class JSONParser(DRFJSONParser):
    """DRF's JSON parser with a nesting limit (``JSON_MAX_DEPTH``): deeper bodies are 400
    ``json_too_deep`` instead of a ``RecursionError`` (a 500) in the parser or in code that walks the
    data later. Python's json module recurses once per level and fails near the interpreter's limit
    (about 1000 levels), so a body too deep even to parse is refused the same way."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise JSONTooDeep() from None
        limit = settings.JSON_MAX_DEPTH
        if json_depth(data) > limit:
            raise JSONTooDeep(f"The JSON body is nested more than {limit} levels deep.")
        return data


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (a scalar is 0, ``[]`` and ``{}`` are 1), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


class FallbackContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, except that a client asking for a format no renderer offers (``Accept:
    text/html``, ``?format=api``) gets the view's first renderer (JSON for the API) instead of 406 or
    404: the API speaks JSON only, and a browser's or a tool's preference is no error. Views with
    several renderers (the OpenAPI schema's YAML and JSON) still honour what is asked for."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except (exceptions.NotAcceptable, Http404):
            return renderers[0], renderers[0].media_type
