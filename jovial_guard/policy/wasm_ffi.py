"""Cheap calls between Python and a Wasm module for functions that only pass i32 values.

wasmtime-py's ``Func.__call__`` and host-function trampolines look up and convert the
function's type on every call (tens of microseconds); an OPA decision makes about fifty such
calls (the module asks the host for ``sprintf`` and friends, and the host reads and writes
values through the module's own exports). These helpers go through wasmtime's *unchecked*
C API (``wasmtime_func_call_unchecked``, ``wasmtime_func_new_unchecked``), the calls
wasmtime offers for exactly this, with the types checked once when the function is bound.
The C bindings used are wasmtime-py's own (``wasmtime._ffi``), pinned with the package.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import wasmtime
from wasmtime import _bindings
from wasmtime import _ffi as ffi  # wasmtime-py's ctypes bindings of the C API

_I32 = wasmtime.ValType.i32()
_TRAP_POINTER = ctypes.POINTER(ffi.wasm_trap_t)
_call_unchecked = _bindings._wasmtime_func_call_unchecked  # the C function, argtypes set by wasmtime-py
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _env: None)


class HostError(Exception):
    """A host function raised; carries the original exception as ``__cause__``."""


def _raise_failure(error: Any, trap: Any) -> None:
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    if trap:
        raise wasmtime.Trap._from_ptr(trap)


class I32Function:
    """An exported function of i32 parameters and at most one i32 result, bound once."""

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, name: str) -> None:
        ty = func.type(store)
        if any(p != _I32 for p in ty.params) or len(ty.results) > 1 or any(r != _I32 for r in ty.results):
            raise TypeError(f"{name} is not a function of i32 values")
        self._store = store
        self._func = func._func
        self._func_ref = ctypes.byref(self._func)
        self._slots = max(len(ty.params), len(ty.results), 1)
        self._values = ffi.wasmtime_val_raw_t * self._slots

    def __call__(self, *args: int) -> int:
        buf = self._values()
        for i, value in enumerate(args):
            buf[i].i32 = value
        trap = _TRAP_POINTER()
        error = _call_unchecked(self._store._context(), self._func_ref, buf, self._slots, ctypes.byref(trap))
        if error or trap:
            _raise_failure(error, trap)
        return int(buf[0].i32)


class HostFunctions:
    """Host functions of i32 parameters and results, defined without per-call type work.

    A Python exception in a host function becomes a trap in the module (the evaluation
    stops); the exception itself is kept in :attr:`failure` for the caller to report.
    """

    def __init__(self, store: wasmtime.Store) -> None:
        self._store = store
        self._keep: list[Any] = []
        self.failure: BaseException | None = None

    def define(self, linker: wasmtime.Linker, module: str, name: str, params: int, results: int,
               function: Callable[..., int | None]) -> None:
        functype = wasmtime.FuncType([_I32] * params, [_I32] * results)

        def callback(_env: Any, _caller: Any, values: Any, _count: int) -> int:
            try:
                result = function(*(values[i].i32 for i in range(params)))
                if results:
                    values[0].i32 = int(result or 0)
                return 0
            except BaseException as exc:  # noqa: BLE001 - any failure stops the module
                self.failure = exc
                message = b"host function failed"
                trap = ffi.wasmtime_trap_new(message, len(message))
                return int(ctypes.cast(trap, ctypes.c_void_p).value or 0)

        raw_callback = ffi.wasmtime_func_unchecked_callback_t(callback)
        out = ffi.wasmtime_func_t()
        ffi.wasmtime_func_new_unchecked(self._store._context(), functype.ptr(), raw_callback, None, _NO_FINALIZER,
                                        ctypes.byref(out))
        self._keep.extend((raw_callback, functype))
        linker.define(self._store, module, name, wasmtime.Func._from_raw(out))
