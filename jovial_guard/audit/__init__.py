"""Runtime audit: what happened inside user containers after the policy let them start.

Events (Falco alerts, engine events, hub events, policy decisions) are normalized,
attributed to hub users, and appended to a tamper-evident log: hash-chained records with
signed Merkle checkpoints, verifiable offline (``jovial-guard audit verify``). Response
rules act on matches (notify, stop the server, revoke storage, cut the network). See
docs/audit.md.
"""
