"""pip installs a local wheel into the home directory, then the package is imported.

The image's Python is a virtual environment without user site-packages, so
``pip install --user`` is refused by pip itself (checked here); ``--target`` under
``~/.local`` is what works for a user of this image.
"""
import glob
import json
import os
import subprocess
import sys

wheel = sorted(glob.glob("/wheels/*.whl"))[0]
common = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
          "--disable-pip-version-check", "--no-cache-dir"]
user = subprocess.run(common + ["--user", wheel], capture_output=True, text=True)
target = os.path.join(os.environ["HOME"], ".local", "pylib")
installed = subprocess.run(common + ["--target", target, wheel], capture_output=True, text=True)
sys.path.insert(0, target)
import jg_learn_probe  # noqa: E402

ok = user.returncode != 0 and "virtualenv" in user.stderr and installed.returncode == 0 \
    and jg_learn_probe.answer() == 42
print(json.dumps({"workload": "pip_wheel", "ok": ok, "user_install": user.stderr.strip()[-120:],
                  "target_rc": installed.returncode}))
raise SystemExit(0 if ok else 1)
