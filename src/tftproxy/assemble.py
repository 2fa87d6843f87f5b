"""Where settings meet the parts: every part built from the settings in one place.

Inside, no part reads :class:`~tftproxy.settings.Settings`: each takes its own options, made
here, so that the store, the fetcher, the jobs and the TFTP server can be used (and tested)
without the settings model, and a setting's meaning is decided once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tftproxy.fetch.options import FetchOptions
from tftproxy.jobs.options import JobOptions, PrefetchSet, SyncOptions
from tftproxy.logs import LogConfig, parse_level
from tftproxy.settings.model import FOREMAN_RELEASE, Settings, is_version
from tftproxy.store import BootStore
from tftproxy.store.aio import AsyncStore
from tftproxy.store.layout import Layout
from tftproxy.store.serving import ServedTree
from tftproxy.tftp.protocol import Policy
from tftproxy.tftp.server import ServerConfig
from tftproxy.tftp.workers import TftpHandle

if TYPE_CHECKING:
    from tftproxy.fetch.results import FetchObserver
    from tftproxy.fetch.schemes import Fetchers
    from tftproxy.jobs.bootfiles import BootFiles
    from tftproxy.metrics import Metrics


# Where the foreman-proxy packages (deb and rpm) install smart-proxy's VERSION file.
SMART_PROXY_VERSION_FILE = Path("/usr/share/foreman-proxy/VERSION")


def smart_proxy_version(settings: Settings,
                        version_file: Path = SMART_PROXY_VERSION_FILE) -> tuple[str, str]:
    """The version to report to Foreman as smart-proxy's, and where it came from.

    Foreman warns unless the proxy reports its own major.minor (or the next minor); a
    smart-proxy installed beside tftproxy was upgraded with Foreman, so its version is the
    one an admin expects. The setting wins; then that file; then the release tftproxy was
    checked against.
    """
    if settings.smart_proxy_version is not None:
        return settings.smart_proxy_version, "the smart_proxy_version setting"
    try:
        text = version_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    if is_version(text):
        return text, str(version_file)
    return FOREMAN_RELEASE, f"tftproxy's default (Foreman {FOREMAN_RELEASE})"


def fetch_options(settings: Settings) -> FetchOptions:
    return FetchOptions(
        connect_timeout=settings.tftp_connect_timeout,
        stall_timeout=settings.stall_timeout,
        min_rate=settings.min_rate,
        rate_window=settings.rate_window,
        total_timeout=settings.fetch_timeout,
        max_redirects=settings.max_redirects,
        retries=settings.retries,
        retry_backoff=settings.retry_backoff,
        verify_server_cert=settings.verify_server_cert,
        ca_bundle=settings.ca_bundle,
        http_proxy=settings.http_proxy,
        max_file_size=settings.max_file_size,
        oci_auth_file=settings.oci_auth_file,
    )


def job_options(settings: Settings) -> JobOptions:
    return JobOptions(refresh_mode=settings.refresh_mode, min_free_space=settings.min_free_space,
                      verify=settings.verify, job_retention=settings.job_retention,
                      fresh_for=settings.fresh_for,
                      max_unpacked_size=settings.max_unpacked_size,
                      preflight=settings.tftp_http_download_preflight)


def sync_options(settings: Settings) -> SyncOptions:
    return SyncOptions(
        interval=settings.sync_interval, jitter=settings.sync_jitter,
        concurrency=settings.sync_concurrency, host_concurrency=settings.sync_host_concurrency,
        retry=settings.sync_retry, backoff_max=settings.sync_backoff_max,
        idle_after=settings.sync_idle_after, idle_interval=settings.sync_idle_interval,
        prefetch=tuple(PrefetchSet(p.prefix, tuple(p.urls)) for p in settings.prefetch),
    )


def tftp_config(settings: Settings) -> ServerConfig:
    return ServerConfig(
        policy=Policy(max_blksize=settings.tftp_max_blksize,
                      max_windowsize=settings.tftp_max_windowsize,
                      timeout=settings.tftp_timeout, retries=settings.tftp_retries,
                      first_retries=settings.tftp_first_retries,
                      first_timeout=settings.tftp_timeout),
        refresh_hold=settings.refresh_hold,
        max_transfers=settings.tftp_max_transfers,
        max_per_client=settings.tftp_max_per_client,
        metrics=settings.metrics,
    )


def log_config(settings: Settings) -> LogConfig:
    return LogConfig(settings.log_file, parse_level(settings.log_level))


def store(settings: Settings, *, create: bool = True) -> BootStore:
    """The store of the TFTP root; ``create`` makes its directories if they are missing."""
    return BootStore(settings.tftproot, create=create, pin_window=settings.pin_window)


def httpboot_tree(settings: Settings) -> ServedTree | None:
    """The tree HTTP boot serves when ``httpboot_root_dir`` is not the TFTP root, else None
    (the store's own serving face, with its holds and pins)."""
    root = settings.httpboot_root_dir
    if root is None or os.path.realpath(root) == os.path.realpath(settings.tftproot):
        return None
    return ServedTree(Layout.at(root), pin_window=0)


def served_tree(settings: Settings) -> ServedTree:
    """The serving face alone, for a TFTP server beside a store another process writes."""
    return ServedTree(Layout.at(settings.tftproot), settings.pin_window)


def fetcher(settings: Settings, observer: FetchObserver | None = None) -> Fetchers:
    # Imported here: `tftproxy tftpd` serves TFTP from its own process and never needs the
    # HTTP client (nor its memory).
    from tftproxy.fetch.schemes import Fetchers

    return Fetchers(fetch_options(settings), observer)


def boot_files(settings: Settings, tree: BootStore | None = None,
               metrics: Metrics | None = None) -> BootFiles:
    """The fetch service, over ``tree`` (or the store of the settings' root); ``metrics``
    observes its fetches."""
    from tftproxy.jobs.bootfiles import BootFiles

    files = BootFiles(AsyncStore(tree or store(settings)), fetcher(settings, metrics),
                      job_options(settings), metrics, sync_options(settings))
    if metrics is not None:
        files.store.on_collect = metrics.collected
    return files


def start_tftp(settings: Settings, tree: ServedTree) -> TftpHandle:
    """Serve ``tree`` over TFTP on ``tftp_listen`` in worker processes.

    Returns once the addresses are bound (raises OSError if one cannot be); the workers
    answer from then on. ``handle.close()`` stops them.
    """
    return TftpHandle(tree, settings.tftp_listen, settings.tftp_workers, tftp_config(settings),
                      log_config=log_config(settings))
