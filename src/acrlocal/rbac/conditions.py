"""Role assignment conditions (Azure ABAC, condition version 2.0), the subset ACR repository permissions use.

A condition narrows what its role assignment grants. The shape Azure writes for ACR is::

    ((!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/read'}))
     OR (@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'team1/'))

which reads: for any operation other than content/read the assignment applies unchanged; for content/read it
applies only when the repository name starts with ``team1/``.

Supported: ``ActionMatches{'pattern'}`` (the same wildcard matching as role permissions); the attribute
``@Request[Microsoft.ContainerRegistry/registries/repositories:name]`` compared with a single quoted string by
``StringEquals``, ``StringEqualsIgnoreCase``, ``StringStartsWith``, ``StringStartsWithIgnoreCase``, ``StringLike``,
``StringLikeIgnoreCase`` and their ``Not`` forms; ``AND``/``&&``, ``OR``/``||``, ``NOT``/``!``; parentheses.
As in Azure, ``AND`` and ``OR`` may not be mixed at one level without parentheses.

Error handling: anything else (another attribute or function, value sets, ``ForAnyOfAnyValues``, a version other
than 2.0, unbalanced parentheses, more than :data:`MAX_CONDITION_LENGTH` characters) raises
:class:`~acrlocal.rbac.errors.InvalidCondition`, and the evaluator then lets the assignment grant nothing. A
comparison whose attribute the request does not carry (no repository, e.g. a catalog listing) is false, whatever
the operator.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

from acrlocal.rbac.actions import action_matches
from acrlocal.rbac.errors import InvalidCondition

MAX_CONDITION_LENGTH = 8192
MAX_DEPTH = 32
SUPPORTED_VERSIONS = frozenset({"2.0"})
REPOSITORY_NAME_ATTRIBUTE = "Microsoft.ContainerRegistry/registries/repositories:name"

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'[^']*')
      | (?P<attribute>@(?P<source>[A-Za-z]+)\[(?P<name>[^\]]*)\])
      | (?P<op>&&|\|\||[!(){}])
      | (?P<word>[A-Za-z][A-Za-z0-9:]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"AND": "&&", "OR": "||", "NOT": "!"}


# --- the syntax tree ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _ActionMatches:
    pattern: str


@dataclass(frozen=True, slots=True)
class _Compare:
    attribute: str
    test: Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node


@dataclass(frozen=True, slots=True)
class _All:
    operands: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Any:
    operands: tuple[_Node, ...]


_Node: TypeAlias = _ActionMatches | _Compare | _Not | _All | _Any


# --- string operators -----------------------------------------------------------------------------------------------
def _like(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """``*`` any run, ``?`` one character, ``\\*`` and ``\\?`` the characters themselves."""
    parts: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\" and index + 1 < len(pattern) and pattern[index + 1] in "*?":
            parts.append(re.escape(pattern[index + 1]))
            index += 2
            continue
        parts.append(".*" if char == "*" else "." if char == "?" else re.escape(char))
        index += 1
    return re.compile("".join(parts), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


def _string_test(operator: str, value: str) -> Callable[[str], bool] | None:
    base, negate = operator, False
    if base.startswith("stringnot"):
        base, negate = "string" + base[len("stringnot") :], True
    ignore_case = base.endswith("ignorecase")
    if ignore_case:
        base = base[: -len("ignorecase")]
    folded = value.casefold() if ignore_case else value

    def norm(text: str) -> str:
        return text.casefold() if ignore_case else text

    test: Callable[[str], bool]
    if base == "stringequals":
        test = lambda text: norm(text) == folded  # noqa: E731
    elif base == "stringstartswith":
        test = lambda text: norm(text).startswith(folded)  # noqa: E731
    elif base == "stringlike":
        compiled = _like(value, ignore_case)
        test = lambda text: compiled.fullmatch(text) is not None  # noqa: E731
    else:
        return None
    return (lambda text: not test(text)) if negate else test


# --- parsing --------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Token:
    kind: str  # "string", "attribute", "op", "word", "end"
    text: str
    source: str = ""
    name: str = ""


def _tokens(text: str) -> Iterator[_Token]:
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            yield _Token("end", "")
            return
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            snippet = text[position : position + 20]
            raise InvalidCondition(f"condition has an unexpected character at offset {position}: {snippet!r}")
        position = match.end()
        if match.group("attribute"):
            yield _Token("attribute", match.group("attribute"), match.group("source"), match.group("name"))
        elif match.group("string") is not None:
            yield _Token("string", match.group("string")[1:-1])
        elif match.group("op"):
            yield _Token("op", match.group("op"))
        else:
            word = match.group("word")
            keyword = _KEYWORDS.get(word.upper())
            yield _Token("op", keyword) if keyword else _Token("word", word)


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = list(_tokens(text))
        self.index = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def expect(self, kind: str, text: str | None = None) -> _Token:
        token = self.take()
        if token.kind != kind or (text is not None and token.text != text):
            wanted = text or kind
            raise InvalidCondition(f"condition expected {wanted!r} but found {token.text or 'the end'!r}")
        return token

    def parse(self) -> _Node:
        node = self.expression()
        if self.peek().kind != "end":
            raise InvalidCondition(f"condition has unexpected {self.peek().text!r} after a complete expression")
        return node

    def expression(self) -> _Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise InvalidCondition(f"condition nests deeper than {MAX_DEPTH} levels")
        operands = [self.unary()]
        joiner: str | None = None
        while self.peek().kind == "op" and self.peek().text in ("&&", "||"):
            op = self.take().text
            if joiner is not None and op != joiner:
                raise InvalidCondition("condition mixes AND and OR at one level; add parentheses to set the order")
            joiner = op
            operands.append(self.unary())
        self.depth -= 1
        if joiner is None:
            return operands[0]
        return _All(tuple(operands)) if joiner == "&&" else _Any(tuple(operands))

    def unary(self) -> _Node:
        token = self.peek()
        if token.kind == "op" and token.text == "!":
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise InvalidCondition(f"condition nests deeper than {MAX_DEPTH} levels")
            operand = self.unary()
            self.depth -= 1
            return _Not(operand)
        if token.kind == "op" and token.text == "(":
            self.take()
            node = self.expression()
            self.expect("op", ")")
            return node
        if token.kind == "word":
            return self.action_matches()
        if token.kind == "attribute":
            return self.comparison()
        raise InvalidCondition(f"condition expected an expression but found {token.text or 'the end'!r}")

    def action_matches(self) -> _Node:
        word = self.take()
        if word.text.lower() != "actionmatches":
            raise InvalidCondition(f"condition function {word.text!r} is not supported (only ActionMatches)")
        self.expect("op", "{")
        pattern = self.expect("string").text
        self.expect("op", "}")
        if not pattern:
            raise InvalidCondition("condition has an empty ActionMatches pattern")
        return _ActionMatches(pattern)

    def comparison(self) -> _Node:
        attribute = self.take()
        if attribute.source.lower() != "request" or attribute.name.lower() != REPOSITORY_NAME_ATTRIBUTE.lower():
            raise InvalidCondition(
                f"condition attribute {attribute.text!r} is not supported "
                f"(only @Request[{REPOSITORY_NAME_ATTRIBUTE}])"
            )
        operator = self.expect("word")
        value = self.take()
        if value.kind != "string":
            raise InvalidCondition(
                f"condition operator {operator.text!r} must be followed by one quoted string, found {value.text!r}"
            )
        test = _string_test(operator.text.lower(), value.text)
        if test is None:
            raise InvalidCondition(f"condition operator {operator.text!r} is not supported")
        return _Compare(REPOSITORY_NAME_ATTRIBUTE, test)


# --- evaluation -----------------------------------------------------------------------------------------------------
def _evaluate(node: _Node, operation: str, repository: str | None) -> bool:
    if isinstance(node, _ActionMatches):
        return action_matches(node.pattern, operation)
    if isinstance(node, _Compare):
        return repository is not None and node.test(repository)
    if isinstance(node, _Not):
        return not _evaluate(node.operand, operation, repository)
    if isinstance(node, _All):
        return all(_evaluate(operand, operation, repository) for operand in node.operands)
    return any(_evaluate(operand, operation, repository) for operand in node.operands)


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition; :meth:`applies` says whether it lets its assignment grant one operation."""

    text: str
    root: _Node

    def applies(self, operation: str, *, repository: str | None = None) -> bool:
        """True if the condition holds for ``operation`` on ``repository`` (``None``: the request names none)."""
        return _evaluate(self.root, operation, repository)


@lru_cache(maxsize=1024)
def _parse(text: str) -> Condition:
    return Condition(text, _Parser(text).parse())


def parse_condition(text: str, version: str | None = None) -> Condition:
    """Parse a role assignment condition; ``version`` ``None`` means 2.0, as ARM defaults it.

    Raises :class:`~acrlocal.rbac.errors.InvalidCondition` for anything outside the supported subset.
    """
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise InvalidCondition(f"condition version {version!r} is not supported (expected '2.0')")
    if not isinstance(text, str) or not text.strip():
        raise InvalidCondition("condition is empty")
    if len(text) > MAX_CONDITION_LENGTH:
        raise InvalidCondition(f"condition is longer than {MAX_CONDITION_LENGTH} characters")
    return _parse(text)
