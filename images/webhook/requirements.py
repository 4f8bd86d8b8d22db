"""Print the requirements an image installs, taken from pyproject.toml's pins.

    python3 images/webhook/requirements.py webhook                      # base + one extra
    python3 images/webhook/requirements.py webhook:kubernetes hub:pyroute2   # base + single picks

An argument ``EXTRA`` adds all of that extra; ``EXTRA:NAME`` adds only the requirement NAME
from it (the node agent needs two packages, not the webhook's server or the hub). The images
install exactly these (pinned, transitive ones by the constraints file), so an image and the
package metadata cannot disagree.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def requirements(*picks: str) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    chosen = list(project["dependencies"])
    for pick in picks:
        extra, _, name = pick.partition(":")
        if extra not in extras:
            raise SystemExit(f"requirements.py: no extra {extra!r} in pyproject.toml (have: {', '.join(sorted(extras))})")
        own = [r for r in extras[extra] if not r.startswith(project["name"])]
        if name:
            own = [r for r in own if _name(r) == _name(name)]
            if not own:
                raise SystemExit(f"requirements.py: extra {extra!r} does not pin {name!r}")
        chosen += [r for r in own if r not in chosen]
    return chosen


if __name__ == "__main__":
    print("\n".join(requirements(*(sys.argv[1:] or ["webhook"]))))
