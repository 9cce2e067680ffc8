"""Shared fixtures: one local ECS API for the whole session, emptied for each test that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ecs_cluster_manager.localecs import LocalECS


@pytest.fixture(scope="session")
def local_ecs() -> Iterator[LocalECS]:
    """A started LocalECS shared by the session."""
    with LocalECS() as local:
        yield local


@pytest.fixture
def ecs(local_ecs: LocalECS) -> Iterator[LocalECS]:
    """The shared LocalECS with no moto state, no recorded calls and no fault hook."""
    local_ecs.reset()
    yield local_ecs
