"""OPA's compiled policy (``policy.wasm``) evaluated in this process with wasmtime.

Why: a decision asked of an OPA server costs an HTTP round trip, JSON in and out on both
sides and OPA's tree-walking evaluation; the same Rego compiled by ``opa build -t wasm``
answers in process for a fraction of that. The module is OPA's own compilation of the
policy: nothing here interprets Rego. This module speaks OPA's Wasm ABI (1.x: ``opa_eval``
with the input's JSON, the result as JSON) and answers the module's built-in calls from
:mod:`.wasm_builtins`.

Failure is loud: a trap (including running out of the memory cap or past the deadline), an
``opa_abort``, a built-in the host lacks, or a result that is not OPA's result set raises
:class:`WasmEvalError`; after any of them the instance is rebuilt before the next
evaluation, so a half-written heap is never reused.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Any

import orjson
import wasmtime

from .wasm_builtins import BUILTINS, BuiltinUndefined, Num, parse_args
from .wasm_ffi import HostFunctions, I32Function

PAGE = 65536
#: Memory cap of one instance: an input or evaluation needing more traps (fail closed).
MAX_PAGES = 4096  # 256 MiB
#: Built-in results up to this size are parsed from a fixed buffer (no allocation).
SCRATCH_BYTES = 64 * 1024
#: Remembered built-in results per instance (cleared whole when full).
MEMO_ENTRIES = 8192
#: Only calls whose arguments and result are this small are remembered (bounds the memo's
#: memory: a short amount such as "1e999999" has a result of a million digits).
MEMO_MAX_BYTES = 4096
#: Built-ins whose result depends only on their arguments (time.now_ns does not).
PURE_BUILTINS = frozenset({"sprintf", "units.parse", "units.parse_bytes", "time.parse_rfc3339_ns"})
#: The epoch ticker's period; deadlines are counted in these ticks.
TICK_SECONDS = 0.05

_libc = ctypes.CDLL(None)
_libc.strnlen.restype = ctypes.c_size_t
_libc.strnlen.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class WasmEvalError(Exception):
    """The compiled policy could not give a result (trap, abort, missing built-in...)."""


class _Ticker:
    """One daemon thread per engine advancing wasmtime's epoch: how a deadline interrupts
    an evaluation that runs too long (the trap fails closed like any other)."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._thread = threading.Thread(target=self._run, name="wasm-epoch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            self._engine.increment_epoch()


_ENGINE: tuple[int, wasmtime.Engine] | None = None


def shared_engine() -> wasmtime.Engine:
    """One wasmtime engine (compiler, epoch ticker) per process; a forked worker makes its
    own, since its parent's ticker thread did not survive the fork."""
    global _ENGINE
    if _ENGINE is None or _ENGINE[0] != os.getpid():
        config = wasmtime.Config()
        config.epoch_interruption = True
        config.cranelift_opt_level = "speed"
        engine = wasmtime.Engine(config)
        _Ticker(engine)
        _ENGINE = (os.getpid(), engine)
    return _ENGINE[1]


