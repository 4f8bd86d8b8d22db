"""Named network namespaces, links, addresses, routes and nftables, without spawning ``ip``.

Why in process: a spawn needs about twenty network changes; one ``ip`` process each cost
the hook over a hundred milliseconds. Here links, addresses and routes go through netlink
(pyroute2) and a namespace is entered by a short-lived thread: ``setns``/``unshare`` with
``CLONE_NEWNET`` change only the calling thread, so the hub's own threads never leave the
host namespace. Rules go in as one ``nft -f`` batch per namespace through libnftables
(:mod:`.nft_lib`), from such a thread so the batch lands in the namespace it configures; the
``nft`` program is run only to read rules back (:func:`nft`).

Namespaces are bind mounts under ``/run/netns`` like ``ip netns add`` makes them, so
``ip netns``, the container engine (``network_mode=ns:/run/netns/NAME``) and these functions
all see the same ones.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import Unavailable
from . import nft_lib

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_SHARED = 1 << 20
_MNT_DETACH = 2
_NETLINK_ROUTE = 0
_libc = ctypes.CDLL(None, use_errno=True)
_T = TypeVar("_T")


class EgressSetupFailed(Unavailable):
    """Creating, configuring or removing a project network namespace failed."""


def _os_error(what: str) -> EgressSetupFailed:
    code = ctypes.get_errno()
    return EgressSetupFailed(f"{what}: {os.strerror(code)}")


def path_of(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path_of(name).exists()


def list_names() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError:
        return []


def in_netns(name: str | None, fn: Callable[[], _T]) -> _T:
    """``fn()`` run on a fresh thread inside namespace ``name`` (None: this one).

    The thread ends with ``fn``, so its namespace never leaks to other work. Exceptions
    are re-raised in the caller.
    """
    def enter() -> None:
        if name is not None:
            fd = os.open(path_of(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise _os_error(f"enter network namespace {name}")
            finally:
                os.close(fd)

    return _on_thread(enter, fn, label=name)


def in_netns_fd(fd: int, fn: Callable[[], _T]) -> _T:
    """``fn()`` on a fresh thread inside the network namespace open at ``fd`` (a pod's,
    handed over by the CNI plugin: the namespace need not be visible in this mount namespace)."""
    def enter() -> None:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            raise _os_error(f"enter the network namespace at fd {fd}")

    return _on_thread(enter, fn, label=f"fd{fd}")


def apply_ruleset_fd(fd: int, ruleset: str, *, what: str) -> None:
    """Load ``ruleset`` with one ``nft -f -`` inside the namespace open at ``fd``."""
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nft", "-f", "-"], input=ruleset, capture_output=True, text=True,
                              timeout=30, check=False)

    try:
        proc = in_netns_fd(fd, run)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EgressSetupFailed(f"{what}: nft -f -: {exc}") from exc
    if proc.returncode != 0:
        raise EgressSetupFailed(f"{what} failed: nft -f -: {proc.stderr.strip()}")


def _on_thread(enter: Callable[[], None], fn: Callable[[], _T], *, label: str | None) -> _T:
    box: dict[str, object] = {}

    def run() -> None:
        try:
            enter()
            box["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{label}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def _share_netns_dir() -> None:
    """Make ``/run/netns`` a shared mount, as iproute2 does, so bind mounts propagate."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    target = str(NETNS_DIR).encode()
    if _libc.mount(b"none", target, None, _MS_SHARED | _MS_REC, None) == 0:
        return
    if _libc.mount(target, target, b"none", _MS_BIND | _MS_REC, None) != 0:
        raise _os_error(f"bind {NETNS_DIR}")
    if _libc.mount(b"none", target, None, _MS_SHARED | _MS_REC, None) != 0:
        raise _os_error(f"share {NETNS_DIR}")


_shared_once = threading.Lock()
_shared = False


def create(name: str) -> None:
    """A new, empty named network namespace (``ip netns add NAME``); loopback up."""
    global _shared
    with _shared_once:
        if not _shared:
            _share_netns_dir()
            _shared = True
    path = path_of(name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError as exc:
        raise EgressSetupFailed(f"network namespace {name} already exists") from exc
    except OSError as exc:
        raise EgressSetupFailed(f"create {path}: {exc}") from exc

    def unshare_and_bind() -> None:
        if _libc.unshare(_CLONE_NEWNET) != 0:
            raise _os_error(f"new network namespace {name}")
        if _libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), b"none", _MS_BIND, None) != 0:
            raise _os_error(f"bind network namespace {name}")
        with _route_socket() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")

    try:
        in_netns(None, unshare_and_bind)
    except BaseException:
        remove(name)
        raise


def remove(name: str) -> None:
    """Remove a named namespace (``ip netns del NAME``); idempotent."""
    path = path_of(name)
    if _libc.umount2(str(path).encode(), _MNT_DETACH) != 0 and ctypes.get_errno() not in (
            errno.EINVAL, errno.ENOENT):
        raise _os_error(f"unmount network namespace {name}")
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise EgressSetupFailed(f"remove {path}: {exc}") from exc


