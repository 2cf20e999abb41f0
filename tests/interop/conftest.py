"""Real clients share the data-plane tests' fixtures (a registry client, a storage probe, a fresh repository)."""

from tests.registry.conftest import registry, repo, storage  # noqa: F401
