"""JSON as ARM reads a deployment request (pure).

ARM's reader is lenient where JSON is strict, and clients rely on it: az 2.91 splices the template file into the
request body as ``..., template:{...}}`` (an unquoted property name), and template files carry ``//`` and
``/* */`` comments, single-quoted strings and trailing commas. :func:`loads` accepts all of that and returns
plain Python values, except that every object is a :class:`JsonObject` and every array a :class:`JsonArray`
carrying the line and column where it starts, which template errors cite (az sends the file's text
unchanged, so a line in the request is the line in the file). Anything else raises
:class:`~acrlocal.arm.templates.errors.TemplateError` with code ``InvalidRequestContent`` and the position.
"""

from __future__ import annotations

import re
from typing import Any

from acrlocal.arm.templates.errors import TemplateError
from acrlocal.inbound import MAX_JSON_DEPTH, MalformedRequest, check_json


class JsonObject(dict[str, Any]):
    """A JSON object with the position (1-based line and column) of its ``{``."""

    line: int = 0
    column: int = 0


class JsonArray(list[Any]):
    """A JSON array with the position (1-based line and column) of its ``[``."""

    line: int = 0
    column: int = 0


_SPACE = re.compile(r"(?:\s+|//[^\n]*|/\*.*?\*/)*", re.DOTALL)
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_NAME = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")
_LOW_SURROGATE = re.compile(r"\\u([dD][c-fC-F][0-9a-fA-F]{2})")
_LITERALS = {"true": True, "false": False, "null": None}


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self._line_starts: list[int] | None = None

    def where(self, pos: int) -> tuple[int, int]:
        if self._line_starts is None:
            self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        lo, hi = 0, len(self._line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._line_starts[mid] <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo + 1, pos - self._line_starts[lo] + 1

    def fail(self, problem: str, pos: int | None = None) -> TemplateError:
        line, column = self.where(self.pos if pos is None else pos)
        return TemplateError(f"The request content was invalid and could not be deserialized: '{problem} "
                             f"Path '', line {line}, position {column}.'", code="InvalidRequestContent",
                             line=line, column=column)

    def skip(self) -> None:
        m = _SPACE.match(self.text, self.pos)
        assert m is not None
        self.pos = m.end()
        if self.text.startswith("/*", self.pos):
            raise self.fail("Unterminated comment.")

    def value(self, depth: int) -> Any:
        """The value at ``pos``; ``depth`` objects and arrays enclose it."""
        self.skip()
        if self.pos >= len(self.text):
            raise self.fail("Unexpected end of content.")
        c = self.text[self.pos]
        if c == "{":
            return self.obj(depth)
        if c == "[":
            return self.array(depth)
        if c in "\"'":
            return self.string()
        m = _NUMBER.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            token = m.group()
            return float(token) if any(ch in token for ch in ".eE") else int(token)
        m = _NAME.match(self.text, self.pos)
        if m and m.group() in _LITERALS:
            self.pos = m.end()
            return _LITERALS[m.group()]
        raise self.fail(f"Unexpected character encountered while parsing value: {c}.")

    def string(self) -> str:
        quote = self.text[self.pos]
        start = self.pos
        self.pos += 1
        parts: list[str] = []
        text = self.text
        while True:
            end = self.pos
            while end < len(text) and text[end] not in (quote, "\\"):
                end += 1
            parts.append(text[self.pos:end])
            if end >= len(text):
                raise self.fail("Unterminated string. Expected delimiter: " + quote + ".", start)
            if text[end] == quote:
                self.pos = end + 1
                return "".join(parts)
            esc = text[end + 1:end + 2]
            if esc in _ESCAPES:
                parts.append(_ESCAPES[esc])
                self.pos = end + 2
            elif esc == "u" and _HEX4.fullmatch(text, end + 2, end + 6):
                code = int(text[end + 2:end + 6], 16)
                self.pos = end + 6
                low = _LOW_SURROGATE.match(text, self.pos)
                if 0xD800 <= code < 0xDC00 and low:  # a UTF-16 pair: one character, as JSON means it
                    code = 0x10000 + ((code - 0xD800) << 10) + (int(low.group(1), 16) - 0xDC00)
                    self.pos = low.end()
                parts.append(chr(code))
            else:
                raise self.fail(f"Bad JSON escape sequence: \\{esc}.", end)

    def name(self) -> str:
        c = self.text[self.pos:self.pos + 1]
        if c in ("\"", "'"):
            return self.string()
        m = _NAME.match(self.text, self.pos)
        if not m:
            raise self.fail(f"Invalid property identifier character: {c or 'end of content'}.")
        self.pos = m.end()
        return m.group()

    def nest(self, depth: int) -> None:
        if depth >= MAX_JSON_DEPTH:
            raise self.fail(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.")

    def obj(self, depth: int) -> JsonObject:
        self.nest(depth)
        result = JsonObject()
        result.line, result.column = self.where(self.pos)
        self.pos += 1
        while True:
            self.skip()
            if self.text.startswith("}", self.pos):
                self.pos += 1
                return result
            key = self.name()
            self.skip()
            if not self.text.startswith(":", self.pos):
                raise self.fail(f"Invalid character after parsing property name. Expected ':' but got: "
                                f"{self.text[self.pos:self.pos + 1] or 'end of content'}.")
            self.pos += 1
            result[key] = self.value(depth + 1)
            self.skip()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith("}", self.pos):
                raise self.fail("After parsing a value an unexpected character was encountered: "
                                f"{self.text[self.pos:self.pos + 1] or 'end of content'}.")

    def array(self, depth: int) -> JsonArray:
        self.nest(depth)
        result = JsonArray()
        result.line, result.column = self.where(self.pos)
        self.pos += 1
        while True:
            self.skip()
            if self.text.startswith("]", self.pos):
                self.pos += 1
                return result
            result.append(self.value(depth + 1))
            self.skip()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith("]", self.pos):
                raise self.fail("After parsing a value an unexpected character was encountered: "
                                f"{self.text[self.pos:self.pos + 1] or 'end of content'}.")


def loads(text: str | bytes) -> Any:
    """Parse ``text`` as ARM does; :class:`TemplateError` (``InvalidRequestContent``) with the position if it
    is not JSON even by ARM's lenient reading."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise TemplateError("The request content was invalid and could not be deserialized: 'the body is "
                                f"not UTF-8 ({exc.reason} at byte {exc.start}).'",
                                code="InvalidRequestContent") from None
    reader = _Reader(text)
    value = reader.value(0)
    reader.skip()
    if reader.pos != len(text):
        raise reader.fail("Additional text encountered after finished reading JSON content: "
                          f"{text[reader.pos]}.")
    try:
        check_json(value, text, what="the JSON")
    except MalformedRequest as exc:  # a lone surrogate (\ud800) that could be neither stored nor sent back
        raise TemplateError(f"The request content was invalid and could not be deserialized: '{exc}.'",
                            code="InvalidRequestContent") from None
    return value
