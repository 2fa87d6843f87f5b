"""The settings model: every setting of tftproxy, validated, with smart-proxy's names.

Names follow smart-proxy's settings where one exists (``tftproot``, ``tftp_connect_timeout``,
``verify_server_cert``...), so an admin's knowledge and files carry over, and the model stays
flat so that each name is also a YAML key and a ``TFTPROXY_<KEY>`` variable. Where the values
come from is :mod:`tftproxy.settings.sources`' job; the parts of tftproxy never see this model:
the edges (:mod:`tftproxy.assemble`) turn it into each part's own options.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FilePath,
    field_validator,
    model_validator,
)

from tftproxy._addr import parse_hostport, parse_listen
from tftproxy.jobs.options import RefreshMode, VerifyMode
from tftproxy.logs import SPECIAL_TARGETS, parse_level

__all__ = ["FOREMAN_RELEASE", "MODULES", "TLS_VERSIONS", "FeatureMode", "PrefetchEntry",
           "RefreshMode", "Settings", "StatusPage", "is_version"]

# The Foreman release whose proxy client tftproxy was checked against: reported as the
# smart-proxy version when neither a setting nor an installed smart-proxy says otherwise.
FOREMAN_RELEASE = "3.13.0"
# smart-proxy's modules that tftproxy provides, as /features names them.
MODULES = ("tftp", "httpboot", "logs")
_VERSION_RE = re.compile(r"\d+\.\d+(?:\.\d+)?(?:[-.+~][0-9A-Za-z.+~-]*)?")


def is_version(text: str) -> bool:
    """Whether ``text`` is a version Foreman can compare (``3.13.0``, ``3.14.0-develop``)."""
    return _VERSION_RE.fullmatch(text) is not None


class FeatureMode(StrEnum):
    # smart-proxy's per-module `enabled`: the module on both listeners, off, or on one only.
    ON = "true"
    OFF = "false"
    HTTP = "http"
    HTTPS = "https"


class StatusPage(StrEnum):
    # Who may read the status page at / and /status.
    TRUSTED = "trusted"
    OPEN = "open"
    OFF = "off"


TLS_VERSIONS = ("1.2", "1.3")


def _enabled(value: Any) -> Any:
    # YAML reads `enabled: true` as a boolean and `enabled: https` as a string.
    if isinstance(value, bool):
        return FeatureMode.ON if value else FeatureMode.OFF
    return value


def _version(value: str | None) -> str | None:
    if value is not None and not is_version(value.strip()):
        raise ValueError("must be a version like 3.13.0 (major.minor[.patch])")
    return None if value is None else value.strip()


def _addresses(value: Any) -> Any:
    # One address or a comma-separated list is accepted where a list is expected
    # (TFTPROXY_TFTP_LISTEN=127.0.0.1:69,[::1]:69).
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _tftp_addresses(value: list[str]) -> list[str]:
    for address in value:
        parse_hostport(address, default_port=69)
    return value


Enabled = Annotated[FeatureMode, BeforeValidator(_enabled)]
VersionText = Annotated[str | None, AfterValidator(_version)]
TftpAddresses = Annotated[list[str], BeforeValidator(_addresses), AfterValidator(_tftp_addresses)]


def _check_module_listeners(settings: _ApiSettings, module: str) -> None:
    key = "feature_enabled" if module == "tftp" else f"{module}_enabled"
    mode = settings.module_mode(module)
    if mode is FeatureMode.HTTP and not settings.http_enabled:
        raise ValueError(f"{key} is http but http_enabled is false")
    if mode is FeatureMode.HTTPS and not settings.https_enabled:
        raise ValueError(f"{key} is https but HTTPS is not configured "
                         "(ssl_certificate, ssl_private_key, ssl_ca_file)")


# The fields are grouped in one class per part (each class stays small); Settings joins them
# into one flat model: one name, one YAML key and one TFTPROXY_<KEY> variable per setting.


class _ApiSettings(BaseModel):
    """smart-proxy's tftp, httpboot and logs modules and the API listeners."""

    # --- smart-proxy's tftp module ---
    tftproot: Path = Field(Path("/var/lib/tftpboot"), description="The TFTP root (published tree).")
    tftp_servername: str | None = Field(None, description="Answer of GET /tftp/serverName.")
    tftp_connect_timeout: float = Field(10.0, gt=0, description="Upstream connect timeout (s).")
    verify_server_cert: bool = Field(True, description="Verify upstream TLS certificates.")

    # --- the API listeners and who may use them (smart-proxy's settings.yml) ---
    listen: str = Field(
        "127.0.0.1:8000",
        description="HOST:PORT of the HTTP API; several may be given, comma-separated; "
        "host * means every address.",
    )
    http_enabled: bool = Field(True, description="Serve the API over plain HTTP on `listen`.")
    https_listen: str = Field(
        "127.0.0.1:8443",
        description="HOST:PORT of the HTTPS API (same syntax as `listen`), served when "
        "ssl_certificate, ssl_private_key and ssl_ca_file are all set.",
    )
    ssl_certificate: FilePath | None = Field(None, description="PEM certificate of the API.")
    ssl_private_key: FilePath | None = Field(None, description="PEM private key of the API.")
    ssl_ca_file: FilePath | None = Field(
        None, description="PEM CA bundle that HTTPS client certificates must chain to."
    )
    ssl_disabled_ciphers: list[str] = Field(
        default_factory=list, description="OpenSSL cipher names refused over HTTPS (TLS <= 1.2)."
    )
    tls_disabled_versions: list[str] = Field(
        default_factory=list,
        description="TLS versions refused besides 1.0 and 1.1, which always are: '1.2' or '1.3'.",
    )
    trusted_hosts: list[str] | None = Field(
        None,
        description="Clients allowed on /tftp and /v2/features: the client certificate's CN "
        "over HTTPS, the forward-verified reverse DNS name over HTTP. Unset: everyone; "
        "empty: no one.",
    )
    forward_verify: bool = Field(
        True, description="Over HTTP, require the reverse DNS name to resolve back to the client."
    )
    http_header_timeout: float = Field(15.0, gt=0, description="Seconds a new API connection "
                                       "has to send its first header; also a body's limit.")
    http_keepalive_timeout: float = Field(15.0, gt=0, description="Seconds an idle kept-alive "
                                          "API connection stays open.")
    http_max_connections: int = Field(512, ge=1, description="API connections at once (kept "
                                      "below the descriptor limit); when full, a new one "
                                      "replaces the oldest without a complete header.")
    http_max_connections_per_client: int = Field(64, ge=1, description="API connections at "
                                                 "once from one client address.")
    feature_enabled: Enabled = Field(
        FeatureMode.ON,
        description="smart-proxy's tftp `enabled`: true, false, or http / https for one of them.",
    )
    smart_proxy_version: VersionText = Field(
        None,
        description="The version GET /version reports to Foreman, which warns unless it is its "
        "own major.minor or the next minor. Unset: the VERSION of a smart-proxy installed "
        f"beside tftproxy (/usr/share/foreman-proxy/VERSION), else {FOREMAN_RELEASE}.",
    )

    # --- smart-proxy's httpboot and logs modules ---
    httpboot_enabled: Enabled = Field(
        FeatureMode.ON,
        description="smart-proxy's httpboot `enabled`: serve /httpboot/ and /EFI/ on both "
        "listeners (true), neither (false), or one (http / https).",
    )
    httpboot_root_dir: Path | None = Field(
        None, description="smart-proxy's httpboot `root_dir`: the tree served over HTTP boot. "
        "Unset: the TFTP root.",
    )
    logs_enabled: Enabled = Field(
        FeatureMode.ON, description="smart-proxy's logs `enabled`: GET /logs/ for Foreman.",
    )
    log_buffer: int = Field(
        2000, ge=2, le=1_000_000,
        description="Log records kept in memory for GET /logs/ (smart-proxy's log_buffer).",
    )
    log_buffer_errors: int = Field(
        1000, ge=2, le=1_000_000,
        description="Error records kept besides, once they leave that buffer "
        "(smart-proxy's log_buffer_errors).",
    )

    @field_validator("listen", "https_listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @field_validator("trusted_hosts")
    @classmethod
    def _check_trusted(cls, value: list[str] | None) -> list[str] | None:
        # Names are compared with the lower-cased CN or DNS name, as smart-proxy does.
        return None if value is None else [h.strip().lower() for h in value if h.strip()]

    @field_validator("tls_disabled_versions", mode="before")
    @classmethod
    def _check_tls_versions(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        versions = [str(v) for v in value]
        bad = [v for v in versions if v not in TLS_VERSIONS]
        if bad:
            raise ValueError(f"unknown TLS version(s) {', '.join(bad)}; "
                             f"use {', '.join(TLS_VERSIONS)}")
        return versions

    @model_validator(mode="after")
    def _check_listeners(self) -> Self:
        ssl_keys = ("ssl_certificate", "ssl_private_key", "ssl_ca_file")
        missing = [k for k in ssl_keys if getattr(self, k) is None]
        if 0 < len(missing) < len(ssl_keys):
            raise ValueError(f"{', '.join(missing)} must be set too: HTTPS needs all of "
                             f"{', '.join(ssl_keys)}")
        if {"1.2", "1.3"} <= set(self.tls_disabled_versions):
            raise ValueError("tls_disabled_versions disables every TLS version HTTPS can use")
        if not self.http_enabled and not self.https_enabled:
            raise ValueError("http_enabled is false and HTTPS is not configured (ssl_certificate, "
                             "ssl_private_key, ssl_ca_file): no API listener is left")
        for module in MODULES:
            _check_module_listeners(self, module)
        return self

    @property
    def https_enabled(self) -> bool:
        """HTTPS is served when its certificate, key and client CA are all configured."""
        return None not in (self.ssl_certificate, self.ssl_private_key, self.ssl_ca_file)

    def feature_on(self, scheme: str) -> bool:
        """Whether the TFTP routes are offered over ``scheme`` (``http`` or ``https``)."""
        return self.module_on("tftp", scheme)

    def module_mode(self, module: str) -> FeatureMode:
        """The `enabled` setting of one of :data:`MODULES`."""
        key = "feature_enabled" if module == "tftp" else f"{module}_enabled"
        mode: FeatureMode = getattr(self, key)
        return mode

    def module_on(self, module: str, scheme: str) -> bool:
        """Whether a module's routes are offered over ``scheme`` (``http`` or ``https``)."""
        mode = self.module_mode(module)
        if scheme == "https":
            return self.https_enabled and mode in (FeatureMode.ON, FeatureMode.HTTPS)
        return self.http_enabled and mode in (FeatureMode.ON, FeatureMode.HTTP)


class _FetchSettings(BaseModel):
    """Fetching, boot sets, verification and clean-up."""

    # --- fetching ---
    fetch_wait: float = Field(
        45.0, ge=0,
        description="How long POST /tftp/fetch_boot_file waits before answering 202 (s); keep "
        "it well under Foreman's proxy_request_timeout (60 s).",
    )
    stall_timeout: float = Field(30.0, gt=0, description="Fail when no byte arrives for this long.")
    min_rate: int = Field(1024, ge=0, description="Fail a download slower than this many "
                          "bytes/s over rate_window (a trickling upstream); 0: no check.")
    rate_window: float = Field(60.0, gt=0, description="Seconds over which min_rate is "
                               "measured; also the limit for response headers.")
    fetch_timeout: float = Field(
        3600.0, gt=0,
        description="Total time limit of one download (s); smart-proxy's tftp_download_max_time.")
    tftp_http_download_preflight: bool = Field(
        True, description="HEAD an archive's source (POST /tftp/fetch_and_process) before its "
        "first download; a refused HEAD fails the request before anything changes. False for "
        "servers without HEAD.")
    max_unpacked_size: int = Field(
        8 * 1024**3, gt=0,
        description="Most bytes one archive may unpack: the members extracted, and for a tgz "
        "everything inflated on the way to them.")
    max_redirects: int = Field(10, ge=0, description="Redirects followed before giving up.")
    retries: int = Field(3, ge=0, description="Retries on connection errors and 5xx.")
    retry_backoff: float = Field(1.0, ge=0, description="First retry delay (s); doubles each try.")
    ca_bundle: Path | None = Field(None, description="Extra CA bundle for upstream TLS.")
    http_proxy: str | None = Field(None, description="Proxy URL for upstream requests.")
    oci_auth_file: Path | None = Field(
        None, description="Credentials for OCI registries: a containers auth.json "
        "(podman login --authfile FILE REGISTRY) or Docker's config.json; read once."
    )
    max_file_size: int = Field(
        4 * 1024**3, gt=0, description="Largest boot file accepted, in bytes."
    )
    min_free_space: int = Field(
        64 * 1024**2, ge=0, description="Bytes that must stay free on the root's filesystem."
    )
    refresh_mode: RefreshMode = Field(
        RefreshMode.HIDE, description="hide: hide the name while a changed version downloads; "
        "keep: serve the old version until the new one replaces it."
    )
    job_retention: float = Field(
        600.0, ge=0,
        description="How long a finished fetch job stays visible at its status URL (s).",
    )
    fresh_for: float = Field(
        1.0, ge=0, le=60,
        description="How long a successful upstream check answers later requests for the "
        "same file from the same URL (s); 0: every request checks upstream.",
    )

    # --- boot sets, verification, clean-up ---
    verify: VerifyMode = Field(
        "auto",
        description="Check downloads against the distribution's checksums (.treeinfo, "
        "SHA256SUMS): auto (when found), require, off.",
    )
    pin_window: float = Field(
        900.0, ge=0,
        description="How long tftproxy's servers keep a client on the generation of a boot set "
        "it started reading (s).",
    )
    gc_grace: float = Field(
        3600.0, ge=0,
        description="How long retired generations and unreferenced content are kept before "
        "clean-up may delete them (s); keep it longer than pin_window.",
    )
    gc_interval: float = Field(
        3600.0, ge=0, description="Seconds between clean-ups in `serve`; 0 turns them off."
    )

    @field_validator("http_proxy")
    @classmethod
    def _check_proxy(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value or None


class _TftpSettings(BaseModel):
    """tftproxy's own TFTP server."""

    # --- TFTP server ---
    tftp_listen: TftpAddresses = Field(
        default_factory=list,
        description="HOST:PORT addresses (IPv6 as [ADDR]:PORT; port 69 if omitted) where "
        "tftproxy serves TFTP itself; empty: no TFTP server (in.tftpd or dnsmasq serves the tree).",
    )
    tftp_workers: int = Field(
        1, ge=1, le=64, description="TFTP worker processes sharing each address (SO_REUSEPORT)."
    )
    refresh_hold: float = Field(
        10.0, ge=0,
        description="How long a TFTP request for a name being refreshed (hidden) goes unanswered "
        "while the new version downloads, before the published state is served (s).",
    )
    tftp_timeout: float = Field(
        1.0, gt=0, le=255,
        description="TFTP retransmission timeout when the client negotiates none (s).",
    )
    tftp_retries: int = Field(
        5, ge=0, le=100, description="TFTP retransmissions without progress before giving up."
    )
    tftp_max_blksize: int = Field(
        1468, ge=512, le=65464,
        description="Largest TFTP blksize granted; 1468 fits an Ethernet frame unfragmented.",
    )
    tftp_max_windowsize: int = Field(
        64, ge=1, le=65535, description="Largest TFTP windowsize (RFC 7440) granted."
    )
    tftp_max_transfers: int = Field(
        1000, ge=1,
        description="Concurrent TFTP transfers per worker; requests beyond go unanswered "
        "(the client retries), so a storm cannot exhaust file descriptors. When all are "
        "taken, a new request takes the slot of the oldest transfer whose client has not "
        "acknowledged anything yet.",
    )
    tftp_max_per_client: int = Field(32, ge=1, description="Concurrent TFTP transfers (and "
                                     "held requests) per client address and worker.")
    tftp_first_retries: int = Field(
        1, ge=0, le=100,
        description="Resends of the first answer (OACK or DATA 1) before the client's first "
        "ACK, every tftp_timeout at most whatever timeout it asked for: what a forged request "
        "can make the server send, and how long it holds a slot.",
    )


class _ServiceSettings(BaseModel):
    """The service: logs, monitoring, stopping."""

    log_file: str | None = Field(
        None,
        description="smart-proxy's :log_file:: a path, STDOUT, STDERR, SYSLOG or JOURNAL "
        "(JOURNALD); unset: standard error. A file is reopened on SIGUSR1 (logrotate).",
    )
    log_level: str = Field(
        "INFO", description="smart-proxy's :log_level:: DEBUG, INFO, WARN, ERROR or FATAL."
    )
    metrics: bool = Field(True, description="Serve Prometheus metrics on GET /metrics.")
    status_page: StatusPage = Field(
        StatusPage.TRUSTED,
        description="The HTML status page at / and /status: trusted (the access rules of "
        "/tftp/status: trusted_hosts, client certificates), open (anyone who reaches the "
        "listener) or off (404).",
    )
    drain_timeout: float = Field(
        20.0, ge=0,
        description="On SIGTERM, how long running TFTP transfers and fetches may finish "
        "before the rest are ended (s).",
    )

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        parse_level(value)
        return value.strip().upper()

    @field_validator("log_file")
    @classmethod
    def _check_log_file(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return value.upper() if value.upper() in SPECIAL_TARGETS else value


# Fields are listed in the reverse of this order (pydantic collects them base class first).
class PrefetchEntry(BaseModel):
    """A boot set to fetch at start and keep current: a prefix and its members' URLs, as
    Foreman sends them to fetch_boot_file."""

    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(min_length=1, description="The prefix, e.g. boot/centos-stream-9.")
    urls: list[str] = Field(min_length=1, description="The members' URLs (http, https, oci).")

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://", "oci://", "oci+http://")):
                raise ValueError(f"{url!r} is not an http://, https:// or oci:// URL")
        return value


class _SyncSettings(BaseModel):
    """Background revalidation (sync) and prefetch; times in seconds."""

    sync_interval: float = Field(4 * 3600.0, ge=0, description="Between background "
                                 "revalidations of each boot set in `serve`; 0: none.")
    sync_jitter: float = Field(0.1, ge=0, le=0.5, description="Each revalidation delay is "
                               "stretched or shrunk at random by up to this fraction.")
    sync_concurrency: int = Field(4, ge=1, le=64, description="Boot sets revalidated at once.")
    sync_host_concurrency: int = Field(2, ge=1, le=64, description="Boot sets revalidated at "
                                       "once from one upstream host.")
    sync_retry: float = Field(300.0, gt=0, description="Delay after a failed revalidation; "
                              "doubles with each further failure.")
    sync_backoff_max: float = Field(86400.0, gt=0, description="The longest such delay.")
    sync_idle_after: float = Field(7 * 86400.0, ge=0, description="A set no fetch_boot_file "
                                   "asked for in this long is idle; 0: never.")
    sync_idle_interval: float = Field(86400.0, ge=0, description="Between revalidations of an "
                                      "idle set; 0: idle sets are not revalidated.")
    prefetch: list[PrefetchEntry] = Field(default_factory=list, description="Boot sets `serve` "
                                          "fetches at start and keeps current: {prefix, urls}.")

    @model_validator(mode="after")
    def _check_sync(self) -> Self:
        if self.sync_backoff_max < self.sync_retry:
            raise ValueError("sync_backoff_max is shorter than sync_retry")
        if 0 < self.sync_idle_interval < self.sync_interval:
            raise ValueError("sync_idle_interval is shorter than sync_interval: idle sets would "
                             "be revalidated more often than sets in use")
        return self


class Settings(_ServiceSettings, _SyncSettings, _TftpSettings, _FetchSettings, _ApiSettings):
    """Every tftproxy setting, with smart-proxy's names where they exist."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
