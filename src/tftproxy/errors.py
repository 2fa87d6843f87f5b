"""Every error tftproxy raises on purpose, under one root.

``str()`` of each is a one-line reason fit to show an admin (Foreman's error dialog, a log
line, the CLI). The classes say what kind of failure it is; which HTTP status answers it is
the API's decision (:mod:`tftproxy.api.responses` holds the one table), never the error's.

    TftproxyError
    ├── InputError                 the caller asked for something malformed
    │   ├── SettingsError          a setting has a wrong type or value
    │   ├── NameRefused            a destination the store will not publish
    │   ├── UnsupportedSource      a URL whose scheme tftproxy does not fetch
    │   ├── BadSource              a source URL of a fetched scheme that is malformed
    │   ├── BadParameters          request parameters that cannot be read
    │   │   ├── BodyTooLarge
    │   │   └── UnsupportedMediaType
    │   ├── PxeInputError          a PXE-config request that cannot be carried out
    │   │   ├── InvalidMac
    │   │   └── UnknownVariant
    │   └── PacketError            a TFTP datagram that is not a valid packet
    ├── Refused                    asks for what is not served, or by whom it is not allowed
    │   └── Untrusted              a caller outside trusted_hosts / without a certificate
    ├── Conflict                   the request does not fit what is published (yet)
    ├── NotFound                   what was asked for does not exist
    │   ├── ConfigNotFound
    │   └── JobNotFound
    ├── LocalFailure               this machine's disk or tftproxy's own state failed
    │   └── RecordUnreadable       a record written by a newer tftproxy, or damaged
    └── UpstreamError              a download failed; the last good version is kept
        ├── ManifestError          a checksum manifest that cannot be read
        └── VerificationError      a download that does not match its manifest
"""

from __future__ import annotations


class TftproxyError(Exception):
    """The root of every error tftproxy raises on purpose."""


class InputError(TftproxyError):
    """The request (or a setting) is malformed; the message names what is wrong."""


class SettingsError(InputError):
    """A setting has a wrong type or value; the message names the key and where it came from."""


class NameRefused(InputError):
    """A destination the store will not publish; the message says why."""


class UnsupportedSource(InputError):
    """A URL whose scheme tftproxy does not fetch."""


class BadSource(InputError):
    """A source URL of a scheme tftproxy fetches, written wrongly (an OCI reference that breaks
    the distribution grammar, a title that is not a file name); the message names the part."""


class BadParameters(InputError):
    """Request parameters that cannot be read (bad encoding, a file where text was expected)."""


class BodyTooLarge(BadParameters):
    """A request body over the API's limit."""


class UnsupportedMediaType(BadParameters):
    """A request body in a format or charset the API does not read."""


class PxeInputError(InputError):
    """A PXE-config request that cannot be carried out (smart-proxy answers these with 400)."""


class InvalidMac(PxeInputError):
    """Not a MAC address (smart-proxy answers ``403 Invalid MAC address: <mac>``)."""


class UnknownVariant(PxeInputError):
    """Not a PXE variant (smart-proxy answers ``403 Unrecognized pxeboot config type``)."""


class PacketError(InputError):
    """A TFTP datagram that is not a valid packet."""


class Refused(TftproxyError):
    """A client asked to read something outside what the tree serves, or may not ask."""


class Untrusted(Refused):
    """The caller may not use the route; the message is smart-proxy's 403 text."""


class Conflict(TftproxyError):
    """The request does not fit the published state: a bootloader universe that is missing,
    does not match the source the caller names, or is being fetched right now."""


class NotFound(TftproxyError):
    """What was asked for does not exist."""


class ConfigNotFound(NotFound):
    """A PXE config that is not there."""


class JobNotFound(NotFound):
    """A fetch job id that is unknown or has expired."""


class LocalFailure(TftproxyError):
    """This machine's disk or tftproxy's own state failed; the message says what and where."""


class RecordUnreadable(LocalFailure, ValueError):
    """A record that cannot be read: damaged, or written by a newer tftproxy."""


class UpstreamError(TftproxyError):
    """A download failed; ``str()`` is a one-line reason fit for Foreman's error dialog.

    ``retryable`` marks what may succeed on a second attempt (connection errors, 5xx);
    ``local`` marks a failure of this machine (disk full) rather than of the upstream.
    """

    def __init__(self, reason: str, *, retryable: bool = False, local: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.local = local


class ManifestError(UpstreamError):
    """A manifest could not be fetched, or what was fetched is not a manifest."""


class VerificationError(UpstreamError):
    """A downloaded file does not match its manifest, or ``require`` found nothing to check.

    Not retryable: a syncing mirror does not settle within the fetcher's backoff; the operator
    tries again later.
    """


def printable(text: str, limit: int = 80) -> str:
    """``text`` made safe to echo in an error: control characters escaped, length capped."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")
