"""``--query`` (JMESPath) and ``--output json|jsonc|tsv|table|yaml|none``, formatted as az formats them.

Pure: a Python value in, text out. :class:`QueryError` for a JMESPath expression that does not parse, so the
CLI can answer it as az does (a usage error, exit code 2).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import jmespath
import jmespath.exceptions
import yaml

from acrlocal.errors import AcrLocalError

FORMATS = ("json", "jsonc", "tsv", "table", "yaml", "yamlc", "none")


class QueryError(AcrLocalError, ValueError):
    """A ``--query`` that is not a JMESPath expression."""


def compile_query(expression: str) -> Any:
    try:
        return jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise QueryError(f"argument --query: invalid jmespath_type value: {expression!r}") from exc


def _apply_query(result: Any, expression: str | None) -> Any:
    if not expression:
        return result
    return compile_query(expression).search(result, jmespath.Options(dict_cls=OrderedDict))


def _json(result: Any) -> str:
    return json.dumps(result, ensure_ascii=False, indent=2, sort_keys=True, separators=(",", ": ")) + "\n"


def _jsonc(result: Any) -> str:
    try:
        from pygments import highlight
        from pygments.formatters import TerminalFormatter
        from pygments.lexers import JsonLexer
    except ImportError:  # pragma: no cover - pygments is optional
        return _json(result)
    return str(highlight(_json(result), JsonLexer(), TerminalFormatter()))


def _tsv_cell(value: Any) -> str:
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, dict):
        return ""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _tsv_row(value: Any) -> str:
    if isinstance(value, OrderedDict):
        cells = [_tsv_cell(v) for v in value.values()]
    elif isinstance(value, dict):
        cells = [_tsv_cell(v) for _, v in sorted(value.items())]
    elif isinstance(value, list):
        cells = [_tsv_cell(v) for v in value]
    else:
        cells = [_tsv_cell(value)]
    return "\t".join(cells) + "\n"


def _tsv(result: Any) -> str:
    if result is None:
        return ""
    rows = result if isinstance(result, list) else [result]
    return "".join(_tsv_row(r) for r in rows)


def _column_title(key: str) -> str:
    return key[:1].upper() + key[1:]


def _table(result: Any) -> str:
    if result is None:
        return ""
    rows = result if isinstance(result, list) else [result]
    if not rows:
        return ""
    if not all(isinstance(r, dict) for r in rows):
        rows = [{"Result": r} for r in rows]
    columns: list[str] = []
    for row in rows:
        for key, value in row.items():
            if not isinstance(value, (dict, list)) and key not in columns:
                columns.append(key)
    if not columns:
        return ""

    def cell(value: Any) -> str:
        return "" if value is None else str(value)

    table = [[cell(row.get(c)) for c in columns] for row in rows]
    titles = [_column_title(c) for c in columns]
    widths = [max(len(t), *(len(r[i]) for r in table)) for i, t in enumerate(titles)]
    lines = ["  ".join(t.ljust(w) for t, w in zip(titles, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(lines) + "\n"


def _yaml(result: Any) -> str:
    return str(yaml.safe_dump(_plain(result), default_flow_style=False, sort_keys=True, allow_unicode=True))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def render(result: Any, output: str = "json", query: str | None = None) -> str:
    """Text for ``result`` after ``query``, in ``output`` format (``""`` for ``none`` and for no result)."""
    if output not in FORMATS:
        raise ValueError(f"output format {output!r} is not one of {', '.join(FORMATS)}")
    result = _apply_query(result, query)
    if output == "none":
        return ""
    if result is None and output in ("json", "jsonc"):
        return ""
    return {
        "json": _json,
        "jsonc": _jsonc,
        "tsv": _tsv,
        "table": _table,
        "yaml": _yaml,
        "yamlc": _yaml,
    }[output](result)
