"""``admin rotate-signing-keys``: a new signing key for the server's tokens, through the running server (ARM's
``POST /subscriptions/{sub}/providers/Microsoft.AcrLocal/rotateSigningKeys``), so that it signs with the new key
at once; the old one stays published until its tokens expire. acrlocal's own: az has no such command."""

from __future__ import annotations

from typing import Any

import click

from acrlocal.cli.framework import AzGroup
from acrlocal.cli.session import Session

API_VERSION = "2025-01-01"


@click.group("admin", cls=AzGroup)
def admin() -> None:
    """Administer the acrlocal server itself."""


@admin.command("rotate-signing-keys")
def rotate_signing_keys() -> Any:
    """Make new signing keys for the tenant's Entra tokens (and, in the server's default tenant, for the
    registries' tokens); tokens already issued keep verifying until they expire."""
    session = Session()
    return session.arm.post(f"/subscriptions/{session.subscription_id}/providers/Microsoft.AcrLocal/"
                            "rotateSigningKeys", API_VERSION)
