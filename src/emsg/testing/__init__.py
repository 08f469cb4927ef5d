"""A public test kit: real homeserver processes on loopback, and helpers around them."""

from emsg.testing.process import ServerProcess, free_port

__all__ = ["ServerProcess", "free_port"]
