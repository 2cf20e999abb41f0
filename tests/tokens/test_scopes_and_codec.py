"""The pure parts of the token service: the Docker scope grammar and the token codec (against a real SQLite key
table and real RSA keys)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from acrlocal.registry.scopes import InvalidScope, ResourceScope, parse_resource_scope, parse_scopes
from acrlocal.registry.token_codec import InvalidRegistryToken, RegistryTokens
from acrlocal.registry.token_keys import TokenKeys
from acrlocal.storage.sql import DataVersion, open_engine


def test_scope_grammar() -> None:
    assert parse_resource_scope("repository:library/hello:pull,push") == ResourceScope(
        "repository", "library/hello", ("pull", "push"))
    # A name with a host:port prefix: the type ends at the first colon, the actions start after the last.
    assert parse_resource_scope("repository:localhost:5000/a/b:pull") == ResourceScope(
        "repository", "localhost:5000/a/b", ("pull",))
    assert parse_resource_scope("registry:catalog:*") == ResourceScope("registry", "catalog", ("*",))
    assert parse_resource_scope("repository(plugin):x:pull").type == "repository"
    assert parse_resource_scope("repository:x:metadata_read,pull,pull").actions == ("metadata_read", "pull")
    for bad in ("repository", "repository:x", "repository::pull", "Repository:x:pull", "repository:X:pull",
                "repository:x:PULL", "repository:x:", "repository:../x:pull", "repository:a//b:pull",
                "repository:x:pull;rm", "x" * 2000):
        with pytest.raises(InvalidScope):
            parse_resource_scope(bad)


def test_several_scope_parameters_merge_per_resource() -> None:
    scopes = parse_scopes(["repository:a:pull repository:b:push", "repository:a:push", "", "registry:catalog:*"])
    assert scopes == [ResourceScope("repository", "a", ("pull", "push")), ResourceScope("repository", "b", ("push",)),
                      ResourceScope("registry", "catalog", ("*",))]
    with pytest.raises(InvalidScope):
        parse_scopes([" ".join(f"repository:r{i}:pull" for i in range(40))])


def test_token_payloads_never_contain_base64url_only_characters(tmp_path: Path) -> None:
    signer = RegistryTokens(TokenKeys(open_engine(f"sqlite:///{tmp_path / 'db'}")))
    awkward = "svc>?~\x7f:443"
    for i in range(200):
        refresh = signer.issue_refresh(principal=f"p{i}?~>", tenant="t>>>", registry="r~", registry_uid="u",
                                       service=awkward).token
        payload = refresh.split(".")[1]
        assert "-" not in payload and "_" not in payload
        # What azure-containerregistry does: the standard alphabet.
        decoded = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))
        assert decoded["sub"] == f"p{i}?~>" and decoded["aud"] == awkward


def test_grant_types_audiences_and_rotation(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'db'}")
    signer = RegistryTokens(TokenKeys(engine))
    refresh = signer.issue_refresh(principal="p", tenant="t", registry="r", registry_uid="u",
                                   service="localhost:1").token
    access = signer.issue_access(kind="principal", subject="p", registry="r", registry_uid="u",
                                 service="localhost:1", access=[ResourceScope("repository", "a", ("pull",))],
                                 tenant="t").token
    assert signer.verify_refresh(refresh, {"localhost:1"}).principal == "p"
    grant = signer.verify_access(access, {"localhost:1", "127.0.0.1:1"})
    assert grant.allows("repository", "a", ["pull"]) and not grant.allows("repository", "a", ["push"])
    assert not grant.allows("repository", "b", ["pull"])
    with pytest.raises(InvalidRegistryToken):
        signer.verify_access(refresh, {"localhost:1"})
    with pytest.raises(InvalidRegistryToken):
        signer.verify_refresh(access, {"localhost:1"})
    with pytest.raises(InvalidRegistryToken):
        signer.verify_access(access, {"localhost:2"})
    old = signer.issue_access(kind="anonymous", subject=None, registry="r", registry_uid="u", service="localhost:1",
                              access=[], now=time.time() - 3 * 3600).token
    with pytest.raises(InvalidRegistryToken, match="expired"):
        signer.verify_access(old, {"localhost:1"})
    # After a rotation tokens signed with the previous key still verify; new ones use the new key.
    signer.keys.rotate()
    assert signer.verify_access(access, {"localhost:1"}).subject == "p"
    again = RegistryTokens(TokenKeys(engine))  # another process on the same database
    assert again.verify_access(access, {"localhost:1"}).subject == "p"


def test_data_version_changes_with_any_other_connections_commit(tmp_path: Path) -> None:
    import sqlite3

    engine = open_engine(f"sqlite:///{tmp_path / 'db'}")
    version = DataVersion(engine)
    before = version.current()
    assert version.current() == before
    TokenKeys(engine).active()  # a write through the engine's pool
    after = version.current()
    assert after != before
    other = sqlite3.connect(tmp_path / "db")  # another process's connection
    other.execute("UPDATE registry_token_keys SET created = created + 1")
    other.commit()
    other.close()
    assert version.current() != after
    version.close()
    assert DataVersion(open_engine(f"sqlite:///{tmp_path / 'db2'}")).current() is not None


def test_data_version_on_postgresql_moves_with_every_commit_and_survives_an_outage() -> None:
    """PostgreSQL's version is the current snapshot: another connection's commit moves it, a transaction still
    writing (rows in the write-ahead log, nothing committed) does not, nor does its rollback move it back; while the
    server is down it is None (nothing may be kept) and it comes back with the server."""
    import sqlalchemy as sa

    from tests.postgres import PostgresServer

    server = PostgresServer()
    try:
        server.start()
        engine = open_engine(server.create_database("version"))
        version = DataVersion(engine)
        before = version.current()
        assert before is not None
        assert version.current() == before  # reading moves nothing
        TokenKeys(engine).active()  # a write through the engine's pool
        after = version.current()
        assert after is not None and after != before
        other = sa.create_engine(engine.url, poolclass=sa.NullPool)  # another replica's connection
        with other.connect() as conn:
            conn.execute(sa.text("UPDATE registry_token_keys SET created = created + 1"))
            started = version.current()  # the writer has a transaction id now: a new transaction is running
            assert started is not None
            for _ in range(50):  # a long write under way
                conn.execute(sa.text("UPDATE registry_token_keys SET created = created + 1"))
            assert version.current() == started
            conn.commit()
        other.dispose()
        moved = version.current()
        assert moved is not None and moved not in (after, started)
        server.stop_server()
        assert version.current() is None
        server.start_server()
        assert version.current() is not None
        version.close()
        engine.dispose()
    finally:
        server.stop()


def test_a_request_uses_the_data_version_its_first_round_trip_read(tmp_path: Path) -> None:
    """On PostgreSQL's replicas a request's first round trip reads the version; within the task serving the request
    the version answers that without a read of its own, and a task the request starts (which may outlive it) reads
    its own."""
    import asyncio

    from acrlocal.storage.sql import request_version, serving_version

    engine = open_engine(f"sqlite:///{tmp_path / 'db'}")
    version = DataVersion(engine)
    real = version.current()
    assert real is not None

    async def serve() -> tuple[int | None, int | None]:
        token = serving_version(real + 1000)
        try:
            inside = version.current()
            spawned = await asyncio.create_task(_read(version))
            return inside, spawned
        finally:
            request_version.reset(token)

    async def _read(v: DataVersion) -> int | None:
        return v.current()

    inside, spawned = asyncio.run(serve())
    assert inside == real + 1000
    assert spawned == real
    assert version.current() == real
    version.close()
