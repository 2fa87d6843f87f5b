"""Where settings come from: smart-proxy's settings directory, tftproxy's YAML, the environment.

Layers, lowest first: defaults, a smart-proxy settings directory (``--settings-dir``), tftproxy's
own YAML (``--config``), ``TFTPROXY_<KEY>`` environment variables, command-line flags. Every value
remembers its source, so an error names the key and the file it came from and ``tftproxy config``
can say where each effective value was set.

A smart-proxy directory is read as smart-proxy reads it: ``settings.yml`` for the listeners and
their security, ``settings.d/tftp.yml`` for the module; keys may be written ``:key:``. Its
listener keys are translated to tftproxy's: ``bind_host`` with ``http_port`` becomes ``listen``
(HTTP is off without ``http_port``, as in smart-proxy), with ``https_port`` ``https_listen``.
"""

from __future__ import annotations

import logging
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tftproxy._addr import join_addresses
from tftproxy.errors import SettingsError
from tftproxy.settings.model import Settings

log = logging.getLogger(__name__)

DEFAULT = "default"
ENV_PREFIX = "TFTPROXY_"

# smart-proxy's global keys that tftproxy takes over unchanged.
_GLOBAL_PASSTHROUGH = (
    "ssl_certificate", "ssl_private_key", "ssl_ca_file", "ssl_disabled_ciphers",
    "tls_disabled_versions", "trusted_hosts", "forward_verify",
)
# smart-proxy's global keys that mean nothing to tftproxy: noted, not warned about.
_GLOBAL_UNUSED = frozenset({
    "settings_directory", "foreman_url", "foreman_ssl_ca", "foreman_ssl_cert", "foreman_ssl_key",
    "log_file", "log_level", "file_rolling_keep", "file_rolling_size", "file_rolling_age",
    "file_logging_pattern", "system_logging_pattern", "log_buffer", "log_buffer_errors",
    "daemon", "daemon_pid", "dns_resolv_timeouts", "virsh_network", "puppet_version",
    "registered_name", "registered_proxy_url", "bmc_default_provider",
})
# settings.d/tftp.yml: smart-proxy's key -> tftproxy's.
_TFTP_KEYS = {
    "enabled": "feature_enabled",
    "tftproot": "tftproot",
    "tftp_servername": "tftp_servername",
    "tftp_connect_timeout": "tftp_connect_timeout",
    "verify_server_cert": "verify_server_cert",
    # smart-proxy PR #958's archive settings.
    "tftp_download_max_time": "fetch_timeout",
    "tftp_http_download_preflight": "tftp_http_download_preflight",
}


@dataclass
class Layer:
    """Values from one source, keyed by tftproxy setting, each with where it came from."""

    values: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def set(self, key: str, value: Any, where: str) -> None:
        self.values[key] = value
        self.origin[key] = where


@dataclass(frozen=True)
class LoadedSettings:
    """The effective settings, the source of every value, and what deserved a warning."""

    settings: Settings
    origin: dict[str, str]
    warnings: list[str]


# ------------------------------------------------------------------------ field types

def _field_types(name: str) -> set[type]:
    """The plain types a field accepts (``FilePath | None`` -> {Path, NoneType})."""
    ann = Settings.model_fields[name].annotation
    found: set[type] = set()
    stack: list[Any] = [ann]
    while stack:
        t = stack.pop()
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            stack.append(typing.get_args(t)[0])
        elif origin in (typing.Union, types.UnionType):
            stack.extend(typing.get_args(t))
        elif origin is not None:
            found.add(origin)
        elif isinstance(t, type):
            found.add(Path if issubclass(t, Path) else t)
    return found


def _resolve_paths(values: dict[str, Any], base: Path) -> None:
    # A relative path in a settings file means relative to that file, not to the cwd of
    # whoever started the service.
    for key, val in values.items():
        if (key in Settings.model_fields and Path in _field_types(key)
                and isinstance(val, str) and val and not os.path.isabs(val)):
            values[key] = str(base / val)


# ---------------------------------------------------------------- smart-proxy's files

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



