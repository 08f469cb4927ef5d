"""EMSG: a federated, end-to-end encrypted messenger that works like e-mail."""

__version__ = "0.1.0"
