"""Server settings: a TOML file, overridden by command-line flags.

The model is open on purpose (TLS and federation keys join it later), but unknown
keys are refused so that a typo in a config file is an error, not a silent default.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from emsg.proto.errors import describe_invalid
from emsg.proto.ids import Domain
from emsg.server.federation.config import FederationSettings, TlsSettings

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: str | float | int) -> float:
    """Seconds from `"30d"`, `"2s"`, `"150ms"` or a plain number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    match = _DURATION.match(value)
    if match is None:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30d, 12h, 2s)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_body_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    account_rate: Annotated[float, Field(gt=0)] = 200.0
    account_burst: Annotated[float, Field(gt=0)] = 400.0
    ip_auth_rate_per_minute: Annotated[float, Field(gt=0)] = 10.0
    ip_auth_burst: Annotated[float, Field(gt=0)] = 20.0
    ws_max_frame: Annotated[int, Field(gt=0)] = 1024 * 1024


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: str
    listen: str = "127.0.0.1:8008"
    data: Path = Path("data")
    database_url: str | None = None
    allow_port_in_domain: bool = False
    token_ttl: float = Field(default=30 * 86400.0, description="seconds; accepts '30d' in TOML")
    limits: Limits = Limits()
    graceful_shutdown_seconds: float = 10.0
    tls: TlsSettings = TlsSettings()
    federation: FederationSettings = FederationSettings()

    @field_validator("token_ttl", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError("token_ttl must be positive")
        return seconds

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"must be HOST:PORT with a port from 1 to 65535, not {value!r}")
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return str(Domain.parse(value))

    @property
    def parsed_domain(self) -> Domain:
        return Domain.parse(self.domain)

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data / 'emsg.sqlite3'}"

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "127.0.0.1", int(port)


def load_settings(config: Path | None, overrides: dict[str, Any]) -> Settings:
    """Read the TOML file (if any), then apply the non-None command-line overrides."""
    values: dict[str, Any] = {}
    if config is not None:
        try:
            with config.open("rb") as fh:
                values = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{config} is not valid TOML: {exc}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        # Never the values themselves: a database URL may hold a password.
        raise ValueError(f"invalid settings: {describe_invalid(exc.errors())}") from None
