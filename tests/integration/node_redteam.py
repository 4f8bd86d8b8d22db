"""The red team's attacks, run inside a notebook pod on the real node.

The same attacks and errno checks as ``test_redteam.py`` (the embedded container), as one
probe that is the pod's command (the fork bomb and the memory hog in child processes, so
a kill lands on them, not on the report): it attacks, then writes a compact JSON report to the
termination message (at most 4096 bytes, so keys are short). ``JG_TARGETS`` names the
addresses the network checks try: the kubelet's API (node IP), the host's own address on the
pod bridge, OPA's loopback port, a metadata stand-in and, where the test has them, the test
hosts and the hub. ``lustre`` and ``staged`` report what of the shared file system the pod
sees: the tree under ``/lustre`` and every mount there (its root in the host's tree).

``NETPROBE`` is only the network part, for an unhardened control pod in a namespace without
egress rules (no fork bomb or memory hog where no limit would stop them).
"""

from __future__ import annotations

REDTEAM = r"""
import ctypes, errno, json, os, shutil, signal, socket, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
T = json.loads(os.environ["JG_TARGETS"])
def attempt(fn):
    try:
        fn()
        return 0
    except OSError as exc:
        return exc.errno
def call(fn, *args):
    def run():
        ctypes.set_errno(0)
        if fn(*args) < 0:
            raise OSError(ctypes.get_errno(), "call")
    return run
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
out = {k: st[k].strip() for k in ("Seccomp", "NoNewPrivs", "CapEff", "CapPrm", "CapBnd")}
out["uid"] = os.getuid()
out["ro"] = {p: attempt(lambda p=p: open(p, "w").write("x")) for p in ("/usr/evil", "/evil", "/etc/passwd-new")}
out["rw"] = {p: attempt(lambda p=p: open(p, "w").write("x")) for p in ("/tmp/scratch", "/home/jovyan/work")}
out["mount"] = attempt(call(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None))
out["unshare"] = {n: attempt(call(libc.unshare, f)) for n, f in (("user", 0x10000000), ("mnt", 0x20000), ("net", 0x40000000))}
out["keyctl"] = attempt(call(libc.syscall, 250, 0, -3, 0, 0, 0))
out["add_key"] = attempt(call(libc.syscall, 248, b"user", b"x", b"v", 1, -3))
victim = subprocess.Popen(["sleep", "30"])
out["ptrace"] = attempt(call(libc.ptrace, 16, victim.pid, None, None))
victim.kill(); victim.wait()
out["raw_socket"] = attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
out["setuid"] = attempt(lambda: os.setuid(0))
shutil.copy("/usr/bin/id", "/home/jovyan/myid")
os.chmod("/home/jovyan/myid", 0o4755)
out["planted_euid"] = subprocess.run(["/home/jovyan/myid", "-u"], capture_output=True, text=True).stdout.strip()
os.unlink("/home/jovyan/myid")
def connect(host, port):
    def c():
        s = socket.create_connection((host, port), timeout=5)
        s.close()
    return attempt(c)
out["net"] = {name: connect(host, port) for name, (host, port) in sorted(T.items())}
def listing(path, depth):
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        return exc.errno
    return {n: listing(os.path.join(path, n), depth - 1) if depth > 1 and os.path.isdir(os.path.join(path, n)) else 0 for n in names}
out["lustre"] = listing("/lustre", 3)
out["staged"] = sorted(l.split()[4] + " " + l.split()[3] for l in open("/proc/self/mountinfo") if l.split()[4].startswith("/lustre"))
out["default_route"] = any(l.split()[1] == "00000000" for l in open("/proc/net/route").read().splitlines()[1:])
bomb = '''
import json, os, signal, time
children, err = [], None
for _ in range(5000):
    try:
        pid = os.fork()
    except OSError as exc:
        err = exc.errno
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.kill(pid, signal.SIGKILL)
for pid in children:
    os.waitpid(pid, 0)
print(json.dumps({"n": len(children), "errno": err}))
'''
proc = subprocess.run([sys.executable, "-c", bomb], capture_output=True, text=True)
out["fork"] = json.loads(proc.stdout) if proc.returncode == 0 else {"rc": proc.returncode}
hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(32 * 1024 * 1024))\n    print(len(chunks) * 32, flush=True)\n"
proc = subprocess.run([sys.executable, "-c", hog], capture_output=True, text=True)
lines = proc.stdout.split()
out["hog"] = {"rc": proc.returncode, "peak_mib": int(lines[-1]) if lines else 0}
report = json.dumps(out, separators=(",", ":"))
print(report)
open("/dev/termination-log", "w").write(report)
"""

NETPROBE = r"""
import errno, json, os, socket
T = json.loads(os.environ["JG_TARGETS"])
def connect(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        return 0
    except OSError as exc:
        return exc.errno
report = json.dumps({"net": {name: connect(host, port) for name, (host, port) in sorted(T.items())}})
print(report)
open("/dev/termination-log", "w").write(report)
"""
