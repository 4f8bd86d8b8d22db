"""Turn a decision's SecuritySpec into what the engine enforces: Docker host_config
(``render_docker``), a Pod JSON Patch (``render_pod``), the seccomp and AppArmor profiles,
and per-user egress (network namespaces with nftables rules). Renderers are pure and
golden-tested; only the egress module touches the host.
"""