class CompiledPolicy:
    """A compiled module with its data document, ready to evaluate entry points."""

    def __init__(self, wasm: bytes, data_json: bytes, *, deadline: float = 2.0) -> None:
        self.engine = shared_engine()
        try:
            self.module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise WasmEvalError(f"policy.wasm is not a valid module: {str(exc)[:200]}") from exc
        self.data_json = data_json
        self.min_pages = max([i.type.limits.min for i in self.module.imports
                              if isinstance(i.type, wasmtime.MemoryType)] or [2])
        self.deadline_ticks = max(1, int(deadline / TICK_SECONDS) + 1)
        self._instance: _Instance | None = None
        first = self._fresh()
        self.entrypoints: dict[str, int] = first.entrypoints
        self.builtins: dict[int, str] = first.builtin_names
        missing = sorted(set(self.builtins.values()) - set(BUILTINS))
        if missing:
            raise WasmEvalError(f"policy.wasm needs built-ins this host lacks: {', '.join(missing)}")

    def _fresh(self) -> _Instance:
        self._instance = _Instance(self)
        return self._instance

    def evaluate(self, entrypoint: str, input_json: bytes) -> Any:
        """The entry point's value for this input; ``UNDEFINED`` when it has none."""
        number = self.entrypoints.get(entrypoint)
        if number is None:
            raise WasmEvalError(f"policy.wasm has no entry point {entrypoint}")
        instance = self._instance or self._fresh()
        try:
            raw = instance.evaluate(number, input_json, self.deadline_ticks)
        except BaseException:
            self._instance = None  # never reuse a heap an aborted evaluation left behind
            raise
        try:
            results = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise WasmEvalError(f"policy.wasm gave a non-JSON result: {exc}") from exc
        if not isinstance(results, list) or len(results) > 1:
            raise WasmEvalError("policy.wasm gave a malformed result set")
        if not results:
            return UNDEFINED
        if not isinstance(results[0], dict) or "result" not in results[0]:
            raise WasmEvalError("policy.wasm gave a malformed result set")
        return results[0]["result"]


#: The value of an undefined entry point.
UNDEFINED: Any = object()


