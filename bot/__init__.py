"""Switchboard: a support bot for Slack and Discord built on the handoff orchestration pattern."""

__version__ = "0.1.0"
__all__ = ["__version__"]