@contextlib.contextmanager
def _route_socket() -> Iterator[IPRoute]:
    """An rtnetlink connection in the calling thread's namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_ROUTE)
    ipr = IPRoute(use_socket=sock)
    try:
        yield ipr
    finally:
        ipr.close()
        sock.close()


def netlink(name: str | None, fn: Callable[[IPRoute], _T], *, what: str) -> _T:
    """``fn(ipr)`` with an rtnetlink connection inside namespace ``name`` (None: this one).

    Netlink errors become EgressSetupFailed naming ``what``.
    """
    def run() -> _T:
        with _route_socket() as ipr:
            return fn(ipr)

    try:
        return in_netns(name, run)
    except EgressSetupFailed:
        raise
    except Exception as exc:
        raise EgressSetupFailed(f"{what} failed: {exc}") from exc


def link_index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise EgressSetupFailed(f"no interface {ifname}")
    return int(found[0])


def has_link(ipr: IPRoute, ifname: str) -> bool:
    return bool(ipr.link_lookup(ifname=ifname))


def veth_into(ipr: IPRoute, ifname: str, *, peer: str, peer_netns: str) -> None:
    """A veth pair ``ifname`` (here) <-> ``peer`` (inside ``peer_netns``)."""
    fd = os.open(path_of(peer_netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": peer, "net_ns_fd": fd})
    finally:
        os.close(fd)


def address_up(ipr: IPRoute, ifname: str, cidr: str | None) -> None:
    """Give ``ifname`` the address ``cidr`` (``10.0.0.1/30``; None: none) and bring it up."""
    index = link_index(ipr, ifname)
    if cidr is not None:
        address, _, plen = cidr.partition("/")
        ipr.addr("add", index=index, address=address, prefixlen=int(plen))
    ipr.link("set", index=index, state="up")


def route_via(ipr: IPRoute, dest: str, *, gateway: str, ifname: str, index: int | None = None) -> None:
    """``ip route replace DEST via GATEWAY dev IFNAME`` (``index``: IFNAME's, if known:
    looking a link up lists every link)."""
    oif = index if index is not None else link_index(ipr, ifname)
    ipr.route("replace", dst=dest, gateway=gateway, oif=oif)


def route_del(ipr: IPRoute, dest: str) -> None:
    """``ip route del DEST`` (already gone: nothing to do)."""
    try:
        ipr.route("del", dst=dest)
    except NetlinkError as exc:
        if exc.code != errno.ESRCH:
            raise


def route_lines(ipr: IPRoute) -> list[str]:
    """The main table's IPv4 routes as ``ip route`` shows them: ``DEST via GW dev IF``
    (a host route without ``/32``), for humans and tests."""
    names = {int(link["index"]): str(link.get("ifname")) for link in ipr.get_links()}
    lines = []
    for route in ipr.get_routes(family=socket.AF_INET, table=254):
        dst = route.get("dst")
        dest = (str(dst) if route["dst_len"] == 32 else f"{dst}/{route['dst_len']}") if dst else "default"
        via = f" via {route.get('gateway')}" if route.get("gateway") else ""
        lines.append(f"{dest}{via} dev {names.get(int(route.get('oif') or 0), '?')}")
    return sorted(lines)


def sysctl(name: str | None, key: str, value: str) -> None:
    """Write ``/proc/sys/<key>`` (``net.ipv4.ip_forward``) inside namespace ``name``."""
    path = Path("/proc/sys", *key.split("."))

    def write() -> None:
        path.write_text(value)

    try:
        in_netns(name, write)
    except OSError as exc:
        raise EgressSetupFailed(f"sysctl {key}={value} in {name}: {exc}") from exc


def nft(name: str | None, argv: list[str], *, stdin: str | None = None, what: str) -> str:
    """Run ``nft ARGV`` inside namespace ``name``; its stdout, or EgressSetupFailed."""
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nft", *argv], input=stdin, capture_output=True, text=True,
                              timeout=30, check=False)

    try:
        proc = in_netns(name, run)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EgressSetupFailed(f"{what}: nft {' '.join(argv)}: {exc}") from exc
    if proc.returncode != 0:
        raise EgressSetupFailed(f"{what} failed: nft {' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


def apply_ruleset(name: str | None, ruleset: str, *, what: str) -> None:
    """Load ``ruleset`` (it starts with ``flush ruleset``) as one batch inside ``name``."""
    try:
        in_netns(name, lambda: nft_lib.run(ruleset))
    except (OSError, nft_lib.NftablesUnavailable) as exc:
        raise EgressSetupFailed(f"{what} failed: {exc}") from exc


def routes_and_ruleset(name: str, fn: Callable[[IPRoute], None], ruleset: str, *, what: str) -> str:
    """``fn(ipr)`` (routes) then ``ruleset`` as one batch, both from one thread inside
    namespace ``name``: one namespace entry per spawn. Returns the kernel's JSON listing of
    the loaded rules (``nft -j list ruleset``), read back from the same thread, for the
    hardening record's digest."""
    def run() -> str:
        with _route_socket() as ipr:
            fn(ipr)
        nft_lib.run(ruleset)
        return nft_lib.list_ruleset_json()

    try:
        listing = in_netns(name, run)
    except EgressSetupFailed:
        raise
    except Exception as exc:
        raise EgressSetupFailed(f"{what} failed: {exc}") from exc
    if not listing:
        raise EgressSetupFailed(f"{what}: the loaded rules could not be listed back (nft -j list ruleset)")
    return listing


def rename(old: str, new: str) -> None:
    """Give namespace ``old`` the name ``new`` (a second bind mount, then the first one
    unmounted): the namespace, its links and addresses stay as they are."""
    target = path_of(new)
    try:
        os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError as exc:
        raise EgressSetupFailed(f"network namespace {new} already exists") from exc
    except OSError as exc:
        raise EgressSetupFailed(f"create {target}: {exc}") from exc
    if _libc.mount(str(path_of(old)).encode(), str(target).encode(), b"none", _MS_BIND, None) != 0:
        error = _os_error(f"bind network namespace {old} as {new}")
        target.unlink(missing_ok=True)
        raise error
    remove(old)


def link_exists(ifname: str) -> bool:
    """Whether this (the host) namespace has interface ``ifname`` (read from sysfs)."""
    return Path("/sys/class/net", ifname).exists()
