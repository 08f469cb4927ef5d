"""Real homeserver processes on loopback, each for its own domain, speaking TLS with
certificates from a trustme CA, configured through the documented config file."""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trustme

from emsg.testing import ServerProcess, free_port


@dataclass
class Pki:
    root: Path
    ca: trustme.CA = field(default_factory=trustme.CA)

    @property
    def ca_file(self) -> Path:
        path = self.root / "ca.pem"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self.ca.cert_pem.write_to_path(str(path))
        return path

    def issue(self, domain: str) -> tuple[Path, Path]:
        cert = self.ca.issue_cert(domain, "127.0.0.1")
        cert_path, key_path = self.root / f"{domain}.pem", self.root / f"{domain}.key"
        self.root.mkdir(parents=True, exist_ok=True)
        cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
        cert.private_key_pem.write_to_path(str(key_path))
        return cert_path, key_path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


class TlsServer(ServerProcess):
    pki: Pki

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ctx = self.pki.context()
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"server exited with {self._proc.returncode}:\n{self.log()}")
            try:
                with httpx.Client(verify=ctx, timeout=1.0) as http:
                    if http.get(f"{self.url}/_emsg/v1/health").status_code == 200:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server did not become healthy in {timeout}s:\n{self.log()}")


def federation(
    root: Path,
    domains: list[str],
    retry_window: str = "3d",
    retry_cap: str = "1s",
    databases: Mapping[str, str] | None = None,
) -> list[TlsServer]:
    """One configured (not started) server per domain, each knowing the others.

    `databases` maps a domain to its database URL (PostgreSQL); the others keep
    SQLite in their data folder."""
    pki = Pki(root / "pki")
    ports = {d: free_port() for d in domains}
    servers = []
    for domain in domains:
        cert, key = pki.issue(domain)
        resolve = ", ".join(
            f'"{d}" = "https://127.0.0.1:{p}"' for d, p in ports.items() if d != domain
        )
        config = root / f"{domain}.toml"
        database = (databases or {}).get(domain)
        config.write_text(
            f'domain = "{domain}"\n'
            f'listen = "127.0.0.1:{ports[domain]}"\n'
            f'data = "{root / domain}"\n'
            + (f'database_url = "{database}"\n' if database else "")
            + "[limits]\naccount_rate = 100000.0\naccount_burst = 100000.0\n"
            "ip_auth_rate_per_minute = 100000.0\nip_auth_burst = 100000.0\n"
            f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
            f"[federation]\nresolve = {{ {resolve} }}\n"
            f'ca_file = "{pki.ca_file}"\nallow_private_addresses = true\n'
            f'retry_window = "{retry_window}"\nretry_base = "50ms"\nretry_cap = "{retry_cap}"\n'
        )
        server = TlsServer(domain, root / domain, port=ports[domain], config=config)
        server.pki = pki
        servers.append(server)
    return servers
