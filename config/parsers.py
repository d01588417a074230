"""The API's request parsers. Its own module, importing only DRF's parsers: DRF resolves
``DEFAULT_PARSER_CLASSES`` while ``rest_framework.views`` is being imported, so a parser living in a
module that imports ``rest_framework.views`` would be half-initialised when DRF asks for it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import exceptions
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
