"""acrlocal: a self-hosted slice of Azure (Entra ID, RBAC, ARM, Container Registry) that runs for real on loopback.

The public API is small: :class:`Settings` describes a server, :func:`acrlocal.server.run` runs one, and every
error the package raises on purpose derives from :class:`AcrLocalError` (see :mod:`acrlocal.errors`).
"""

from acrlocal.config import Settings
from acrlocal.errors import AcrLocalError

__all__ = ["AcrLocalError", "Settings", "__version__"]
__version__ = "0.1.0"
