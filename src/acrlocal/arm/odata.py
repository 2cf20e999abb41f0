"""The small part of OData ``$filter`` that ARM list calls take (pure).

Grammar: terms joined by ``and``; a term is ``field eq 'value'`` or a function call ``name()`` /
``name('value')``. Quotes inside values are doubled (``'it''s'``). Anything else raises 400
``InvalidFilterInQueryString`` naming the filter: a filter that cannot be understood never silently widens a list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from acrlocal.arm.errors import ArmError

_TERM = re.compile(
    r"""\s*(?:
        (?P<field>[A-Za-z][A-Za-z0-9/]*)\s+eq\s+'(?P<value>(?:[^']|'')*)'
      | (?P<func>[A-Za-z][A-Za-z0-9]*)\(\s*(?:'(?P<arg>(?:[^']|'')*)')?\s*\)
    )\s*""",
    re.VERBOSE,
)
_AND = re.compile(r"\s*and\s+", re.IGNORECASE)


@dataclass(frozen=True)
class Filter:
    """``fields`` by lower-case name (``resourcetype``...); ``functions`` by lower-case name, with their
    argument or ``None``."""

    fields: dict[str, str]
    functions: dict[str, str | None]

    def field(self, name: str) -> str | None:
        return self.fields.get(name.lower())


def _invalid_filter(text: str, allowed: str) -> ArmError:
    return ArmError(400, "InvalidFilterInQueryString",
                    f"Invalid $filter '{text[:300]}' specified in the query string. Supported: {allowed}.")


def parse_filter(text: str | None, *, fields: tuple[str, ...] = (), functions: tuple[str, ...] = ()) -> Filter:
    """Parse ``text`` allowing only ``fields`` (compared with ``eq``) and ``functions``; ``None`` or empty text
    is the empty filter."""
    allowed = ", ".join([f"{f} eq '...'" for f in fields] + [f"{f}()" for f in functions]) or "nothing"
    result = Filter({}, {})
    if not text or not text.strip():
        return result
    allowed_fields = {f.lower() for f in fields}
    allowed_functions = {f.lower() for f in functions}
    pos = 0
    while True:
        m = _TERM.match(text, pos)
        if not m:
            raise _invalid_filter(text, allowed)
        if m.group("field"):
            name = m.group("field").lower()
            if name not in allowed_fields:
                raise _invalid_filter(text, allowed)
            result.fields[name] = m.group("value").replace("''", "'")
        else:
            name = m.group("func").lower()
            if name not in allowed_functions:
                raise _invalid_filter(text, allowed)
            arg = m.group("arg")
            result.functions[name] = arg.replace("''", "'") if arg is not None else None
        pos = m.end()
        if pos == len(text):
            return result
        sep = _AND.match(text, pos)
        if not sep:
            raise _invalid_filter(text, allowed)
        pos = sep.end()
