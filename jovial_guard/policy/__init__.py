"""Everything about asking OPA: the managed OPA process, the fail-closed client and engine,
signed bundles and the policy store they are served from, the lifecycle (lint, test,
dry-run, deploy, rollback) and the decision log every decision is recorded in.
"""
