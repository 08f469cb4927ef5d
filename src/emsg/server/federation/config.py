"""The `[tls]` and `[federation]` sections of the server's configuration file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from emsg.proto.federation import RetryPolicy, parse_server
from emsg.proto.ids import Domain


def _seconds(value: Any) -> float:
    # Imported lazily: settings.py imports this module.
    from emsg.server.settings import parse_duration

    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


class TlsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cert: Path | None = None
    key: Path | None = None


class FederationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # Static map, tried first: domain -> "https://host:port" (tests, LAN).
    resolve: dict[str, str] = {}
    # Trusted for outgoing TLS besides the system store.
    ca_file: Path | None = None
    allow_private_addresses: bool = False
    retry_window: float = Field(default=3 * 86400.0, description="seconds; '3d' in TOML")
    # Test knobs for the retry schedule (seconds).
    retry_base: float = 2.0
    retry_cap: float = 3600.0
    request_timeout: float = 10.0
    discovery_ttl: float = 3600.0
    key_validity: float = Field(default=7 * 86400.0, description="lifetime of a new signing key")
    batch_size: Annotated[int, Field(gt=0, le=100)] = 100

    @field_validator("retry_window", "retry_base", "retry_cap", "request_timeout",
                     "discovery_ttl", "key_validity", mode="before")  # fmt: skip
    @classmethod
    def _duration(cls, value: Any) -> float:
        return _seconds(value)

    @field_validator("resolve")
    @classmethod
    def _resolve(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for domain, location in value.items():
            host = Domain.parse(domain)
            parse_server(location, host.host, plain_http=True)  # refuse a bad entry at start-up
            out[str(host)] = location
        return out

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            base_ms=int(self.retry_base * 1000),
            cap_ms=int(self.retry_cap * 1000),
            window_ms=int(self.retry_window * 1000),
        )
