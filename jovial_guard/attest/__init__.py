"""Live attestation: read what the kernel enforces on each running notebook and compare it
with the hardening record of its decision (:mod:`.expect`, :mod:`.observe`, :mod:`.compare`)."""
