"""What an admin installs: the license, the wheel's metadata, the shipped unit and example."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import yaml

from tftproxy.cli.admin import data_file
from tftproxy.settings.model import Settings
from tftproxy.settings.sources import load

HERE = Path(__file__).resolve().parent.parent


def test_license_matches_pyproject() -> None:
    project = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    assert project["license"] == "GPL-3.0-or-later"
    text = (HERE / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    meta = metadata.metadata("tftproxy")
    assert meta["License-Expression"] == "GPL-3.0-or-later"
    assert meta["Summary"] and meta["Requires-Python"] == ">=3.11"
    assert "Topic :: System :: Boot" in meta.get_all("Classifier")
    requires = " ".join(meta.get_all("Requires-Dist"))
    assert "prometheus-client" in requires and "aiohttp" in requires


def test_the_example_configuration_names_every_setting_and_loads(tmp_path: Path) -> None:
    example = data_file("tftproxy.yml")
    for name in Settings.model_fields:
        assert f"#{name}:" in example or f"\n{name}:" in example, name
    path = tmp_path / "tftproxy.yml"
    path.write_text(example)
    loaded = load(config_file=path, environ={})
    assert loaded.warnings == []
    active = yaml.safe_load(example)
    assert {k: loaded.origin[k] for k in active} == dict.fromkeys(active, str(path))
    assert loaded.settings.tftp_listen == ["0.0.0.0:69"]
    assert loaded.settings.log_file == "JOURNAL"


def test_the_unit_asks_for_port_69_and_nothing_more() -> None:
    unit = data_file("tftproxy.service")
    lines = set(unit.splitlines())
    for wanted in ("Type=notify", "User=foreman-proxy", "NoNewPrivileges=yes",
                   "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                   "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "ProtectSystem=strict",
                   "ReadWritePaths=/var/lib/tftpboot", "PrivateTmp=yes", "ProtectHome=yes",
                   "Restart=on-failure", "WatchdogSec=30", "ExecReload=/bin/kill -HUP $MAINPID"):
        assert wanted in lines, wanted
