"""``nft -j list ruleset`` through libnftables itself (the library the ``nft`` tool is).

Why not the tool: attestation lists every server's ruleset every few seconds, and a fork and
exec of ``nft`` per server is most of a pass's CPU. The library answers the same command
with the same JSON in-process. It runs on the calling thread, so inside a project namespace
when called through :func:`jovial_guard.hardening.netns.in_netns`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading

from .netns import EgressSetupFailed

#: enum nft_output_flags (nftables/libnftables.h): NFT_CTX_OUTPUT_JSON = 1 << 4.
_OUTPUT_JSON = 1 << 4
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _load() -> ctypes.CDLL:
    global _lib
    with _lock:
        if _lib is None:
            name = ctypes.util.find_library("nftables") or "libnftables.so.1"
            try:
                lib = ctypes.CDLL(name, use_errno=True)
            except OSError as exc:
                raise EgressSetupFailed(f"libnftables is not installed ({exc}); install nftables") from None
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            _lib = lib
        return _lib


def available() -> bool:
    try:
        _load()
    except EgressSetupFailed:
        return False
    return True


def list_ruleset_json() -> str:
    """The JSON listing of the ruleset of the calling thread's network namespace."""
    lib = _load()
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise EgressSetupFailed("libnftables could not make a context")
    try:
        lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON)
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        if lib.nft_run_cmd_from_buffer(ctx, b"list ruleset") != 0:
            error = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
            raise EgressSetupFailed(f"list ruleset failed: {error or 'unknown error'}")
        return str((lib.nft_ctx_get_output_buffer(ctx) or b"").decode())
    finally:
        lib.nft_ctx_free(ctx)
