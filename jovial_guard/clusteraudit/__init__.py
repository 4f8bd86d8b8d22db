"""Cluster audit: decide every running pod against the current policy revision."""
