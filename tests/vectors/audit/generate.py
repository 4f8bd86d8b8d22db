"""Generate the audit intake vectors (run: python tests/vectors/audit/generate.py).

Falco alerts follow Falco's JSON output (json_output: true, as http_output POSTs them):
output, priority, rule, time, output_fields, source, tags, hostname (and uuid, added by
Falco >= 0.36 and by falcosidekick). Rule names, priorities, tags and output formats are
those of falcosecurity/rules' falco_rules.yaml (stable + sandbox rules). The container ids
are the 12-character ids Falco reports; registry.json maps some of them to hub users the
way the spawn hook registers containers, so attribution is tested too.

index.json lists every vector: file, endpoint, and what must happen (accepted with rule,
priority, user and attribution; quarantined with a reason fragment; or ignored).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALICE_CID = "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081"
BOB_CID = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"
STRANGER_CID = "0badc0ffee00112233445566778899aabbccddeeff00112233445566778899aa"
HOST = "notebook-node-1"


def info(cid: str, name: str, image: str = "localhost/jovial-guard/notebook") -> str:
    return f"container_id={cid[:12]} container_name={name} container_image_repository={image}"


def falco(rule: str, priority: str, time: str, message: str, fields: dict, tags: list[str],
          uuid: str | None = None) -> dict:
    out_fields = {"evt.time": 1795496401123456789, **fields}
    doc = {
        "output": f"{time[11:29]}: {priority} {message}",
        "priority": priority,
        "rule": rule,
        "time": time,
        "output_fields": out_fields,
        "source": "syscall",
        "tags": tags,
        "hostname": HOST,
    }
    if uuid:
        doc["uuid"] = uuid
    return doc


def common(cid: str, name: str, **extra: object) -> dict:
    return {"container.id": cid[:12], "container.name": name,
            "container.image.repository": "localhost/jovial-guard/notebook",
            "user.name": "jovyan", "user.uid": 1000, "user.loginuid": -1, **extra}


VECTORS: list[tuple[str, str, object, dict]] = []


def add(name: str, endpoint: str, doc: object, expect: dict) -> None:
    VECTORS.append((name, endpoint, doc, expect))


# --- Falco http_output, one alert per POST --------------------------------------------------
add("falco/terminal_shell.json", "falco", falco(
    "Terminal shell in container", "Notice", "2026-11-27T05:00:01.123456789Z",
    "A shell was spawned in a container with an attached terminal | evt_type=execve user=jovyan "
    "user_uid=1000 user_loginuid=-1 process=bash proc_exepath=/usr/bin/bash parent=runc command=bash "
    f"terminal=34816 exe_flags=EXE_WRITABLE {info(ALICE_CID, 'jupyter-alice')}",
    common(ALICE_CID, "jupyter-alice", **{"evt.type": "execve", "proc.name": "bash",
           "proc.exepath": "/usr/bin/bash", "proc.pname": "runc", "proc.cmdline": "bash", "proc.tty": 34816,
           "evt.arg.flags": "EXE_WRITABLE"}),
    ["T1059", "container", "maturity_stable", "mitre_execution", "shell"]),
    {"result": "accepted", "rule": "Terminal shell in container", "priority": "Notice",
     "user": "alice", "server": "", "attribution": "registry"})

add("falco/read_sensitive_file.json", "falco", falco(
    "Read sensitive file untrusted", "Warning", "2026-11-27T05:00:02.000000001Z",
    "Sensitive file opened for reading by non-trusted program | file=/etc/shadow gparent=bash "
    "ggparent=jupyter-lab gggparent=tini evt_type=openat user=jovyan user_uid=1000 user_loginuid=-1 "
    f"process=cat proc_exepath=/usr/bin/cat parent=bash command=cat /etc/shadow terminal=0 "
    f"{info(BOB_CID, 'jupyter-bob-gpu')}",
    common(BOB_CID, "jupyter-bob-gpu", **{"fd.name": "/etc/shadow", "evt.type": "openat", "proc.name": "cat",
           "proc.cmdline": "cat /etc/shadow", "proc.pname": "bash", "proc.aname[2]": "bash",
           "proc.aname[3]": "jupyter-lab", "proc.aname[4]": "tini"}),
    ["T1555", "container", "filesystem", "host", "maturity_stable", "mitre_credential_access"]),
    {"result": "accepted", "rule": "Read sensitive file untrusted", "priority": "Warning",
     "user": "bob", "server": "gpu", "attribution": "registry"})

add("falco/drop_and_execute.json", "falco", falco(
    "Drop and execute new binary in container", "Critical", "2026-11-27T05:00:03.5Z",
    "Executing binary not part of base image | proc_exe=/tmp/xmrig proc_sname=bash gparent=jupyter-lab "
    "proc_exe_ino_ctime=1795496400000000000 proc_exe_ino_mtime=1795496400000000000 "
    "proc_exe_ino_ctime_duration_proc_start=1000000 proc_cwd=/home/jovyan/ container_start_ts=1795496000000000000 "
    f"evt_type=execve user=jovyan user_uid=1000 process=xmrig command=xmrig --donate-level 0 "
    f"{info(ALICE_CID, 'jupyter-alice')}",
    common(ALICE_CID, "jupyter-alice", **{"proc.exe": "/tmp/xmrig", "proc.exepath": "/tmp/xmrig",
           "proc.cmdline": "xmrig --donate-level 0", "proc.name": "xmrig", "proc.sname": "bash",
           "proc.is_exe_upper_layer": True, "evt.type": "execve", "proc.cwd": "/home/jovyan/"}),
    ["TA0003", "container", "maturity_stable", "mitre_persistence", "process"]),
    {"result": "accepted", "rule": "Drop and execute new binary in container", "priority": "Critical",
     "user": "alice", "server": "", "attribution": "registry"})

add("falco/contact_k8s_api.json", "falco", falco(
    "Contact K8S API Server From Container", "Notice", "2026-11-27T05:00:04.250000000Z",
    "Unexpected connection to K8s API Server from container | connection=10.0.0.7:52144->10.96.0.1:443 "
    "lport=52144 rport=443 fd_type=ipv4 fd_proto=tcp evt_type=connect user=jovyan user_uid=1000 "
    "process=python3 command=python3 -c import requests proc_exepath=/opt/notebook/bin/python3 "
    "container_id=7a7a7a7a7a7a container_name=notebook k8s_ns=jhub k8s_pod_name=jupyter-carol",
    {"container.id": "7a7a7a7a7a7a", "container.name": "notebook", "k8s.ns.name": "jhub",
     "k8s.pod.name": "jupyter-carol", "k8s.pod.label[hub.jupyter.org/username]": "carol",
     "fd.name": "10.0.0.7:52144->10.96.0.1:443", "fd.lport": 52144, "fd.rport": 443, "fd.type": "ipv4",
     "fd.l4proto": "tcp", "evt.type": "connect", "user.name": "jovyan", "proc.cmdline": "python3 -c import requests"},
    ["T1565", "container", "k8s", "maturity_stable", "mitre_discovery", "network"]),
    {"result": "accepted", "rule": "Contact K8S API Server From Container", "priority": "Notice",
     "user": "carol", "server": "", "attribution": "label"})

add("falco/fileless_memfd.json", "falco", falco(
    "Fileless execution via memfd_create", "Critical", "2026-11-27T05:00:05.000000000Z",
    "Fileless execution via memfd_create | container_start_ts=1795496000000000000 proc_cwd=/home/jovyan/ "
    "evt_res=SUCCESS proc_sname=python3 gparent=jupyter-lab evt_type=execve user=jovyan user_uid=1000 "
    "user_loginuid=-1 process=3 proc_exepath=memfd:payload parent=python3 command=3 terminal=0 "
    f"{info(STRANGER_CID, 'stray-container')}",
    common(STRANGER_CID, "stray-container", **{"proc.exepath": "memfd:payload", "proc.is_exe_from_memfd": True,
           "evt.res": "SUCCESS", "evt.type": "execve", "proc.name": "3", "proc.cmdline": "3"}),
    ["T1620", "container", "host", "maturity_stable", "mitre_defense_evasion", "process"]),
    {"result": "accepted", "rule": "Fileless execution via memfd_create", "priority": "Critical",
     "user": None, "server": None, "attribution": "unattributed"})

add("falco/reverse_shell.json", "falco", falco(
    "Redirect STDOUT/STDIN to Network Connection in Container", "Notice", "2026-11-27T05:00:06.000000000Z",
    "Redirect stdout/stdin to network connection | gparent=jupyter-lab ggparent=tini gggparent=conmon "
    "fd.sip=192.0.2.10 connection=10.0.0.5:40222->192.0.2.10:4444 lport=40222 rport=4444 fd_type=ipv4 "
    "fd_proto=tcp evt_type=dup2 user=jovyan user_uid=1000 user_loginuid=-1 process=bash proc_exepath=/usr/bin/bash "
    f"parent=python3 command=bash -i terminal=0 {info(ALICE_CID, 'jupyter-alice')}",
    common(ALICE_CID, "jupyter-alice", **{"fd.name": "10.0.0.5:40222->192.0.2.10:4444", "fd.sip": "192.0.2.10",
           "fd.lport": 40222, "fd.rport": 4444, "fd.type": "ipv4", "fd.l4proto": "tcp", "evt.type": "dup2",
           "proc.name": "bash", "proc.cmdline": "bash -i", "proc.pname": "python3"}),
    ["T1059", "container", "maturity_stable", "mitre_execution", "network", "process"]),
    {"result": "accepted", "rule": "Redirect STDOUT/STDIN to Network Connection in Container",
     "priority": "Notice", "user": "alice", "server": "", "attribution": "registry"})

# --- falcosidekick forwards -------------------------------------------------------------------
sidekick = falco(
    "Terminal shell in container", "Notice", "2026-11-27T05:01:00.000000000Z",
    "A shell was spawned in a container with an attached terminal | evt_type=execve user=jovyan "
    f"process=sh command=sh -i terminal=34817 {info(BOB_CID, 'jupyter-bob-gpu')}",
    common(BOB_CID, "jupyter-bob-gpu", **{"evt.type": "execve", "proc.name": "sh", "proc.cmdline": "sh -i"}),
    ["T1059", "container", "maturity_stable", "mitre_execution", "shell"],
    uuid="5a1e0c9b-6b0f-4c55-9d6f-6f2b1c1a2b3c")
add("falcosidekick/webhook.json", "falco", sidekick,
    {"result": "accepted", "rule": "Terminal shell in container", "priority": "Notice", "user": "bob",
     "server": "gpu", "attribution": "registry", "source": "falcosidekick"})
add("falcosidekick/cloudevent_structured.json", "falco", {
    "specversion": "1.0", "type": "falco.rule.output.v1", "source": "https://falco.org",
    "id": "5a1e0c9b-6b0f-4c55-9d6f-6f2b1c1a2b3d", "time": "2026-11-27T05:01:01.000000000Z",
    "datacontenttype": "application/json", "hostname": HOST, "data": {**sidekick, "uuid": "5a1e0c9b-6b0f-4c55-9d6f-6f2b1c1a2b3d"}},
    {"result": "accepted", "rule": "Terminal shell in container", "priority": "Notice", "user": "bob",
     "server": "gpu", "attribution": "registry", "source": "falcosidekick-cloudevents"})

# --- engine events (podman's Docker-API /events and its events file) -----------------------
add("engine/api_oom.json", "engine", {
    "status": "oom", "id": ALICE_CID, "from": "localhost/jovial-guard/notebook:v1", "Type": "container",
    "Action": "oom", "Actor": {"ID": ALICE_CID, "Attributes": {"image": "localhost/jovial-guard/notebook:v1",
                                                           "name": "jupyter-alice"}},
    "scope": "local", "time": 1795496460, "timeNano": 1795496460123456789},
    {"result": "accepted", "rule": "container oom", "priority": "Warning", "user": "alice", "server": "",
     "attribution": "registry"})
add("engine/api_die.json", "engine", {
    "status": "die", "id": BOB_CID, "from": "localhost/jovial-guard/notebook:v1", "Type": "container",
    "Action": "die", "Actor": {"ID": BOB_CID, "Attributes": {"containerExitCode": "137", "image":
                             "localhost/jovial-guard/notebook:v1", "name": "jupyter-bob-gpu",
                             "hub.jupyter.org/username": "bob", "hub.jupyter.org/servername": "gpu"}},
    "scope": "local", "time": 1795496461, "timeNano": 1795496461000000000},
    {"result": "accepted", "rule": "container die", "priority": "Notice", "user": "bob", "server": "gpu",
     "attribution": "label"})
add("engine/api_exec.json", "engine", {
    "status": "exec_start: bash", "id": ALICE_CID, "Type": "container", "Action": "exec_start: bash",
    "Actor": {"ID": ALICE_CID, "Attributes": {"name": "jupyter-alice"}}, "time": 1795496462},
    {"result": "accepted", "rule": "container exec", "priority": "Notice", "user": "alice", "server": "",
     "attribution": "registry"})
add("engine/podman_file_start.json", "engine", {
    "ID": ALICE_CID, "Image": "localhost/jovial-guard/notebook:v1", "Name": "jupyter-alice", "Status": "start",
    "Time": "2026-11-27T05:02:00.123456789Z", "Type": "container", "Attributes": {"image": "localhost/jovial-guard/notebook:v1"}},
    {"result": "accepted", "rule": "container start", "priority": "Informational", "user": "alice",
     "server": "", "attribution": "registry"})
add("engine/api_create_ignored.json", "engine", {
    "status": "create", "id": ALICE_CID, "Type": "container", "Action": "create",
    "Actor": {"ID": ALICE_CID, "Attributes": {"name": "jupyter-alice"}}, "time": 1795496463},
    {"result": "ignored"})

# --- JupyterHub server-action events --------------------------------------------------------
add("hub/server_start.json", "hub", {
    "__timestamp__": "2026-11-27T05:03:00.000000+00:00Z", "__schema__":
    "https://schema.jupyter.org/jupyterhub/events/server-action", "__schema_version__": "1",
    "__metadata_version__": 1, "action": "start", "username": "alice", "servername": ""},
    {"result": "accepted", "rule": "server start", "priority": "Informational", "user": "alice", "server": "",
     "attribution": "hub"})
add("hub/server_stop.json", "hub", {
    "__timestamp__": "2026-11-27T05:04:00.000000+00:00Z", "__schema__":
    "https://schema.jupyter.org/jupyterhub/events/server-action", "__schema_version__": "1",
    "__metadata_version__": 1, "action": "stop", "username": "bob", "servername": "gpu"},
    {"result": "accepted", "rule": "server stop", "priority": "Informational", "user": "bob", "server": "gpu",
     "attribution": "hub"})

# --- malformed: must be quarantined, never dropped ------------------------------------------
good = VECTORS[0][2]
if not isinstance(good, dict):
    raise TypeError("the first vector must be a Falco alert object")
add("malformed/not_json.txt", "falco", "{\"output\": \"truncated alert", {"result": "quarantined", "reason": "invalid JSON"})
add("malformed/array.json", "falco", [good], {"result": "quarantined", "reason": "JSON object"})
add("malformed/no_rule.json", "falco", {k: v for k, v in good.items() if k != "rule"},
    {"result": "quarantined", "reason": "rule"})
add("malformed/bad_priority.json", "falco", {**good, "priority": "Severe"}, {"result": "quarantined", "reason": "priority"})
add("malformed/bad_time.json", "falco", {**good, "time": "yesterday"}, {"result": "quarantined", "reason": "RFC 3339"})
add("malformed/text_output_not_json.json", "falco", {**{k: v for k, v in good.items() if k != "output_fields"}},
    {"result": "quarantined", "reason": "json_output"})
add("malformed/nested_field.json", "falco", {**good, "output_fields": {"container.id": {"nested": 1}}},
    {"result": "quarantined", "reason": "scalar"})
add("malformed/cloudevent_wrong_type.json", "falco", {"specversion": "1.0", "type": "com.example.other", "data": good},
    {"result": "quarantined", "reason": "falco.rule.output.v1"})
add("malformed/engine_no_id.json", "engine", {"Type": "container", "Action": "oom", "Actor": {"Attributes": {}}},
    {"result": "quarantined", "reason": "container id"})
add("malformed/hub_bad_action.json", "hub", {"action": "explode", "username": "alice", "servername": ""},
    {"result": "quarantined", "reason": "action"})
add("malformed/binary.bin", "falco", b"\x00\xff\xfe garbage \x80", {"result": "quarantined", "reason": "invalid JSON"})

REGISTRY = [
    {"user": "alice", "server": "", "container_id": ALICE_CID, "container_name": "jupyter-alice"},
    {"user": "bob", "server": "gpu", "container_id": BOB_CID, "container_name": "jupyter-bob-gpu"},
]


def main() -> None:
    index = []
    for name, endpoint, doc, expect in VECTORS:
        path = HERE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(doc, bytes):
            path.write_bytes(doc)
        elif isinstance(doc, str):
            path.write_text(doc)
        else:
            path.write_text(json.dumps(doc, indent=2) + "\n")
        index.append({"file": name, "endpoint": endpoint, "expect": expect})
    (HERE / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    (HERE / "registry.json").write_text(json.dumps(REGISTRY, indent=2) + "\n")


if __name__ == "__main__":
    main()
