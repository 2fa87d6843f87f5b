"""What a download may do: timeouts, retries, TLS, proxy and size limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FetchOptions:
    """The fetch settings, by their smart-proxy / tftproxy names where messages quote them."""

    connect_timeout: float = 10.0     # tftp_connect_timeout
    stall_timeout: float = 30.0       # no byte for this long: the transfer has stalled
    total_timeout: float = 3600.0     # fetch_timeout: one download, retries included
    max_redirects: int = 10
    retries: int = 3
    retry_backoff: float = 1.0        # the first retry's delay; doubles each time
    verify_server_cert: bool = True
    ca_bundle: Path | None = None
    http_proxy: str | None = None
    max_file_size: int = 4 * 1024**3
    oci_auth_file: Path | None = None  # credentials for OCI registries (containers auth.json)
