"""Print the requirements of jovial_guard's base dependencies plus one extra, from pyproject.toml.

    python3 images/webhook/requirements.py webhook

The webhook image installs exactly these (pinned, transitive ones by the constraints file),
so the image and the package metadata cannot disagree.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def requirements(extra: str) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras = project.get("optional-dependencies", {})
    if extra not in extras:
        raise SystemExit(f"requirements.py: no extra {extra!r} in pyproject.toml (have: {', '.join(sorted(extras))})")
    return [*project["dependencies"], *(r for r in extras[extra] if not r.startswith(project["name"]))]


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1] if len(sys.argv) > 1 else "webhook")))
