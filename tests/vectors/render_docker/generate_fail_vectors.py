"""Regenerate the fail-*.json vectors: each is pass-default-no-apparmor.json with one bad field.

Run from this directory: ``python3 generate_fail_vectors.py``. The pass vectors' expected
outputs are written by hand (golden), never generated from the renderer.
"""

import json


def main() -> None:
    base = json.load(open("pass-default-no-apparmor.json"))
    spec, args = base["spec"], base["args"]

    def variant(name, desc, error, spec_patch=None, args_patch=None, res_patch=None):
        s = json.loads(json.dumps(spec))
        a = dict(args)
        s.update(spec_patch or {})
        s["resources"].update(res_patch or {})
        a.update(args_patch or {})
        with open(f"fail-{name}.json", "w") as out:
            json.dump({"description": desc, "spec": s, "args": a, "error": error}, out, indent=2)

    variant("gpu", "a GPU profile cannot run on the embedded engine: refuse, never run without", "no GPU support", res_patch={"gpu": 1})
    variant("root-uid", "uid 0 is refused even if a spec carried it", "never run as root", spec_patch={"uid": 0})
    variant("memory-quantity", "an unparsable memory quantity refuses instead of running unlimited", "not a Kubernetes quantity", res_patch={"memory_limit": "lots"})
    variant("memory-milli", "milli-bytes are a typo, not a limit", "milli-units", res_patch={"memory_limit": "2000m"})
    variant("cpu-suffix", "cpu in Gi is nonsense", "expected cores", res_patch={"cpu_limit": "2Gi"})
    variant("pids-zero", "pids_limit 0 would mean unlimited in docker", "must be positive", res_patch={"pids_limit": 0})
    variant("relative-seccomp", "podman resolves a relative seccomp path against its own cwd", "absolute file path", args_patch={"seccomp_path": "notebook.json"})
    variant("host-network", "host networking would bypass the egress namespace", "project namespace", args_patch={"network_mode": "host"})
    variant("bridge-network", "podman's bridge edits the host firewall", "project namespace", args_patch={"network_mode": "bridge"})
    variant("netns-escape", "a namespace path outside /run/netns", "project namespace", args_patch={"network_mode": "ns:/proc/1/ns/net"})
    variant("cap-add-all", "adding ALL capabilities", "contains ALL", spec_patch={"capabilities": {"drop": ["ALL"], "add": ["ALL"]}})
    variant("cap-bogus", "a capability name that is not one", "not a capability name", spec_patch={"capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN; rm"]}})
    variant("writable-root", "'/' as a writable path would undo the read-only root", "absolute directory below /", spec_patch={"writable_paths": ["/"]})
    variant("writable-dotdot", "path traversal in a writable path", "absolute directory below /", spec_patch={"writable_paths": ["/tmp/../etc"]})
    variant("volume-name", "a volume name that is a host path", "not a valid volume name", args_patch={"home_volume": "/etc"})


if __name__ == "__main__":
    main()
