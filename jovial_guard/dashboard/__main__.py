"""``python -m jovial_guard.dashboard``: what the hub runs as the managed service."""

from .app import main

main()
