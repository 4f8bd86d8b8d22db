"""Subprocesses the way notebooks start them: shell commands, fork, multiprocessing, and
command-line tools from a terminal (coreutils ``timeout`` arms a POSIX timer)."""
import json
import multiprocessing
import os
import subprocess


def square(n: int) -> int:
    return n * n


def main() -> int:
    shell = subprocess.run("ls / | wc -l; uname -s; echo $HOME", shell=True, check=True,
                           capture_output=True, text=True).stdout.split()
    timed = subprocess.run(["timeout", "-s", "KILL", "30", "sh", "-c", "echo timed"],
                           capture_output=True, text=True, check=False)
    child = os.fork()
    if child == 0:
        os._exit(7)
    _, status = os.waitpid(child, 0)
    pools = {}
    for method in ("fork", "spawn", "forkserver"):
        with multiprocessing.get_context(method).Pool(2) as pool:
            pools[method] = sum(pool.map(square, range(10)))
    ok = shell[1] == "Linux" and os.waitstatus_to_exitcode(status) == 7 \
        and set(pools.values()) == {285} and timed.stdout == "timed\n" and timed.stderr == ""
    print(json.dumps({"workload": "processes", "ok": ok, "shell": shell, "pools": pools,
                      "timeout": [timed.stdout, timed.stderr]}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
