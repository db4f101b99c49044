"""Core test configuration. Fixtures for everyone live in nexus_core.testing.plugin (pytest11)."""