def _port(value: Any, key: str, where: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise SettingsError(f"setting {key!r} in {where}: must be a port number (1-65535), "
                            f"not {value!r}")
    return value


def _hosts(value: Any, where: Path) -> list[str]:
    hosts = [value] if isinstance(value, str) else value
    if (not isinstance(hosts, list) or not hosts
            or not all(isinstance(h, str) and h.strip() for h in hosts)):
        raise SettingsError(f"setting 'bind_host' in {where}: must be a host name or a list of "
                            f"them (* for every address), not {value!r}")
    return [h.strip() for h in hosts]


def read_settings_dir(directory: Path) -> Layer:
    """Translate a smart-proxy settings directory into tftproxy settings."""
    layer = Layer()
    main = directory / "settings.yml"
    if not main.is_file():
        raise SettingsError(f"settings directory {directory}: no settings.yml in it")
    data = read_yaml(main)
    where = str(main)

    sub_dir = directory / "settings.d"
    if isinstance(data.get("settings_directory"), str):
        sub_dir = directory / data["settings_directory"]

    hosts = _hosts(data.get("bind_host", ["*"]), main)
    bind_note = "bind_host, " if "bind_host" in data else ""
    if data.get("http_port") is not None:
        layer.set("listen", join_addresses(hosts, _port(data["http_port"], "http_port", main)),
                  f"{where} ({bind_note}http_port)")
        layer.set("http_enabled", True, f"{where} (http_port)")
    else:
        layer.set("http_enabled", False, f"{where} (no http_port: HTTP off, as in smart-proxy)")
    https_port = _port(data.get("https_port", 8443), "https_port", main)
    port_note = "https_port" if "https_port" in data else "smart-proxy's default https_port"
    layer.set("https_listen", join_addresses(hosts, https_port),
              f"{where} ({bind_note}{port_note})")

    for key, val in data.items():
        if key in _GLOBAL_PASSTHROUGH:
            layer.set(key, val, where)
        elif key not in _GLOBAL_UNUSED | {"bind_host", "http_port", "https_port"}:
            layer.warnings.append(f"unknown setting {key!r} in {main}: ignored")
    _resolve_paths(layer.values, directory)

    tftp = sub_dir / "tftp.yml"
    if not tftp.is_file():
        layer.warnings.append(f"{tftp} not found: the tftp module keeps tftproxy's defaults")
        return layer
    module = read_yaml(tftp)
    module_values: dict[str, Any] = {}
    for key, val in module.items():
        if key in _TFTP_KEYS:
            module_values[_TFTP_KEYS[key]] = val
            suffix = f" (key {key})" if _TFTP_KEYS[key] != key else ""
            layer.origin[_TFTP_KEYS[key]] = f"{tftp}{suffix}"
        else:
            layer.warnings.append(f"unknown setting {key!r} in {tftp}: ignored")
    _resolve_paths(module_values, sub_dir)
    layer.values.update(module_values)
    return layer


# ------------------------------------------------------------------- tftproxy's file

def read_config_file(path: Path) -> Layer:
    """tftproxy's own YAML: any setting by its name; unknown keys are warned about."""
    layer = Layer()
    for key, val in read_yaml(path).items():
        if key in Settings.model_fields:
            layer.set(key, val, str(path))
        else:
            layer.warnings.append(f"unknown setting {key!r} in {path}: ignored")
    _resolve_paths(layer.values, path.parent)
    return layer


# ------------------------------------------------------------------------ environment

def _coerce_env(name: str, raw: str) -> Any:
    kinds = _field_types(name)
    if kinds & {str, Path} and not kinds & {list, bool, int, float}:
        return raw  # "010" or "true" as a server name stays text
    try:
        value = yaml.safe_load(raw)  # the same typing rules as the file: "true", "10", "[a]"
    except yaml.YAMLError:
        return raw
    if list in kinds and isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if value is None and list in kinds:
        return []
    return value


def read_environment(environ: Mapping[str, str]) -> Layer:
    """``TFTPROXY_<KEY>`` for every setting; a misspelt variable is warned about."""
    layer = Layer()
    for var, raw in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        name = var[len(ENV_PREFIX):].lower()
        if name in Settings.model_fields:
            layer.set(name, _coerce_env(name, raw), f"environment variable {var}")
        else:
            layer.warnings.append(f"environment variable {var} names no setting: ignored")
    return layer


# ---------------------------------------------------------------------------- layers

def _format_errors(exc: ValidationError, origin: dict[str, str]) -> str:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if loc:
            where = origin.get(loc[0], DEFAULT)
            shown = repr(err.get("input"))
            value = f" (got {shown})" if len(shown) <= 80 else ""
            lines.append(f"setting {'.'.join(loc)!r} from {where}: {msg}{value}")
        else:
            # A rule across settings: say where each setting it names was set.
            named = [k for k in Settings.model_fields
                     if k in origin and re.search(rf"\b{k}\b", msg)]
            src = "; ".join(f"{k} from {origin[k]}" for k in named)
            lines.append(f"settings: {msg}" + (f" ({src})" if src else ""))
    return "; ".join(lines)


def load(
    settings_dir: Path | None = None,
    config_file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Build the effective settings from every layer, lowest first."""
    layers: list[Layer] = []
    if settings_dir is not None:
        layers.append(read_settings_dir(settings_dir))
    if config_file is not None:
        layers.append(read_config_file(config_file))
    layers.append(read_environment(os.environ if environ is None else environ))
    cli = Layer()
    for key, val in (overrides or {}).items():
        if key not in Settings.model_fields:
            raise SettingsError(f"unknown setting {key!r} (command line)")
        if val is not None:
            cli.set(key, val, "command line")
    layers.append(cli)

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    warnings: list[str] = []
    for layer in layers:
        values.update(layer.values)
        origin.update(layer.origin)
        warnings.extend(layer.warnings)
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise SettingsError(_format_errors(exc, origin)) from None
    full = {name: origin.get(name, DEFAULT) for name in Settings.model_fields}
    return LoadedSettings(settings, full, warnings)


def render(loaded: LoadedSettings) -> str:
    """The effective settings as tftproxy YAML, each line commented with its source."""
    data = loaded.settings.model_dump(mode="json")
    lines = ["# tftproxy's effective settings; each comment says where the value was set."]
    for name, value in data.items():
        text = yaml.safe_dump({name: value}, default_flow_style=True, width=10_000).strip()
        lines.append(f"{text[1:-1]}  # {loaded.origin[name]}")
    return "\n".join(lines) + "\n"


def load_settings(
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    settings_dir: Path | None = None,
) -> Settings:
    """The effective settings: defaults < settings dir < config file < environment < overrides.

    Warnings (unknown keys...) go to the log; :func:`load` gives them to the caller instead.
    """
    loaded = load(settings_dir, config_file, overrides, environ)
    for warning in loaded.warnings:
        log.warning("%s", warning)
    return loaded.settings
