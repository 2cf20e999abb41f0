"""The exception tree drawn in ``acrlocal.errors`` is the real one: every exception class the package defines
derives from ``AcrLocalError`` (or, a signal rather than an error, from ``BaseException`` only), appears in the
drawing, and derives from the builtin the drawing names for it."""

from __future__ import annotations

import builtins
import importlib
import inspect
import pkgutil
import re

import acrlocal
from acrlocal import errors
from acrlocal.errors import AcrLocalError


def defined_exceptions() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(acrlocal.__path__, "acrlocal."):
        if info.name.startswith("acrlocal.storage.migrations."):
            continue  # Alembic's scripts: they run inside a migration, not on import
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def drawn_name(cls: type) -> str:
    """How the drawing names a class: by name in ``acrlocal.errors``, else by its module path under acrlocal."""
    if cls.__module__ == "acrlocal.errors":
        return cls.__qualname__
    return f"{cls.__module__.removeprefix('acrlocal.')}.{cls.__qualname__}"


def test_every_exception_is_drawn_and_derives_as_drawn() -> None:
    assert errors.__doc__
    drawing = errors.__doc__
    classes = defined_exceptions()
    assert len(classes) > 20  # the walk found the package's modules
    for cls in classes:
        name = drawn_name(cls)
        signal = not issubclass(cls, Exception)  # drawn apart, as a BaseException
        assert issubclass(cls, AcrLocalError) or signal, f"{name} does not derive AcrLocalError"
        match = re.search(rf"(?:── |^    ){re.escape(name)}(?:\((\w+)\))?\s", drawing, re.MULTILINE)
        assert match, f"{name} is not in the exception tree of acrlocal.errors"
        assert not signal or match.group(1) == "BaseException", f"{name} is a signal not drawn as a BaseException"
        if match.group(1):  # a builtin, or a class of acrlocal.errors
            base = getattr(builtins, match.group(1), None) or getattr(errors, match.group(1))
            assert issubclass(cls, base), f"{name} is drawn as a {match.group(1)} but is not one"
