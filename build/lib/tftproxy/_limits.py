"""Process limits a server raises for itself."""

from __future__ import annotations

import contextlib
import resource


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit on open descriptors towards ``wanted`` (never above the hard
    limit, never lowering it); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
