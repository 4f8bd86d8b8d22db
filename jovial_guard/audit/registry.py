"""The spawn registry: which hub user and server a container or pod belongs to.

The spawn hook registers every container it starts (``register``); the audit service looks
events up by container id, container name or pod. It is a small SQLite file so the hub
process (writer) and the audit service (reader) can share it safely, and entries are kept
after a server stops (``mark_stopped``) because late events (a ``die`` after the stop) must
still be attributed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS spawns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    server TEXT NOT NULL DEFAULT '',
    container_id TEXT,
    container_name TEXT,
    pod TEXT,
    namespace TEXT,
    netns TEXT,
    started REAL NOT NULL,
    stopped REAL,
    record TEXT
);
CREATE INDEX IF NOT EXISTS spawns_cid ON spawns(container_id);
CREATE INDEX IF NOT EXISTS spawns_name ON spawns(container_name);
CREATE INDEX IF NOT EXISTS spawns_pod ON spawns(namespace, pod);
CREATE INDEX IF NOT EXISTS spawns_user ON spawns(user, server);
"""


@dataclass(frozen=True)
class Owner:
    """Who a container belongs to, and how we know."""

    user: str
    server: str
    container_id: str | None = None
    container_name: str | None = None
    netns: str | None = None
    stopped: bool = False
    pod: str | None = None
    namespace: str | None = None
    #: The spawn's hardening record (``SpawnRecord.to_json()``), when the hook registered it.
    record: Mapping[str, Any] | None = field(default=None, compare=False)


class SpawnRegistry:
    """Persistent container/pod -> (hub user, server) map. Thread-safe; cheap repeated lookups."""

    def __init__(self, path: str | Path, *, refresh_interval: float = 0.5) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(spawns)")}
        if "record" not in columns:  # a registry written before records were kept
            self._db.execute("ALTER TABLE spawns ADD COLUMN record TEXT")
        self._refresh_interval = refresh_interval
        self._checked = 0.0
        self._version: tuple[int, int] = (-1, -1)
        self._cache: dict[tuple[str, str], Owner | None] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing (spawn hook) -------------------------------------------------------------
    def register(self, *, user: str, server: str = "", container_id: str | None = None,
                 container_name: str | None = None, pod: str | None = None,
                 namespace: str | None = None, netns: str | None = None,
                 record: Mapping[str, Any] | None = None) -> None:
        """Record that ``user``'s ``server`` runs in this container / pod (and, from the
        spawn hook, the hardening record its decision produced)."""
        if not user:
            raise ValueError("register needs the hub user name")
        if not (container_id or container_name or pod):
            raise ValueError("register needs a container_id, container_name or pod")
        with self._lock:
            self._db.execute(
                "INSERT INTO spawns(user, server, container_id, container_name, pod, namespace, netns, started,"
                " record) VALUES (?,?,?,?,?,?,?,?,?)",
                (user, server, container_id, container_name, pod, namespace, netns, time.time(),
                 json.dumps(dict(record), default=str) if record is not None else None),
            )
            self._cache.clear()

    def mark_stopped(self, *, user: str, server: str = "") -> None:
        with self._lock:
            self._db.execute(
                "UPDATE spawns SET stopped=? WHERE user=? AND server=? AND stopped IS NULL",
                (time.time(), user, server),
            )
            self._cache.clear()

    # -- reading (audit service) ----------------------------------------------------------
    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self._refresh_interval:
            return
        self._checked = now
        version = self._db.execute("PRAGMA data_version").fetchone()[0]
        count = self._db.execute("SELECT count(*) FROM spawns").fetchone()[0]
        if (version, count) != self._version:
            self._version = (version, count)
            self._cache.clear()

    def lookup(self, *, container_id: str | None = None, container_name: str | None = None,
               pod: str | None = None, namespace: str | None = None) -> Owner | None:
        """The newest registration matching the id (full or a 12+ character prefix), name or pod."""
        with self._lock:
            self._maybe_refresh()
            for kind, value in (("id", container_id), ("name", container_name),
                                ("pod", f"{namespace or ''}/{pod}" if pod else None)):
                if not value:
                    continue
                key = (kind, value)
                if key in self._cache:
                    owner = self._cache[key]
                else:
                    owner = self._query(kind, value)
                    self._cache[key] = owner
                if owner is not None:
                    return owner
            return None

    def _query(self, kind: str, value: str) -> Owner | None:
        cols = "user, server, container_id, container_name, netns, stopped"
        if kind == "id":
            if len(value) < 12:
                return None
            row = self._db.execute(
                f"SELECT {cols} FROM spawns WHERE container_id = ? OR "
                "(length(?) >= 12 AND substr(container_id, 1, length(?)) = ?) ORDER BY id DESC LIMIT 1",
                (value, value, value, value),
            ).fetchone()
        elif kind == "name":
            row = self._db.execute(
                f"SELECT {cols} FROM spawns WHERE container_name = ? ORDER BY id DESC LIMIT 1", (value,)
            ).fetchone()
        else:
            namespace, _, pod = value.partition("/")
            row = self._db.execute(
                f"SELECT {cols} FROM spawns WHERE pod = ? AND coalesce(namespace, '') = ? ORDER BY id DESC LIMIT 1",
                (pod, namespace),
            ).fetchone()
        if row is None:
            return None
        return Owner(user=row[0], server=row[1], container_id=row[2], container_name=row[3],
                     netns=row[4], stopped=row[5] is not None)

    def containers_of(self, user: str, server: str | None = None) -> list[Owner]:
        """Running registrations of a user (optionally one server), newest first."""
        with self._lock:
            sql = ("SELECT user, server, container_id, container_name, netns, stopped FROM spawns "
                   "WHERE user = ? AND stopped IS NULL")
            args: list[str] = [user]
            if server is not None:
                sql += " AND server = ?"
                args.append(server)
            rows = self._db.execute(sql + " ORDER BY id DESC", args).fetchall()
        return [Owner(user=r[0], server=r[1], container_id=r[2], container_name=r[3], netns=r[4],
                      stopped=r[5] is not None) for r in rows]

    def running_servers(self) -> list[Owner]:
        """One entry per running (user, server): each registration of it merged, newest
        value first (the hook registers the record, the hub later adds the container id)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT user, server, container_id, container_name, netns, pod, namespace, record FROM spawns "
                "WHERE stopped IS NULL ORDER BY id DESC").fetchall()
        merged: dict[tuple[str, str], list[Any]] = {}
        for row in rows:
            current = merged.setdefault((row[0], row[1]), list(row))
            for i, value in enumerate(row):
                if current[i] is None:
                    current[i] = value
        out = []
        for user, server, cid, name, netns, pod, namespace, record in merged.values():
            try:
                doc = json.loads(record) if record else None
            except ValueError:
                doc = None
            out.append(Owner(user=user, server=server, container_id=cid, container_name=name, netns=netns,
                             pod=pod, namespace=namespace, record=doc if isinstance(doc, dict) else None))
        return out
