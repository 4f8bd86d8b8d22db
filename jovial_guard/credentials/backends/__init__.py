"""Storage backends: how a verified grant becomes access (``bind``) or administration (``lustre``)."""
