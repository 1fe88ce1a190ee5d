"""Test doubles and network tooling shared by the integration tests."""
