"""nftables batches and listings through libnftables, in process, in the calling thread's namespace.

Why not the ``nft`` program: starting it (fork, exec, loading the same library) costs more
than the work itself, and a spawn loads a ruleset once per user while attestation lists
every server's ruleset every few seconds. The library is the one ``nft`` is built on (its
documented C API, ``libnftables(3)``), so a batch means exactly what ``nft -f`` would make of
it, atomically, and a listing is the same JSON as ``nft -j list ruleset``. Each call makes
its own context, whose netlink socket is opened in the calling thread's network namespace:
run it from a thread inside the namespace (:func:`~.netns.in_netns`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from ..errors import Unavailable

_LIBRARY = "libnftables.so.1"
_NFT_CTX_DEFAULT = 0
#: enum nft_output_flags (nftables/libnftables.h): NFT_CTX_OUTPUT_JSON = 1 << 4.
_OUTPUT_JSON = 1 << 4
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


class NftablesUnavailable(Unavailable):
    """libnftables could not be loaded, or it refused a batch (the message says why)."""


def _library() -> ctypes.CDLL:
    global _lib
    with _lock:
        if _lib is None:
            name = ctypes.util.find_library("nftables") or _LIBRARY
            try:
                lib = ctypes.CDLL(name, use_errno=True)
            except OSError as exc:
                raise NftablesUnavailable(
                    f"libnftables is not loadable ({exc}): install the nftables package "
                    "(it ships the nft program and its library)"
                ) from exc
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.restype = None
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            _lib = lib
        return _lib


def available() -> bool:
    """Whether libnftables can be loaded here."""
    try:
        _library()
    except NftablesUnavailable:
        return False
    return True


def run(commands: str, *, json_output: bool = False) -> str:
    """Run ``commands`` (an ``nft -f`` batch or one command) in this thread's network
    namespace; its output (JSON with ``json_output``), or NftablesUnavailable with
    libnftables' error text."""
    lib = _library()
    ctx = lib.nft_ctx_new(_NFT_CTX_DEFAULT)
    if not ctx:
        raise NftablesUnavailable("libnftables could not make a context")
    try:
        if json_output:
            lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON)
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        rc = lib.nft_run_cmd_from_buffer(ctx, commands.encode())
        out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    finally:
        lib.nft_ctx_free(ctx)
    if rc != 0:
        raise NftablesUnavailable(err.strip() or f"libnftables returned {rc}")
    return out


def list_ruleset_json() -> str:
    """The JSON listing of the ruleset of the calling thread's network namespace."""
    return run("list ruleset", json_output=True)
