"""The TFTP settings and command-line flags."""

from __future__ import annotations

import pytest

from tftproxy.assemble import tftp_config
from tftproxy.cli import build_parser
from tftproxy.errors import SettingsError
from tftproxy.settings.sources import load_settings
from tftproxy.tftp.udp import listen_address


def test_tftp_settings_defaults_and_env() -> None:
    settings = load_settings(environ={})
    assert settings.tftp_listen == [] and settings.tftp_workers == 1
    assert settings.refresh_hold == 10
    settings = load_settings(environ={"TFTPROXY_TFTP_LISTEN": "127.0.0.1:6969,[::1]:6969",
                                      "TFTPROXY_TFTP_WORKERS": "2"})
    assert settings.tftp_listen == ["127.0.0.1:6969", "[::1]:6969"]
    config = tftp_config(settings)
    assert config.refresh_hold == 10 and config.policy.max_blksize == 1468


@pytest.mark.parametrize("bad", ["1.2.3.4:99999", "::1:69", "[::1:69", "host:port"])
def test_bad_tftp_addresses_are_refused(bad: str) -> None:
    with pytest.raises(SettingsError, match="tftp_listen"):
        load_settings(environ={}, overrides={"tftp_listen": [bad]})


def test_listen_address_forms() -> None:
    assert listen_address("0.0.0.0") == ("0.0.0.0", 69)
    assert listen_address("*:6969") == ("0.0.0.0", 6969)
    assert listen_address("[::]:69") == ("::", 69)


def test_command_line() -> None:
    args = build_parser().parse_args(["serve", "--tftp-listen", "127.0.0.1:69",
                                      "--tftp-listen", "[::1]:69"])
    assert args.tftp_listen == ["127.0.0.1:69", "[::1]:69"]
    args = build_parser().parse_args(["tftpd", "--root", "/srv", "--listen", "0.0.0.0:69",
                                      "--workers", "2"])
    assert args.listen == ["0.0.0.0:69"] and args.workers == 2
