"""ARM's template language expressions (pure): ``"[concat('a', parameters('b'))]"``.

A template string is an expression when it starts with ``[`` and ends with ``]``; ``[[`` at the start escapes
the bracket (``"[[x]"`` is the text ``[x]``). :func:`parse` turns the text between the brackets into a small
tree of :class:`Call`, :class:`Literal`, :class:`Member` and :class:`Index` nodes; :func:`evaluate` walks it
with a function table and an evaluation context (see :mod:`.functions`). Every failure is a
:class:`~acrlocal.arm.templates.errors.TemplateError` whose message is ARM's wording for it; nothing else
escapes (the parser is property-tested with arbitrary text).

Grammar::

    expression := primary ( '.' name | '[' expression ']' )*
    primary    := name [ '.' name ] '(' [ expression ( ',' expression )* ] ')'   a function call
                | 'text'            a string ('' is a quote inside it)
                | -?digits          an integer
                | true | false | null
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from acrlocal.arm.templates.errors import TemplateError

MAX_EXPRESSION = 24_576
MAX_NESTING = 128


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any


@dataclass(frozen=True, slots=True)
class Call:
    name: str          # as written; looked up ignoring case
    args: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Member:
    target: Node
    name: str


@dataclass(frozen=True, slots=True)
class Index:
    target: Node
    index: Node


Node = Literal | Call | Member | Index

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<name>[A-Za-z_$][A-Za-z0-9_$]*)
  | (?P<number>-?\d+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<punct>[(),.\[\]])
""", re.VERBOSE)


def is_expression(value: Any) -> bool:
    """Whether a template string value is an expression (``[...]`` and not ``[[...``)."""
    return isinstance(value, str) and len(value) >= 2 and value[0] == "[" and value[-1] == "]" \
        and not value.startswith("[[")


def literal_text(value: str) -> str:
    """A template string that is not an expression, as its text: ``[[x]`` → ``[x]``."""
    if value.startswith("[[") and value.endswith("]"):
        return value[1:]
    return value


def invalid(expression: str, problem: str) -> TemplateError:
    return TemplateError(f"The template language expression '{expression[:500]}' is not valid: {problem}")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                if text[pos] == "'":
                    raise invalid(text, f"the string literal starting at position '{pos}' is not terminated")
                raise invalid(text, f"the string character '{text[pos]}' at position '{pos}' is not expected")
            kind = m.lastgroup or ""
            if kind != "space":
                self.tokens.append((kind, m.group(), pos))
            pos = m.end()
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "", len(self.text))

    def unexpected(self) -> TemplateError:
        kind, value, pos = self.peek()
        if kind == "end":
            return invalid(self.text, "the expression ends unexpectedly")
        return invalid(self.text, f"the string character '{value[:50]}' at position '{pos}' is not expected")

    def expect(self, value: str) -> None:
        if self.peek()[1] != value or self.peek()[0] not in ("punct",):
            raise self.unexpected()
        self.i += 1

    def expression(self) -> Node:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise invalid(self.text, f"it nests deeper than {MAX_NESTING} levels")
        node = self.primary()
        while True:
            kind, value, _ = self.peek()
            if kind == "punct" and value == ".":
                self.i += 1
                kind, value, _ = self.peek()
                if kind != "name":
                    raise self.unexpected()
                self.i += 1
                node = Member(node, value)
            elif kind == "punct" and value == "[":
                self.i += 1
                index = self.expression()
                self.expect("]")
                node = Index(node, index)
            else:
                self.depth -= 1
                return node

    def primary(self) -> Node:
        kind, value, _ = self.peek()
        if kind == "string":
            self.i += 1
            return Literal(value[1:-1].replace("''", "'"))
        if kind == "number":
            self.i += 1
            return Literal(int(value))
        if kind != "name":
            raise self.unexpected()
        self.i += 1
        name = value
        nxt = self.peek()
        if nxt[:2] == ("punct", ".") and self.i + 2 < len(self.tokens) and self.tokens[self.i + 1][0] == "name" \
                and self.tokens[self.i + 2][:2] == ("punct", "("):
            name = f"{name}.{self.tokens[self.i + 1][1]}"
            self.i += 2
            nxt = self.peek()
        if nxt[:2] != ("punct", "("):
            lowered = name.lower()
            if lowered in ("true", "false", "null"):
                return Literal({"true": True, "false": False, "null": None}[lowered])
            raise self.unexpected()
        self.i += 1
        args: list[Node] = []
        if self.peek()[:2] == ("punct", ")"):
            self.i += 1
            return Call(name, ())
        while True:
            args.append(self.expression())
            kind, value, _ = self.peek()
            if kind == "punct" and value == ",":
                self.i += 1
                continue
            if kind == "punct" and value == ")":
                self.i += 1
                return Call(name, tuple(args))
            raise self.unexpected()


_CACHE: dict[str, Node] = {}


def parse(expression: str) -> Node:
    """The tree of ``expression`` (the text between the brackets); :class:`TemplateError` if it does not parse."""
    cached = _CACHE.get(expression)
    if cached is not None:
        return cached
    if len(expression) > MAX_EXPRESSION:
        raise invalid(expression, f"it is longer than {MAX_EXPRESSION} characters")
    if not expression.strip():
        raise invalid(expression, "it is empty")
    parser = _Parser(expression)
    node = parser.expression()
    if parser.i != len(parser.tokens):
        raise parser.unexpected()
    if len(_CACHE) > 10_000:
        _CACHE.clear()
    _CACHE[expression] = node
    return node


def walk(node: Node) -> list[Call]:
    """Every function call in ``node``, outermost first."""
    found: list[Call] = []
    stack: list[Node] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, Call):
            found.append(n)
            stack.extend(reversed(n.args))
        elif isinstance(n, Member):
            stack.append(n.target)
        elif isinstance(n, Index):
            stack.extend((n.target, n.index))
    return found


def type_name(value: Any) -> str:
    """ARM's name for the type of a value, as its messages spell it."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Float"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, dict):
        return "Object"
    return type(value).__name__


def member(value: Any, name: str) -> Any:
    """``value.name`` as ARM reads it: object properties compared ignoring case."""
    if isinstance(value, dict):
        if name in value:
            return value[name]
        lowered = name.lower()
        for key, item in value.items():
            if key.lower() == lowered:
                return item
        available = ", ".join(list(value)[:20])
        raise TemplateError(f"The language expression property '{name}' doesn't exist, available properties are "
                            f"'{available}'.")
    raise TemplateError(f"The language expression property '{name}' can't be evaluated, property name must be "
                        f"a string or the target must be an object; the target is of type '{type_name(value)}'.")


def index(value: Any, key: Any) -> Any:
    """``value[key]``: an array by integer, an object by property name."""
    if isinstance(value, list):
        if isinstance(key, bool) or not isinstance(key, int):
            raise TemplateError(f"The language expression property array index '{key}' is not valid: an array is "
                                "indexed by an integer.")
        if not 0 <= key < len(value):
            raise TemplateError(f"The language expression property array index '{key}' is out of bounds.")
        return value[key]
    if isinstance(value, dict):
        if not isinstance(key, str):
            raise TemplateError(f"The language expression property '{key}' is not valid: an object is indexed by "
                                "a string.")
        return member(value, key)
    raise TemplateError(f"The language expression can't index a value of type '{type_name(value)}'.")


Evaluator = Callable[[Node], Any]
