"""Settings: a smart-proxy settings directory, tftproxy's YAML, the environment, and refusals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import tftproxy
from tests.api.certs import Pki
from tests.api.conftest import curl
from tftproxy.errors import SettingsError
from tftproxy.settings.model import FeatureMode
from tftproxy.settings.sources import load, load_settings

# As foreman-installer writes them: keys with the leading colon.
SETTINGS_YML = """\
---
:settings_directory: {dir}/settings.d
:ssl_ca_file: ssl/ca.pem
:ssl_certificate: ssl/cert.pem
:ssl_private_key: ssl/key.pem
:trusted_hosts:
  - Foreman.Example.Test
:foreman_url: https://foreman.example.test
:daemon: true
:bind_host: ['*']
:https_port: 9443
:http_port: 9000
:log_file: /var/log/foreman-proxy/proxy.log
:log_level: INFO
"""
TFTP_YML = """\
---
:enabled: https
:tftproot: /srv/tftpboot
:tftp_servername: tftp.example.test
:tftp_connect_timeout: 15
:verify_server_cert: false
"""


@pytest.fixture
def sp_dir(tmp_path: Path, pki: Pki) -> Path:
    d = tmp_path / "foreman-proxy"
    (d / "settings.d").mkdir(parents=True)
    (d / "ssl").mkdir()
    for src, name in ((pki.ca.cert, "ca.pem"), (pki.server.cert, "cert.pem"),
                      (pki.server.key, "key.pem")):
        (d / "ssl" / name).write_bytes(src.read_bytes())
    (d / "settings.yml").write_text(SETTINGS_YML.format(dir=d))
    (d / "settings.d/tftp.yml").write_text(TFTP_YML)
    return d


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_smart_proxy_directory_is_honoured(sp_dir: Path) -> None:
    loaded = load(settings_dir=sp_dir, environ={})
    s = loaded.settings
    assert s.tftproot == Path("/srv/tftpboot")
    assert s.tftp_servername == "tftp.example.test"
    assert s.tftp_connect_timeout == 15
    assert s.verify_server_cert is False
    assert s.feature_enabled is FeatureMode.HTTPS
    assert s.http_enabled
    assert s.listen == "*:9000"
    assert s.https_listen == "*:9443"
    assert s.https_enabled
    assert s.ssl_certificate == sp_dir / "ssl/cert.pem"  # relative to the directory
    assert s.trusted_hosts == ["foreman.example.test"]
    assert s.forward_verify is True
    assert loaded.warnings == []  # foreman_url, log_file...: known, unused, not warned about
    tftp_yml = str(sp_dir / "settings.d/tftp.yml")
    assert loaded.origin["tftproot"] == tftp_yml
    assert loaded.origin["feature_enabled"] == f"{tftp_yml} (key enabled)"
    assert loaded.origin["listen"] == f"{sp_dir / 'settings.yml'} (bind_host, http_port)"
    assert loaded.origin["fetch_wait"] == "default"


def test_keys_without_colons_bind_hosts_and_no_http_port(tmp_path: Path) -> None:
    d = tmp_path / "sp"
    write(d / "settings.yml", "bind_host: [127.0.0.1, '::1']\nhttps_port: 8443\n"
                              "http_port: 8000\n")
    write(d / "settings.d/tftp.yml", "enabled: true\ntftproot: tftpboot\n")
    s = load(settings_dir=d, environ={}).settings
    assert s.listen == "127.0.0.1:8000,[::1]:8000"
    assert s.tftproot == d / "settings.d/tftpboot"
    assert s.feature_enabled is FeatureMode.ON
    # Without http_port smart-proxy serves no HTTP; with no TLS either, nothing is left.
    write(d / "settings.yml", "bind_host: localhost\n")
    with pytest.raises(SettingsError, match=r"no API listener is left \(http_enabled from "
                                            r".*settings.yml \(no http_port"):
        load(settings_dir=d, environ={})


def test_missing_tftp_yml_and_unknown_keys_are_warned_about(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    d = tmp_path / "sp"
    write(d / "settings.yml", ":http_port: 8000\n:http_prot: 8001\n")
    loaded = load(settings_dir=d, environ={"TFTPROXY_FETCH_WIAT": "1"})
    assert loaded.warnings == [
        f"unknown setting 'http_prot' in {d / 'settings.yml'}: ignored",
        f"{d / 'settings.d/tftp.yml'} not found: the tftp module keeps tftproxy's defaults",
        "environment variable TFTPROXY_FETCH_WIAT names no setting: ignored",
    ]
    write(d / "settings.d/tftp.yml", ":enabled: true\n:tftp_root: /srv\n")
    cfg = write(tmp_path / "tftproxy.yml", "fetch_wait: 5\nfetch_wiat: 6\n")
    with caplog.at_level("WARNING"):
        s = load_settings(cfg, settings_dir=d, environ={})
    assert s.fetch_wait == 5
    assert f"unknown setting 'tftp_root' in {d / 'settings.d/tftp.yml'}: ignored" in caplog.text
    assert f"unknown setting 'fetch_wiat' in {cfg}: ignored" in caplog.text


def test_layers_settings_dir_config_environment_command_line(sp_dir: Path,
                                                             tmp_path: Path) -> None:
    cfg = write(tmp_path / "tftproxy.yml",
                "tftp_servername: from-config\ntftp_connect_timeout: 20\nfetch_wait: 7\n")
    env = {"TFTPROXY_TFTP_CONNECT_TIMEOUT": "25", "TFTPROXY_TRUSTED_HOSTS": "a.test, B.test",
           "TFTPROXY_TFTP_SERVERNAME": "010"}
    loaded = load(sp_dir, cfg, {"tftp_connect_timeout": 30, "fetch_wait": None}, env)
    s = loaded.settings
    assert s.tftp_servername == "010"  # stays text: a server name, not a number
    assert s.tftp_connect_timeout == 30
    assert s.fetch_wait == 7
    assert s.trusted_hosts == ["a.test", "b.test"]
    assert s.tftproot == Path("/srv/tftpboot")
    assert loaded.origin["tftp_connect_timeout"] == "command line"
    assert loaded.origin["fetch_wait"] == str(cfg)
    assert loaded.origin["trusted_hosts"] == "environment variable TFTPROXY_TRUSTED_HOSTS"


BAD_SETTINGS_YML = [
    (":http_port: eighty\n", "setting 'http_port' in {main}: must be a port number"),
    (":http_port: 0\n", "setting 'http_port' in {main}: must be a port number"),
    (":http_port: 70000\n", "setting 'http_port' in {main}: must be a port number"),
    (":http_port: true\n", "setting 'http_port' in {main}: must be a port number"),
    (":http_port: 8000\n:https_port: '8443'\n", "setting 'https_port' in {main}"),
    (":http_port: 8000\n:bind_host: 5\n", "setting 'bind_host' in {main}"),
    (":http_port: 8000\n:bind_host: []\n", "setting 'bind_host' in {main}"),
    (":http_port: 8000\n:trusted_hosts: foreman.example.test\n",
     "setting 'trusted_hosts' from {main}: Input should be a valid list"),
    (":http_port: 8000\n:forward_verify: maybe\n",
     "setting 'forward_verify' from {main}: Input should be a valid boolean"),
    (":http_port: 8000\n:ssl_certificate: /nonexistent/cert.pem\n",
     "setting 'ssl_certificate' from {main}: Path does not point to a file"),
    (":http_port: 8000\n:tls_disabled_versions: ['1.0']\n",
     "setting 'tls_disabled_versions' from {main}: unknown TLS version(s) 1.0"),
    ("- a list\n", "settings file {main} must hold a mapping"),
    (":http_port: [\n", "settings file {main} is not valid YAML"),
]
BAD_TFTP_YML = [
    (":enabled: sometimes\n", "setting 'feature_enabled' from {tftp} (key enabled): Input "
                              "should be 'true', 'false', 'http' or 'https'"),
    (":enabled: https\n", "settings: feature_enabled is https but HTTPS is not configured"),
    (":tftp_connect_timeout: soon\n", "setting 'tftp_connect_timeout' from {tftp}: Input "
                                      "should be a valid number"),
    (":tftp_connect_timeout: -1\n", "setting 'tftp_connect_timeout' from {tftp}: Input "
                                    "should be greater than 0"),
    (":verify_server_cert: perhaps\n", "setting 'verify_server_cert' from {tftp}"),
    (":tftproot: [a, b]\n", "setting 'tftproot' from {tftp}"),
    (":tftp_servername: [a]\n", "setting 'tftp_servername' from {tftp}"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SETTINGS_YML)
def test_bad_settings_yml_is_refused_naming_key_and_file(tmp_path: Path, text: str,
                                                         message: str) -> None:
    main = write(tmp_path / "settings.yml", text)
    with pytest.raises(SettingsError) as info:
        load(settings_dir=tmp_path, environ={})
    assert message.format(main=main) in str(info.value)


@pytest.mark.parametrize(("text", "message"), BAD_TFTP_YML)
def test_bad_tftp_yml_is_refused_naming_key_and_file(tmp_path: Path, text: str,
                                                     message: str) -> None:
    write(tmp_path / "settings.yml", ":http_port: 8000\n")
    tftp = write(tmp_path / "settings.d/tftp.yml", text)
    with pytest.raises(SettingsError) as info:
        load(settings_dir=tmp_path, environ={})
    assert message.format(tftp=tftp) in str(info.value)


def test_missing_settings_yml(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"no settings\.yml in it"):
        load(settings_dir=tmp_path, environ={})


@pytest.mark.parametrize(("text", "message"), [
    ("listen: nowhere:port\n", "setting 'listen' from {cfg}: bad address"),
    ("listen: '1.2.3.4:80,'\n", "setting 'listen' from {cfg}: bad address list"),
    ("http_enabled: false\n", "no API listener is left (http_enabled from {cfg})"),
    ("ssl_certificate: {cert}\n", "ssl_private_key, ssl_ca_file must be set too"),
    ("fetch_wait: [1]\n", "setting 'fetch_wait' from {cfg}: Input should be a valid number"),
    ("tls_disabled_versions: ['1.2', '1.3']\n", "disables every TLS version"),
    ("feature_enabled: http\nhttp_enabled: false\n", "no API listener is left"),
    ("prefetch:\n- prefix: boot/c9\n", "setting 'prefetch.0.urls' from {cfg}: Field required"),
    ("prefetch:\n- prefix: boot/c9\n  urls: ['ftp://m/vmlinuz']\n",
     "setting 'prefetch.0.urls' from {cfg}: 'ftp://m/vmlinuz' is not an http://, https:// or "
     "oci:// URL"),
    ("prefetch:\n- prefix: ''\n  urls: ['http://m/vmlinuz']\n",
     "setting 'prefetch.0.prefix' from {cfg}: String should have at least 1 character"),
    ("sync_interval: 3600\nsync_idle_interval: 600\n",
     "sync_idle_interval is shorter than sync_interval"),
    ("sync_retry: 600\nsync_backoff_max: 60\n", "sync_backoff_max is shorter than sync_retry"),
    ("sync_jitter: 2\n", "setting 'sync_jitter' from {cfg}: Input should be less than or equal"),
])
def test_bad_config_file_is_refused(tmp_path: Path, pki: Pki, text: str, message: str) -> None:
    cfg = write(tmp_path / "tftproxy.yml", text.format(cert=pki.server.cert))
    with pytest.raises(SettingsError) as info:
        load(config_file=cfg, environ={})
    assert message.format(cfg=cfg) in str(info.value)


PREFETCH_YML = """\
prefetch:
  - prefix: boot/centos-stream-9
    urls:
      - http://mirror.example.test/9-stream/BaseOS/x86_64/os/images/pxeboot/vmlinuz
      - http://mirror.example.test/9-stream/BaseOS/x86_64/os/images/pxeboot/initrd.img
