"""What the running ``tftproxy serve`` knows and the tree does not: its downloads in progress.

``tftproxy status`` reads the store directly, so it works with no service at all; but a
download lives in the memory of the process running it. So status asks the service's own
API, ``GET /tftp/status`` at the ``listen`` setting's address (a wildcard address asked on
loopback), briefly, and says plainly when it cannot: no HTTP listener configured, nothing
answering, or an answer that is not the API's (a 403 from ``trusted_hosts``: loopback is
not in it).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tftproxy._addr import format_hostport, parse_listen
from tftproxy.settings.model import Settings

TIMEOUT = 2.0
# Loopback only: the service is on this machine, and no proxy stands in between.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Downloads:
    """The running service's downloads, or why they are unknown (``jobs`` is None then)."""

    where: str | None
    jobs: list[dict[str, Any]] | None = None
    problem: str | None = None


def _address(settings: Settings) -> str | None:
    if not settings.http_enabled:
        return None
    host, port = parse_listen(settings.listen)[0]
    if host in (None, "0.0.0.0", "::", ""):
        host = "127.0.0.1" if host != "::" else "::1"
    return f"http://{format_hostport(host, port)}"


def running_downloads(settings: Settings, timeout: float = TIMEOUT) -> Downloads:
    base = _address(settings)
    if base is None:
        return Downloads(None, problem="the API has no plain-HTTP listener here "
                         "(http_enabled is false) to ask for the downloads in progress")
    url = base + "/tftp/status"
    try:
        with _DIRECT.open(url, timeout=timeout) as resp:
            data = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        reason = exc.read(300).decode("utf-8", "replace").strip() or exc.reason
        return Downloads(base, problem=f"{url} answered {exc.code}: {reason}")
    except (OSError, ValueError) as exc:
        why = getattr(exc, "reason", None) or exc
        text = getattr(why, "strerror", None) or str(why)
        return Downloads(base, problem=f"no tftproxy serve answered at {base} ({text})")
    if not isinstance(data, dict) or not isinstance(data.get("downloads"), list):
        return Downloads(base, problem=f"{url} is not tftproxy's status (no downloads list)")
    return Downloads(base, jobs=data["downloads"])
