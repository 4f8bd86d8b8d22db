"""Every deliberate error is one of four kinds, each with one HTTP status and one exit code."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import jovial_guard
from jovial_guard.errors import (
    Denied,
    JovialGuardError,
    MalformedDecision,
    MalformedInput,
    Misconfigured,
    PolicyDenied,
    PolicyEngineUnavailable,
    Unavailable,
)

KINDS = (MalformedInput, Denied, Unavailable, Misconfigured)

#: Bases and control-flow signals that are deliberately not a kind of failure.
NOT_A_KIND = {
    "jovial_guard.errors.JovialGuardError",
    "jovial_guard.credentials.errors.CredentialError",
    "jovial_guard.audit.responses.ActionSkipped",
}


@pytest.mark.parametrize(("kind", "status", "code"), [
    (MalformedInput, 400, 2), (Denied, 403, 1), (Unavailable, 503, 2), (Misconfigured, 503, 2),
])
def test_kinds_map_to_one_status_and_exit_code(kind: type[JovialGuardError], status: int, code: int) -> None:
    assert (kind.http_status, kind.exit_code) == (status, code)


def test_misconfiguration_is_the_operators_not_the_users() -> None:
    assert Misconfigured.http_status == 503 != Denied.http_status


def test_policy_errors_keep_their_meaning() -> None:
    assert issubclass(PolicyDenied, Denied)
    assert issubclass(PolicyEngineUnavailable, Unavailable)
    assert issubclass(MalformedDecision, PolicyEngineUnavailable)
    assert MalformedInput("not a pod", where="doc 2").args == ("doc 2: not a pod",)


def _package_errors() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(jovial_guard.__path__, "jovial_guard."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, JovialGuardError)
                    and obj.__module__ == info.name):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def test_every_error_is_exactly_one_kind() -> None:
    wrong = []
    for cls in _package_errors():
        name = f"{cls.__module__}.{cls.__qualname__}"
        kinds = [k.__name__ for k in KINDS if issubclass(cls, k)]
        if name in NOT_A_KIND:
            continue
        if len(kinds) != 1 and cls.__module__.split(".")[1] not in ("spawn", "admission") \
                and cls.__module__ != "jovial_guard.hardening.egress":
            wrong.append(f"{name}: {kinds or 'no kind'}")
    assert not wrong, "errors without exactly one kind:\n" + "\n".join(wrong)