sync_interval: 7200
"""


def test_the_prefetch_list_and_sync_schedule_in_the_yaml(tmp_path: Path) -> None:
    from tftproxy import assemble

    cfg = write(tmp_path / "tftproxy.yml", PREFETCH_YML)
    loaded = load(config_file=cfg, environ={})
    options = assemble.sync_options(loaded.settings)
    [entry] = options.prefetch
    assert entry.prefix == "boot/centos-stream-9"
    assert entry.urls[1].endswith("/images/pxeboot/initrd.img")
    assert (options.interval, options.jitter, options.concurrency) == (7200, 0.1, 4)
    assert loaded.origin["prefetch"] == str(cfg)
    env = load(environ={"TFTPROXY_PREFETCH": "[{prefix: boot/x, urls: ['https://m/vmlinuz']}]",
                        "TFTPROXY_SYNC_INTERVAL": "0"}).settings
    assert env.prefetch[0].urls == ["https://m/vmlinuz"] and env.sync_interval == 0


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="setting 'retries' from environment variable "
                                            "TFTPROXY_RETRIES: Input should be a valid integer"):
        load(environ={"TFTPROXY_RETRIES": "many"})


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TFTPROXY_")}
    return subprocess.run([sys.executable, "-m", "tftproxy", *args], capture_output=True,
                          text=True, timeout=60, env={**clean, **(env or {})})


def test_config_command_prints_values_and_sources(sp_dir: Path) -> None:
    res = run_cli("config", "--settings-dir", str(sp_dir), "--root", "/tmp/elsewhere",
                  env={"TFTPROXY_RETRIES": "5"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert f"tftp_servername: tftp.example.test  # {sp_dir}/settings.d/tftp.yml" in lines
    assert "tftproot: /tmp/elsewhere  # command line" in lines
    assert "retries: 5  # environment variable TFTPROXY_RETRIES" in lines
    assert "fetch_wait: 45.0  # default" in lines
    assert f"feature_enabled: https  # {sp_dir}/settings.d/tftp.yml (key enabled)" in lines
    res = run_cli("config", "--settings-dir", str(sp_dir), "--json")
    data = json.loads(res.stdout)
    assert data["trusted_hosts"] == {"value": ["foreman.example.test"],
                                     "from": str(sp_dir / "settings.yml")}


def test_config_command_refuses_bad_settings(tmp_path: Path) -> None:
    main = write(tmp_path / "settings.yml", ":http_port: 8000\n:forward_verify: maybe\n")
    res = run_cli("config", "--settings-dir", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.startswith(f"tftproxy: setting 'forward_verify' from {main}: ")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_with_a_settings_directory(tmp_path: Path, pki: Pki) -> None:
    """``tftproxy serve --settings-dir`` as a process: both listeners, TLS, the root."""
    http_port, https_port = free_port(), free_port()
    d = tmp_path / "sp"
    root = tmp_path / "tftpboot"
    root.mkdir()
    write(d / "settings.yml", f":bind_host: 127.0.0.1\n:http_port: {http_port}\n"
                              f":https_port: {https_port}\n:ssl_certificate: {pki.server.cert}\n"
                              f":ssl_private_key: {pki.server.key}\n:ssl_ca_file: {pki.ca.cert}\n")
    write(d / "settings.d/tftp.yml", f":enabled: true\n:tftproot: {root}\n"
                                     f":tftp_servername: tftp.example.test\n")
    write(d / "settings.d/httpboot.yml", ":enabled: false\n:root_dir: /var/lib/tftpboot\n")
    write(d / "settings.d/logs.yml", ":enabled: https\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TFTPROXY_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tftproxy", "serve", "--settings-dir", str(d), env=clean,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(100):
            r = await curl(f"http://127.0.0.1:{http_port}/features")
            if r.status == 200:
                break
            assert proc.returncode is None, "tftproxy serve exited early"
            await asyncio.sleep(0.1)
        assert json.loads(r.body) == ["logs", "tftp"]
        r = await curl(f"http://127.0.0.1:{http_port}/logs/")
        assert r.status == 404, "logs is enabled over https only"
        tls = ["--cacert", str(pki.ca.cert), "--cert", str(pki.trusted.cert),
               "--key", str(pki.trusted.key)]
        r = await curl(f"https://127.0.0.1:{https_port}/logs/", *tls)
        assert r.status == 200
        assert any(rec["message"].startswith(f"tftproxy {tftproxy.__version__} starting")
                   for rec in json.loads(r.body)["logs"])
        r = await curl(f"https://127.0.0.1:{https_port}/v2/features", *tls)
        assert json.loads(r.body)["httpboot"] == {
            "http_enabled": False, "https_enabled": False, "state": "disabled",
            "settings": {"http_port": None, "https_port": None}, "capabilities": []}
        r = await curl(f"https://127.0.0.1:{https_port}/tftp/pxelinux/aa:bb:cc:dd:ee:ff", *tls,
                       "--data", "pxeconfig=served")
        assert (r.status, r.body) == (200, "")
        assert (root / "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff").read_text() == "served"
        r = await curl(f"https://127.0.0.1:{https_port}/tftp/serverName", "--cacert",
                       str(pki.ca.cert))
        assert r.status == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()


def test_archive_settings_of_smart_proxy_pr_958_are_accepted(tmp_path: Path) -> None:
    """tftp_download_max_time is the total time of one download (fetch_timeout); preflight
    HEADs an archive's source before its first download."""
    from tftproxy import assemble

    d = tmp_path / "sp"
    write(d / "settings.yml", "http_port: 8000\n")
    write(d / "settings.d/tftp.yml", ":tftp_download_max_time: 120\n"
                                     ":tftp_http_download_preflight: false\n")
    loaded = load(settings_dir=d, environ={})
    assert loaded.settings.fetch_timeout == 120
    assert loaded.origin["fetch_timeout"].endswith("(key tftp_download_max_time)")
    assert assemble.fetch_options(loaded.settings).total_timeout == 120
    assert assemble.job_options(loaded.settings).preflight is False
    write(d / "settings.d/tftp.yml", ":tftp_http_download_preflight: maybe\n")
    with pytest.raises(SettingsError, match="tftp_http_download_preflight"):
        load(settings_dir=d, environ={})
