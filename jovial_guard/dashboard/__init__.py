"""The security admins' dashboard: a JupyterHub service (hub OAuth, admins only).

Server-rendered pages (no JavaScript) showing the current policy revision and its checks,
the deploy history, recent denials per user, running servers with the hardening the spawn
hook applied, audit events and responses, and a dry-run of a candidate policy directory.
``python -m jovial_guard.dashboard`` runs it; ``jupyterhub_config.py`` registers it.
"""
