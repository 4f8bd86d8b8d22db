"""Talking to OPA through opa-python-client, with its rough edges filed off in one place.

opa-python-client 3.0 is the client the project uses, but as shipped it:

* surfaces OPA's non-JSON error bodies (proxies, 502 pages) as JSON decode errors;
* has no CA-bundle parameter (``ssl=True`` only trusts the system store);
* retries on connection errors by default, which would blow the decision deadline;
* returns ``{}`` for an undefined decision, which a careless caller could read as "no reasons".

:class:`OpaConnection` wraps the async client so every failure is a
:class:`~jovial_guard.errors.PolicyEngineUnavailable` with a readable message, an undefined
result is an error (never an empty allow), and TLS to an external OPA can pin a CA.

Decisions (the hot path: every admission request, every spawn, every checked document) go
through :meth:`OpaConnection.query_encoded` on the client's own keep-alive session: the
input is serialized once by the caller (the same bytes that key the decision cache), OPA is
asked not to gzip its answer (on loopback compressing costs more than it saves), and the
answer is parsed with orjson.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from opa_client.errors import PolicyNotFoundError
from opa_client.opa_async import AsyncOpaClient

from ..errors import PolicyEngineUnavailable

#: Headers of a decision query: a JSON body, an uncompressed answer.
_QUERY_HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "identity"}


class UndefinedResult(PolicyEngineUnavailable):
    """OPA answered, but the asked rule is undefined (a policy without it, or no value)."""


def encode_input(input_doc: dict[str, Any]) -> bytes:
    """The canonical JSON of an OPA input document (sorted keys, UTF-8): what a decision
    query sends and what the decision cache hashes. Standard-library fallback for what
    orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(input_doc, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(input_doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def query_body(input_json: bytes) -> bytes:
    """The body of ``POST /v1/data/...`` around an already encoded input."""
    return b'{"input":' + input_json + b"}"


class NoSuchData(PolicyEngineUnavailable):
    """OPA answered, but the data document asked for is undefined (not loaded)."""


@dataclass(frozen=True)
class OpaEndpoint:
    """Where OPA is and how to authenticate: ``url`` plus optional bearer token and CA file."""

    url: str
    token: str | None = None
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def parts(self) -> tuple[str, int, bool]:
        split = urlsplit(self.url)
        if split.scheme not in ("http", "https") or not split.hostname:
            raise PolicyEngineUnavailable(
                f"OPA url {self.url!r} must look like http://127.0.0.1:8181 or https://opa:8181"
            )
        https = split.scheme == "https"
        return split.hostname, split.port or (443 if https else 80), https


class _CaAwareAsyncClient(AsyncOpaClient):  # type: ignore[misc]
    """AsyncOpaClient whose TLS context can trust a private CA (the library cannot)."""

    def __init__(self, *args: Any, ca_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ca_file = ca_file

    async def _init_session(self) -> None:
        ssl_context: ssl.SSLContext | None = None
        if self.ssl:
            ssl_context = ssl.create_default_context(cafile=self._ca_file)
            if self.cert:
                if isinstance(self.cert, tuple):
                    ssl_context.load_cert_chain(*self.cert)
                else:
                    ssl_context.load_cert_chain(self.cert)
        # Many concurrent decisions share one keep-alive pool.
        self._connector = aiohttp.TCPConnector(ssl=ssl_context if ssl_context else False, limit=256)
        self._session = aiohttp.ClientSession(
            headers=self.headers,
            connector=self._connector,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )


class OpaConnection:
    """An open connection to one OPA; use ``async with OpaConnection(endpoint) as opa``."""

    def __init__(self, endpoint: OpaEndpoint, *, timeout: float = 2.0) -> None:
        host, port, https = endpoint.parts()
        cert: Any = None
        if endpoint.client_cert:
            cert = (endpoint.client_cert, endpoint.client_key) if endpoint.client_key else endpoint.client_cert
        self.endpoint = endpoint
        self._client = _CaAwareAsyncClient(
            host=host,
            port=port,
            ssl=https,
            cert=cert,
            token=endpoint.token,
            retries=0,
            timeout=timeout,
            ca_file=endpoint.ca_file,
        )
        self._open = False

    async def __aenter__(self) -> OpaConnection:
        await self._client._init_session()
        self._open = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._open:
            await self._client.close_connection()
            self._open = False

    async def query(self, package_path: str, rule: str, input_doc: dict[str, Any]) -> Any:
        """Evaluate ``data.<package_path>.<rule>``; undefined or any failure raises."""
        return await self.query_encoded(package_path, rule, encode_input(input_doc))

    async def query_encoded(self, package_path: str, rule: str, input_json: bytes) -> Any:
        """:meth:`query` with the input already serialized (see :func:`encode_input`)."""
        session = self._client._session
        if session is None:
            raise PolicyEngineUnavailable("the OPA connection is closed (use `async with OpaConnection(...)`)")
        url = f"{self._client.root_url}/data/{package_path.replace('.', '/')}/{rule}"
        try:
            async with session.post(url, data=query_body(input_json), headers=_QUERY_HEADERS) as response:
                payload = await response.read()
                if response.status != 200:
                    raise PolicyEngineUnavailable(f"OPA answered HTTP {response.status}: {response.reason}")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise PolicyEngineUnavailable(
                f"OPA at {self.endpoint.url} is unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            answer = orjson.loads(payload)
        except orjson.JSONDecodeError:
            # orjson refuses a few valid documents (integers beyond 64 bits); the standard
            # parser decides those, so the answer never depends on the parser.
            try:
                answer = json.loads(payload)
            except (ValueError, RecursionError) as exc:
                raise PolicyEngineUnavailable(f"OPA answered with a non-JSON body: {str(exc)[:200]}") from exc
        if not isinstance(answer, dict) or "result" not in answer:
            raise UndefinedResult(
                f"OPA returned no result for data.{package_path}.{rule} (undefined: is the "
                "policy loaded?)"
            )
        return answer["result"]

    async def get_data(self, path: str) -> Any:
        """Read a data document (``jovial_guard_meta/revision``); undefined raises."""
        try:
            answer = await self._client.get_data(path)
        except PolicyNotFoundError:
            raise NoSuchData(f"OPA has no data at {path}") from None
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise PolicyEngineUnavailable(f"OPA data read failed: {exc}") from exc
        if not isinstance(answer, dict) or "result" not in answer:
            raise NoSuchData(f"OPA has no data at {path}")
        return answer["result"]

    async def healthy(self) -> bool:
        try:
            return bool(await self._client.check_health())
        except Exception:  # noqa: BLE001 - health is a yes/no question
            return False
