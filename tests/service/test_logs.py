"""Logs where smart-proxy's settings say: a file reopened on SIGUSR1 (logrotate), the journal
and syslog (a real systemd-journald in a private mount namespace), levels, the access log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.nginx import free_port
from tests.helpers.service import Serve
from tests.tftp.clients import curl_get, free_udp_port, publish, wait_for
from tftproxy.store import BootStore

JOURNALD = "/lib/systemd/systemd-journald"


def test_log_file_from_smart_proxy_settings_reopens_on_sigusr1(tmp_path: Path,
                                                               store: BootStore) -> None:
    data = os.urandom(40_000)
    publish(store, "boot/kernel", data)
    log = tmp_path / "log" / "proxy.log"
    log.parent.mkdir()
    sp = tmp_path / "foreman-proxy"
    (sp / "settings.d").mkdir(parents=True)
    # smart-proxy's own keys, as its settings.yml spells them.
    (sp / "settings.yml").write_text(f":log_file: {log}\n:log_level: DEBUG\n"
                                     f":bind_host: 127.0.0.1\n:http_port: 8000\n")
    (sp / "settings.d" / "tftp.yml").write_text(f":tftproot: {store.root}\n")
    served = Serve(tmp_path / "svc", store.root, args=("--settings-dir", str(sp)))
    try:
        assert served.tftp_port is not None
        assert curl_get(served.tftp_port, "boot/kernel", tmp_path / "a").returncode == 0
        # The worker's transfer line, at the level settings.yml asked for (DEBUG is on).
        assert wait_for(lambda: "'boot/kernel' octet" in log.read_text())
        assert " DEBUG " in log.read_text()
        rotated = log.with_name("proxy.log.1")
        os.rename(log, rotated)  # what logrotate does before its postrotate
        served.send(signal.SIGUSR1)
        assert wait_for(lambda: log.exists() and "log file reopened" in log.read_text())
        assert curl_get(served.tftp_port, "boot/kernel", tmp_path / "b").returncode == 0
        # The worker process reopened too: its line is in the new file, not the old one.
        assert wait_for(lambda: "'boot/kernel' octet" in log.read_text())
        assert rotated.read_text().count("'boot/kernel' octet") == 1
    finally:
        served.stop()


def test_log_level_flag_beats_the_settings(tmp_path: Path, store: BootStore) -> None:
    log = tmp_path / "tftproxy.log"
    served = Serve(tmp_path / "svc", store.root, {"log_file": str(log), "log_level": "DEBUG"},
                   args=("--log-level", "WARN"))
    try:
        assert served.get("/features")[0] == 200
        served.post("/tftp/fetch_boot_file", {"prefix": "boot/x", "path": "ftp://m/vmlinuz"})
    finally:
        served.stop()
    text = log.read_text()
    assert " INFO " not in text and " DEBUG " not in text
    bad = subprocess.run([sys.executable, "-m", "tftproxy", "status", "--log-level", "LOUD"],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown log level 'LOUD'" in bad.stderr


def test_access_log_counts_the_bytes_sent(tmp_path: Path, store: BootStore) -> None:
    data = os.urandom(300_001)
    publish(store, "boot/kernel", data)
    log = tmp_path / "tftproxy.log"
    served = Serve(tmp_path / "svc", store.root, {"log_file": str(log)}, tftp=False)
    try:
        status, _ = served.get("/httpboot/boot/kernel")
        assert status == 200
        _, features = served.get("/features")
        _, missing = served.get("/httpboot/missing")
    finally:
        served.stop()
    lines = [ln for ln in log.read_text().splitlines() if "tftproxy.access" in ln]
    sent = {ln.split('"')[1].split()[1]: int(ln.split('"')[2].split()[1]) for ln in lines}
    assert sent["/httpboot/boot/kernel"] == len(data)  # sent with sendfile()
    assert sent["/features"] == len(features.encode())  # a JSON body
    assert missing and sent["/httpboot/missing"] == len(missing.encode())  # an error body


# An entry over the datagram limit goes to the journal in a sealed memfd.
_BIG_ENTRY = ("import logging; from tftproxy.logs import JournalHandler, fields; "
              "h = JournalHandler(); r = logging.LogRecord('tftproxy.big', 30, 'x', 1, "
              "'big ' + 'x' * 400000, None, None); r.tftproxy_fields = dict(file='f'); "
              "h.emit(r)")


def _journal_script(work: Path, command: str, syslog: bool) -> str:
    dev = ""
    if syslog:
        # /dev/log inside the namespace only: a tmpfs /dev with the few nodes Python uses.
        dev = textwrap.dedent(f"""
            mkdir -p {work}/realdev && mount --bind /dev {work}/realdev
            mount -t tmpfs tmpfs /dev
            for n in null zero urandom random; do
              touch /dev/$n; mount --bind {work}/realdev/$n /dev/$n
            done
            ln -s /run/systemd/journal/dev-log /dev/log
        """)
    return textwrap.dedent(f"""
        set -e
        mount -t tmpfs tmpfs /run
        mkdir -p /run/systemd/journal /run/log/journal
        {JOURNALD} &
        for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
        {dev}
        {command}
        sleep 0.5
        journalctl -D /run/log/journal -o json --all --no-pager SYSLOG_IDENTIFIER=tftproxy \\
          > {work}/journal.json
        kill %1
    """)


def _in_journal_namespace(tmp_path: Path, store: BootStore, log_file: str,
                          syslog: bool) -> list[dict[str, str]]:
    if os.geteuid() != 0 or not os.path.exists(JOURNALD):
        pytest.fail("needs root and systemd-journald (Debian package systemd)")
    data = os.urandom(20_000)
    publish(store, "boot/kernel", data)
    api, tftp = free_port(), free_udp_port()
    config = tmp_path / "tftproxy.yml"
    config.write_text(f"tftproot: {store.root}\nlisten: 127.0.0.1:{api}\n"
                      f"tftp_listen: ['127.0.0.1:{tftp}']\nlog_file: {log_file}\n"
                      f"min_free_space: 0\nretries: 0\n")
    curl = shutil.which("curl")
    command = textwrap.dedent(f"""
        {sys.executable} -m tftproxy serve --config {config} 2> {tmp_path}/stderr &
        for i in $(seq 200); do
          {curl} -s -o /dev/null http://127.0.0.1:{api}/features && break; sleep 0.05
        done
        {curl} -s -o {tmp_path}/got tftp://127.0.0.1:{tftp}/boot/kernel
        {curl} -s -o /dev/null -d prefix=boot/x -d path=http://127.0.0.1:1/vmlinuz \\
          http://127.0.0.1:{api}/tftp/fetch_boot_file || true
        kill -TERM %2; wait %2
        {sys.executable} -c "{_BIG_ENTRY}"
    """)
    script = tmp_path / "journal.sh"
    script.write_text(_journal_script(tmp_path, command, syslog))
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash",
                           str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + (tmp_path / "stderr").read_text()
    assert (tmp_path / "got").read_bytes() == data
    return [json.loads(line) for line in (tmp_path / "journal.json").read_text().splitlines()]


def test_journal_entries_carry_priorities_and_fields(tmp_path: Path, store: BootStore) -> None:
    entries = _in_journal_namespace(tmp_path, store, "JOURNAL", syslog=False)
    transfer = next(e for e in entries if "'boot/kernel' octet" in e["MESSAGE"])
    assert transfer["PRIORITY"] == "6"
    assert transfer["FILE"] == "boot/kernel" and transfer["BYTES"] == "20000"
    assert transfer["CLIENT"].startswith("127.0.0.1:") and transfer["OUTCOME"] == "complete"
    assert transfer["LOGGER"] == "tftproxy.tftp" and transfer["SYSLOG_FACILITY"] == "21"
    failed = next(e for e in entries
                  if "Failed to fetch boot file: http://127.0.0.1:1/vmlinuz" in e["MESSAGE"])
    assert failed["PRIORITY"] == "3" and failed["FILE"] == "boot/x-vmlinuz"
    access = next(e for e in entries if e.get("PATH") == "/tftp/fetch_boot_file")
    assert access["STATUS"] == "502" and int(access["BYTES"]) > 0
    # The workers' entries come from their own processes.
    assert len({e["_PID"] for e in entries}) >= 2
    big = next(e for e in entries if e.get("LOGGER") == "tftproxy.big")
    assert len(big["MESSAGE"]) == 400_004 and big["PRIORITY"] == "4" and big["FILE"] == "f"


def test_syslog_reaches_the_system_logger(tmp_path: Path, store: BootStore) -> None:
    entries = _in_journal_namespace(tmp_path, store, "SYSLOG", syslog=True)
    transfer = next(e for e in entries if "'boot/kernel' octet" in e["MESSAGE"])
    assert transfer["_TRANSPORT"] == "syslog"
    assert transfer["PRIORITY"] == "6" and transfer["SYSLOG_FACILITY"] == "21"  # LOCAL5
    failed = next(e for e in entries
                  if "Failed to fetch boot file: http://127.0.0.1:1/vmlinuz" in e["MESSAGE"])
    assert failed["PRIORITY"] == "3"
