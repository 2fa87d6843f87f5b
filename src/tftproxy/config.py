"""Settings: one validated model for every part of tftproxy.

Names follow smart-proxy's settings where one exists (``tftproot``, ``tftp_connect_timeout``,
``verify_server_cert``...), so an admin's knowledge and files carry over. Values come, lowest
first, from the defaults here, a YAML file (``--config``) and ``TFTPROXY_<KEY>`` environment
variables; command-line flags are applied last by the CLI.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "TFTPROXY_"


class RefreshMode(StrEnum):
    # hide: the proposal's behaviour; a host put in build mode waits for the new files instead of
    # booting stale ones. keep: the old version stays served until the new one replaces it.
    HIDE = "hide"
    KEEP = "keep"


class SettingsError(ValueError):
    """A setting has a wrong type or value; the message names the key and where it came from."""


def parse_hostport(value: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6) into its parts, with a clear error."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep:
            raise ValueError(f"bad address {value!r}: missing ']'")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif text.count(":") > 1:
        raise ValueError(f"bad address {value!r}: write IPv6 addresses as [ADDR]:PORT")
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"bad address {value!r}: expected HOST:PORT")
        return host or "127.0.0.1", default_port
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad address {value!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"bad address {value!r}: port {port} is out of range")
    return host or "127.0.0.1", port


class Settings(BaseModel):
    """Every tftproxy setting, with smart-proxy's names where they exist."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- smart-proxy's tftp module ---
    tftproot: Path = Field(Path("/var/lib/tftpboot"), description="The TFTP root (published tree).")
    tftp_servername: str | None = Field(None, description="Answer of GET /tftp/serverName.")
    tftp_connect_timeout: float = Field(10.0, gt=0, description="Upstream connect timeout (s).")
    verify_server_cert: bool = Field(True, description="Verify upstream TLS certificates.")

    # --- the HTTP API ---
    listen: str = Field("127.0.0.1:8000", description="HOST:PORT of the HTTP API.")

    # --- fetching ---
    fetch_wait: float = Field(
        30.0, ge=0, description="How long POST /tftp/fetch_boot_file waits before answering 202."
    )
    stall_timeout: float = Field(30.0, gt=0, description="Fail when no byte arrives for this long.")
    fetch_timeout: float = Field(3600.0, gt=0, description="Total time limit of one download (s).")
    max_redirects: int = Field(10, ge=0, description="Redirects followed before giving up.")
    retries: int = Field(3, ge=0, description="Retries on connection errors and 5xx.")
    retry_backoff: float = Field(1.0, ge=0, description="First retry delay (s); doubles each try.")
    ca_bundle: Path | None = Field(None, description="Extra CA bundle for upstream TLS.")
    http_proxy: str | None = Field(None, description="Proxy URL for upstream requests.")
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
        600.0, ge=0, description="How long a finished fetch job stays visible at its status URL (s)."
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_hostport(value)
        return value

    @field_validator("http_proxy")
    @classmethod
    def _check_proxy(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value or None


def _coerce_env(raw: str) -> Any:
    # YAML scalars give env values the same typing rules as the file ("true", "10", "[a, b]").
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _format_errors(exc: ValidationError, origin: dict[str, str]) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(settings)"
        where = origin.get(str(err["loc"][0]) if err["loc"] else "", "defaults")
        lines.append(f"setting {key!r} from {where}: {err['msg']}")
    return "; ".join(lines)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; smart-proxy writes keys as ``:key:``, which we accept too."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SettingsError(f"settings file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path} must hold a mapping of keys to values")
    return {str(k).lstrip(":"): v for k, v in data.items()}


def load_settings(
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the effective settings: defaults < config file < environment < overrides."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if config_file is not None:
        for key, val in read_yaml(config_file).items():
            values[key] = val
            origin[key] = str(config_file)
    env = os.environ if environ is None else environ
    fields = Settings.model_fields
    for name in fields:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _coerce_env(raw)
            origin[name] = f"environment variable {ENV_PREFIX}{name.upper()}"
    for key, val in (overrides or {}).items():
        if val is not None:
            values[key] = val
            origin[key] = "command line"
    unknown = sorted(set(values) - set(fields))
    if unknown:
        where = ", ".join(f"{k!r} ({origin.get(k, '?')})" for k in unknown)
        raise SettingsError(f"unknown setting(s): {where}")
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise SettingsError(_format_errors(exc, origin)) from None
