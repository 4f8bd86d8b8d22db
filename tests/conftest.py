"""Shared fixtures: a real OPA for the whole session, loaded with the repository's policies.

Tests talk to a real ``opa`` binary (built by scripts/install-opa.sh); nothing here fakes
OPA. A test that needs OPA dead starts its own ManagedOpa and kills it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import yaml

from jovial_guard.policy.client import OpaConnection, OpaEndpoint
from jovial_guard.policy.engine import PolicyEngine
from jovial_guard.policy.opa_process import DEFAULT_POLICY_DIR, ManagedOpa

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
VECTORS = REPO / "tests" / "vectors"


def load_documents(path: Path) -> list[Any]:
    """All YAML/JSON documents of a fixture file."""
    text = path.read_text()
    if path.suffix == ".json":
        return [json.loads(text)]
    return [d for d in yaml.safe_load_all(text) if d is not None]


@pytest.fixture(scope="session")
def opa() -> Iterator[ManagedOpa]:
    with ManagedOpa(DEFAULT_POLICY_DIR) as server:
        yield server


@pytest.fixture(scope="session")
async def opa_connection(opa: ManagedOpa) -> AsyncIterator[OpaConnection]:
    async with OpaConnection(OpaEndpoint(opa.url), timeout=5.0) as conn:
        yield conn


@pytest.fixture(scope="session")
def engine(opa_connection: OpaConnection) -> PolicyEngine:
    return PolicyEngine(opa_connection, deadline=5.0)
