"""File I/O in the home directory and /tmp: what notebooks, editors and libraries do."""
import fcntl
import json
import mmap
import os
import shutil
import sqlite3
import tempfile

results = {}
for base in (os.environ.get("HOME", "/home/jovyan"), "/tmp"):
    work = tempfile.mkdtemp(dir=base)
    data = os.path.join(work, "data.bin")
    with open(data, "wb") as out:
        out.write(os.urandom(1 << 20))
        out.flush()
        os.fsync(out.fileno())
    with open(data, "r+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with mmap.mmap(handle.fileno(), 0) as view:
            view[:4] = b"JGRD"
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.truncate(1 << 19)
    shutil.copy2(data, data + ".copy")
    os.rename(data + ".copy", data + ".moved")
    os.symlink(data, data + ".link")
    os.chmod(data, 0o600)
    os.utime(data, (0, 0))
    os.makedirs(os.path.join(work, "a", "b"), exist_ok=True)
    names = sorted(entry.name for entry in os.scandir(work))
    db = sqlite3.connect(os.path.join(work, "nbsignatures.db"))
    db.execute("create table if not exists s (id integer primary key, v text)")
    db.executemany("insert into s (v) values (?)", [(str(i),) for i in range(100)])
    db.commit()
    count = db.execute("select count(*) from s").fetchone()[0]
    db.close()
    with open(data, "rb") as handle:
        head = handle.read(4)
    size = os.stat(data).st_size
    shutil.rmtree(work)
    results[base] = head == b"JGRD" and size == 1 << 19 and count == 100 and len(names) == 4
ok = all(results.values())
print(json.dumps({"workload": "files", "ok": ok, "results": results}))
raise SystemExit(0 if ok else 1)
