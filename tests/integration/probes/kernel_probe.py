"""Runs INSIDE a notebook container: try what a hostile notebook would, report what happened.

Prints one JSON object: probe name -> {"ok": bool, "errno": int|None, "detail": str}.
"ok" means the operation succeeded (the test decides whether that is good or bad).
Usage: python3 kernel_probe.py '<json: {"connect": {"name": [host, port]}, "skip": [probe]}>'
"""

import ctypes
import errno
import json
import os
import socket
import subprocess
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
results = {}
SKIP = set()

SYS = {"keyctl": 250, "add_key": 248, "request_key": 249, "userfaultfd": 323, "bpf": 321,
       "perf_event_open": 298, "clone": 56, "setns": 308, "unshare": 272,
       "init_module": 175, "kexec_load": 246, "ptrace": 101, "io_uring_setup": 425}


def record(name, fn):
    if name in SKIP:
        return
    try:
        detail = fn()
        results[name] = {"ok": True, "errno": None, "detail": str(detail)[:200]}
    except OSError as exc:
        results[name] = {"ok": False, "errno": exc.errno, "detail": str(exc)[:200]}
    except Exception as exc:  # noqa: BLE001 - report, never crash the probe
        results[name] = {"ok": False, "errno": None, "detail": repr(exc)[:200]}


def syscall(name, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(SYS[name]), *[ctypes.c_long(a) for a in args])
    if rc == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    if name == "clone" and rc == 0:
        os._exit(0)  # we are the child of an unexpectedly successful clone
    return rc


def write(path):
    with open(path, "w") as fh:
        fh.write("x")
    return path


def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def mount_tmpfs():
    rc = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def raw_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.close()
    return "raw socket opened"


def ptrace_attach():
    pid = os.fork()
    if pid == 0:
        import time
        time.sleep(5)
        os._exit(0)
    try:
        return syscall("ptrace", 16, pid, 0, 0)  # PTRACE_ATTACH
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def unshare_cmd():
    proc = subprocess.run(["unshare", "--user", "true"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(errno.EPERM if "not permitted" in proc.stderr else None, proc.stderr.strip())
    return "unshare --user succeeded"


def setuid_files():
    found = subprocess.run(["find", "/", "-xdev", "-perm", "/6000", "-type", "f"],
                           capture_output=True, text=True).stdout.split()
    if found:
        raise OSError(None, "setuid/setgid files: " + " ".join(found))
    return "none"


def scientific():
    import astropy.units as u
    import numpy as np
    value = (np.arange(10).sum() * u.m).to(u.km)
    return f"{value.value} {value.unit}"


def fork_bomb(limit=400):
    """Fork sleeping children until the pids limit says no; then reap them all."""
    children = []
    try:
        for _ in range(limit):
            pid = os.fork()
            if pid == 0:
                import time
                time.sleep(30)
                os._exit(0)
            children.append(pid)
        return f"forked {len(children)} children"
    except OSError as exc:
        raise OSError(exc.errno, f"stopped after {len(children)} children: {exc.strerror}")
    finally:
        for pid in children:
            os.kill(pid, 9)
            os.waitpid(pid, 0)


def exhaust_memory(megabytes=900):
    proc = subprocess.run([sys.executable, "-c", f"b = b'x' * ({megabytes} << 20); print(len(b))"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise OSError(None, f"allocation child exited with {proc.returncode}")
    return proc.stdout.strip()


def connect(host, port):
    with socket.create_connection((host, port), timeout=3) as s:
        return s.recv(64).decode()


def main():
    spec = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    SKIP.update(spec.get("skip", []))
    record("uid", lambda: os.getuid())
    record("no_new_privs", lambda: status("NoNewPrivs"))
    record("cap_eff", lambda: status("CapEff"))
    record("seccomp_mode", lambda: status("Seccomp"))
    record("write_usr", lambda: write("/usr/jg-probe"))
    record("write_root", lambda: write("/jg-probe"))
    record("write_tmp", lambda: write("/tmp/jg-probe"))
    record("write_home", lambda: write(os.path.expanduser("~/jg-probe")))
    record("unshare_user_syscall", lambda: syscall("unshare", 0x10000000))
    record("unshare_user_cmd", unshare_cmd)
    record("clone_newuser", lambda: syscall("clone", 0x10000000 | 17, 0, 0, 0, 0))
    record("setns", lambda: syscall("setns", 0, 0))
    record("keyctl", lambda: syscall("keyctl", 0, -3, 0))  # KEYCTL_GET_KEYRING_ID session
    record("add_key", lambda: syscall("add_key", 0, 0, 0, 0, -3))
    record("userfaultfd", lambda: syscall("userfaultfd", 0))
    record("bpf", lambda: syscall("bpf", 0, 0, 0))
    record("perf_event_open", lambda: syscall("perf_event_open", 0, 0, -1, -1, 0))
    record("io_uring_setup", lambda: syscall("io_uring_setup", 1, 0))
    record("kexec_load", lambda: syscall("kexec_load", 0, 0, 0, 0))
    record("init_module", lambda: syscall("init_module", 0, 0, 0))
    record("mount", mount_tmpfs)
    record("raw_socket", raw_socket)
    record("ptrace_attach", ptrace_attach)
    record("setuid_files", setuid_files)
    record("etc_hosts", lambda: open("/etc/hosts").read())
    record("scientific", scientific)
    record("fork_bomb", fork_bomb)
    record("exhaust_memory", exhaust_memory)
    for name, (host, port) in sorted(spec.get("connect", {}).items()):
        record(f"connect_{name}", lambda h=host, p=port: connect(h, p))
    print(json.dumps(results, sort_keys=True))


main()