class _Instance:
    """One instantiated module with its data loaded; evaluations reset its heap."""

    def __init__(self, policy: CompiledPolicy) -> None:
        self.store = wasmtime.Store(policy.engine)
        self.store.set_epoch_deadline(1 << 40)
        self.memory = wasmtime.Memory(self.store, wasmtime.MemoryType(wasmtime.Limits(policy.min_pages, MAX_PAGES)))
        self._memory_view: tuple[int, int] = (-1, 0)
        #: Results of pure built-in calls by their arguments' JSON: policies ask the same
        #: question for every container and every workload (the same message, the same amount).
        self._memo: dict[tuple[bytes, ...], bytes | None] = {}
        self.scratch = 0
        linker = wasmtime.Linker(policy.engine)
        linker.define(self.store, "env", "memory", self.memory)
        self.host = HostFunctions(self.store)
        self.host.define(linker, "env", "opa_abort", 1, 0, self._abort)
        for arity in range(5):
            self.host.define(linker, "env", f"opa_builtin{arity}", arity + 2, 1, self._builtin)
        try:
            self.instance = linker.instantiate(self.store, policy.module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise WasmEvalError(f"policy.wasm cannot be instantiated: {str(exc)[:200]}") from exc
        exports = self.instance.exports(self.store)
        self._fn: dict[str, I32Function] = {}
        for name in ("opa_eval", "opa_malloc", "opa_json_parse", "opa_json_dump", "opa_heap_ptr_get",
                     "builtins", "entrypoints"):
            function = exports.get(name)
            if not isinstance(function, wasmtime.Func):
                raise WasmEvalError(f"policy.wasm lacks {name} (not an OPA Wasm module of ABI 1.2+)")
            try:
                self._fn[name] = I32Function(self.store, function, name)
            except TypeError as exc:
                raise WasmEvalError(f"policy.wasm: {exc}") from exc
        self.entrypoints = {str(k): int(v) for k, v in self._dump(self._call("entrypoints")).items()}
        self.builtin_names = {int(v): str(k) for k, v in self._dump(self._call("builtins")).items()}
        self.data_addr = self._parse(policy.data_json)
        # Below heap_base nothing is ever freed: the data, and a buffer built-in results are
        # written to before the module parses them into values.
        self.scratch = int(self._call("opa_malloc", SCRATCH_BYTES))
        self.heap_base = int(self._call("opa_heap_ptr_get"))

    # -- memory helpers ------------------------------------------------------------------
    def _call(self, name: str, *args: int) -> int:
        return self._fn[name](*args)

    def _view(self) -> tuple[int, int]:
        """(size, host address) of the module's memory; the address is looked up again only
        when the memory has grown (the only time it may move)."""
        size = self.memory.data_len(self.store)
        if size != self._memory_view[0]:
            self._memory_view = (size, ctypes.addressof(self.memory.data_ptr(self.store).contents))
        return self._memory_view

    def _read_cstring(self, addr: int) -> bytes:
        size, base = self._view()
        if not 0 < addr < size:
            raise WasmEvalError("policy.wasm returned an address outside its memory")
        length = _libc.strnlen(base + addr, size - addr)
        if addr + length >= size:
            raise WasmEvalError("policy.wasm returned an unterminated string")
        return ctypes.string_at(base + addr, length)

    def _ensure(self, end: int) -> None:
        size = self.memory.data_len(self.store)
        if end > size:
            pages = (end - size + PAGE - 1) // PAGE
            try:
                self.memory.grow(self.store, pages)
            except wasmtime.WasmtimeError as exc:
                raise WasmEvalError("the input does not fit in the policy's memory cap") from exc

    def _write(self, addr: int, data: bytes) -> None:
        self._ensure(addr + len(data))
        ctypes.memmove(self._view()[1] + addr, data, len(data))

    def _parse(self, data: bytes) -> int:
        fits = self.scratch and len(data) <= SCRATCH_BYTES
        addr = self.scratch if fits else int(self._call("opa_malloc", len(data)))
        self._write(addr, data)
        value = int(self._call("opa_json_parse", addr, len(data)))
        if value == 0:
            raise WasmEvalError("policy.wasm could not parse a JSON document")
        return value

    def _dump(self, value_addr: int) -> Any:
        return orjson.loads(self._read_cstring(int(self._call("opa_json_dump", value_addr))))

    # -- host functions --------------------------------------------------------------------
    def _abort(self, addr: int) -> None:
        try:
            message = self._read_cstring(addr).decode(errors="replace")
        except WasmEvalError:
            message = "(unreadable)"
        raise WasmEvalError(f"policy.wasm aborted: {message[:200]}")

    def _builtin(self, builtin_id: int, _ctx: int, *arg_addrs: int) -> int:
        name = self.builtin_names.get(builtin_id, "")
        function = BUILTINS.get(name)
        if function is None:
            raise WasmEvalError(f"policy.wasm called built-in {name or builtin_id}, which this host lacks")
        raw = tuple(self._read_cstring(self._call("opa_json_dump", a)) for a in arg_addrs)
        key = (name.encode(), *raw)
        if key in self._memo:
            encoded = self._memo[key]
        else:
            try:
                result = function(*(parse_args(r) for r in raw))
                encoded = result.encode() if isinstance(result, Num) else orjson.dumps(result)
            except BuiltinUndefined:
                encoded = None
            if name in PURE_BUILTINS and sum(map(len, raw)) + len(encoded or b"") <= MEMO_MAX_BYTES:
                if len(self._memo) >= MEMO_ENTRIES:
                    self._memo.clear()
                self._memo[key] = encoded
        return 0 if encoded is None else self._parse(encoded)

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, entrypoint: int, input_json: bytes, deadline_ticks: int) -> bytes:
        self.host.failure = None
        input_addr = self.heap_base
        self._write(input_addr, input_json)
        self.store.set_epoch_deadline(deadline_ticks)
        try:
            result = int(self._call("opa_eval", 0, entrypoint, self.data_addr, input_addr, len(input_json),
                                    input_addr + len(input_json), 0))
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            failure = self.host.failure
            if isinstance(failure, WasmEvalError):
                raise failure from exc
            if failure is not None:
                raise WasmEvalError(f"a built-in failed: {type(failure).__name__}: {failure}") from exc
            raise WasmEvalError(f"policy.wasm trapped: {str(exc).splitlines()[0][:200]}") from exc
        finally:
            self.store.set_epoch_deadline(1 << 40)
        return self._read_cstring(result)
