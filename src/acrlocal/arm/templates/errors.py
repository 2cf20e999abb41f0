"""The template engine's one exception: what ARM answers as ``InvalidTemplate`` (or the code given)."""

from __future__ import annotations

from acrlocal.errors import AcrLocalError


class TemplateError(AcrLocalError, ValueError):
    """A template, its parameters or the request that carries them cannot be used.

    ``code`` is ARM's error code (``InvalidTemplate``, ``InvalidRequestContent``, ...); ``line`` and ``column``
    (1-based) locate the template object at fault when it is known. ``message`` is the sentence ARM would put
    in its error, without the location prefix, which :meth:`arm_message` adds.
    """

    def __init__(self, message: str, *, code: str = "InvalidTemplate", line: int | None = None,
                 column: int | None = None, target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.line = line
        self.column = column
        self.target = target

    def located(self, what: str, line: int | None, column: int | None) -> TemplateError:
        """This error as raised by ``what`` (``resource 'vm1'``, ``output 'id'``...) at that place, unless it
        already names a place."""
        if self.target is not None:
            return self
        return TemplateError(self.message, code=self.code, line=line, column=column, target=what)

    def arm_message(self) -> str:
        """ARM's sentence: ``Deployment template validation failed: 'The template resource 'x' at line '3' and
        column '5' is not valid: <message>. ...'``."""
        if self.code != "InvalidTemplate" or self.target == "":  # (target "": the message is ARM's whole sentence)
            return self.message
        if self.target is None:
            return f"Deployment template validation failed: '{self.message}'."
        where = f" at line '{self.line}' and column '{self.column}'" if self.line is not None else ""
        return (f"Deployment template validation failed: 'The template {self.target}{where} is not valid: "
                f"{self.message}. Please see https://aka.ms/arm-syntax for usage details.'.")
