"""ARM deployment templates, pure: no HTTP, no storage.

- :mod:`.jsonc`: the request body as ARM reads it (comments, unquoted names), with positions;
- :mod:`.expressions`: the template language's parser;
- :mod:`.functions`: the template functions, and what they need from outside (:class:`Environment`);
- :mod:`.values`: evaluating template values (expressions, property copy loops);
- :mod:`.engine`: parameters, variables, resources, dependencies and outputs → a :class:`Plan`.

The deployment provider (:mod:`acrlocal.arm.deployments`) drives them; start reading at :func:`prepare`.
"""

from acrlocal.arm.templates.engine import Plan, PlannedResource, Target, prepare, template_hash
from acrlocal.arm.templates.errors import TemplateError
from acrlocal.arm.templates.functions import Deferred, Environment

__all__ = ["Deferred", "Environment", "Plan", "PlannedResource", "Target", "TemplateError", "prepare",
           "template_hash"]
