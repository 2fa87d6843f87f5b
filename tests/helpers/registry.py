"""A real OCI registry on loopback: Debian's docker-registry (the CNCF distribution server).

Plain HTTP, TLS, htpasswd (Basic) or token auth, with the token service written here
(:class:`TokenIssuer`: nothing in Debian provides one). Artifacts are pushed with the ORAS
project's Python client (``oras``), as the Fedora netboot artifacts are laid out: one layer
per file, ``application/x-netboot-file``, named by ``org.opencontainers.image.title``, in a
manifest of ``artifactType`` ``application/vnd.org.pulpproject.netboot.artifact.v1``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import json
import re
import secrets
import shutil
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import oras.oci
import oras.provider
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from tests.helpers.nginx import free_port, stop_process, wait_listening

NETBOOT_ARTIFACT = "application/vnd.org.pulpproject.netboot.artifact.v1"
NETBOOT_FILE = "application/x-netboot-file"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
TITLE = "org.opencontainers.image.title"

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d+)')


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


class TokenIssuer:
    """The token service of distribution's token auth: JWTs signed RS256 with a key made here.

    ``users`` may pull and push; anyone else gets pull when ``anonymous_pull``, else a token
    granting nothing (the registry then answers insufficient_scope). Wrong credentials: 401.
    """

    service = "tftproxy-test-registry"
    issuer = "tftproxy-test-issuer"

    def __init__(self, base: Path, users: dict[str, str] | None = None, *,
                 anonymous_pull: bool = True, tls: tuple[Path, Path] | None = None,
                 lifetime: int = 300) -> None:
        base.mkdir(parents=True, exist_ok=True)
        self.users = users or {}
        self.anonymous_pull = anonymous_pull
        self.lifetime = lifetime
        self.issued: list[tuple[str | None, list[str]]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tftproxy test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .sign(self._key, hashes.SHA256()))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.cert = base / "token-signer.crt"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                status, body = issuer._answer(self.headers.get("Authorization"),
                                              query.get("scope", []))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.scheme = "http"
        if tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(tls[0]), str(tls[1]))
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = _serve(self._server)

    @property
    def realm(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/token"

    def _answer(self, authorization: str | None,
                scopes: list[str]) -> tuple[int, dict[str, Any]]:
        user = None
        if authorization:
            kind, _, raw = authorization.partition(" ")
            name, _, password = base64.b64decode(raw).decode().partition(":")
            if kind.lower() != "basic" or self.users.get(name) != password:
                return 401, {"details": "wrong user name or password"}
            user = name
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repo, _, _actions = rest.rpartition(":")
            if user is not None:
                # oras keeps its first token: grant push with pull, so one token does both.
                access.append({"type": kind, "name": repo, "actions": ["pull", "push"]})
            elif self.anonymous_pull:
                access.append({"type": kind, "name": repo, "actions": ["pull"]})
        self.issued.append((user, scopes))
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp":
                  now + self.lifetime, "nbf": now - 10, "iat": now,
                  "jti": secrets.token_hex(8), "access": access}
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = (f"{_b64url(json.dumps(header).encode())}."
                         f"{_b64url(json.dumps(claims).encode())}")
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing_input}.{_b64url(signature)}"
        return 200, {"token": token, "access_token": token, "expires_in": self.lifetime,
                     "issued_at": datetime.datetime.now(datetime.UTC).isoformat()}

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Registry:
    """``docker-registry serve`` on a loopback port, its storage and access log in ``base``."""

    def __init__(self, base: Path, *, tls: tuple[Path, Path, Path] | None = None,
                 htpasswd: dict[str, str] | None = None,
                 token: TokenIssuer | None = None) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise RuntimeError("docker-registry not found: run scripts/system-deps "
                               "(Debian package docker-registry)")
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.ca = tls[0] if tls else None
        self._opener = _DIRECT if tls is None else urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(
                context=ssl.create_default_context(cafile=str(tls[0]))))
        self.scheme = "https" if tls else "http"
        http = [f"  addr: {self.host}", "  secret: test-only"]
        if tls:
            http += ["  tls:", f"    certificate: {tls[1]}", f"    key: {tls[2]}"]
        auth: list[str] = []
        if htpasswd:
            lines = [subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                                    capture_output=True, text=True).stdout.strip()
                     for user, password in htpasswd.items()]
            (base / "htpasswd").write_text("\n".join(lines) + "\n")
            auth = ["auth:", "  htpasswd:", "    realm: tftproxy-test",
                    f"    path: {base / 'htpasswd'}"]
        elif token is not None:
            auth = ["auth:", "  token:", f"    realm: {token.realm}",
                    f"    service: {token.service}", f"    issuer: {token.issuer}",
                    f"    rootcertbundle: {token.cert}"]
        config = base / "config.yml"
        config.write_text("\n".join([
            "version: 0.1",
            "log: {level: warn, accesslog: {disabled: false}}",
            "storage:",
            f"  filesystem: {{rootdirectory: {base / 'data'}}}",
            "  delete: {enabled: true}",
            "  maintenance: {uploadpurging: {enabled: false}}",
            "http:", *http, *auth, ""]))
        self.access_log = base / "access.log"
        self._log = self.access_log.open("wb")
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=self._log,
                                     stderr=subprocess.PIPE)
        wait_listening(self.proc, self.port, "docker-registry")

    def url(self, repo_ref: str, title: str | None = None) -> str:
        """The oci URL tftproxy fetches: ``oci://host/<repo_ref>#<title>``."""
        scheme = "oci" if self.scheme == "https" else "oci+http"
        return f"{scheme}://{self.host}/{repo_ref}" + (f"#{title}" if title else "")

    def _entries(self) -> list[tuple[str, str, int]]:
        out = []
        for line in self.access_log.read_text(errors="replace").splitlines():
            m = _LOG_LINE.search(line)
            if m:
                out.append((m["method"], m["path"], int(m["status"])))
        return out

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request so far, once those made before are logged.

        The registry logs a request after answering it; a request made now that shows up in
        the log means the earlier ones, answered before it was sent, are there too.
        """
        marker = f"/v2/settle-{secrets.token_hex(4)}/tags/list"
        with contextlib.suppress(urllib.error.URLError, OSError):
            self._opener.open(f"{self.scheme}://{self.host}{marker}", timeout=5).close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            entries = self._entries()
            for i, (_, path, _) in enumerate(entries):
                if path == marker:
                    return [e for e in entries[:i] + entries[i + 1:]
                            if not e[1].startswith("/v2/settle-")]
            time.sleep(0.01)
        raise AssertionError("the registry did not log the settling request within 5 s")

    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (a test may corrupt them)."""
        hexdigest = digest.removeprefix("sha256:")
        return (self.base / "data/docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest
                / "data")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


class Pusher:
    """Pushes netboot artifacts with oras-py, the ORAS project's Python client."""

    def __init__(self, registry: Registry, work: Path, credentials: tuple[str, str] | None = None,
                 *, basic: bool = False) -> None:
        self.registry = registry
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.client = oras.provider.Registry(
            hostname=registry.host, insecure=registry.scheme == "http",
            tls_verify=str(registry.ca) if registry.ca else True,
            auth_backend="basic" if basic else "token")
        self.client.session.trust_env = False  # loopback only, whatever proxy is set
        if credentials:
            self.client.auth.set_basic_auth(*credentials)

    def _blob(self, repo: str, data: bytes, media_type: str,
              annotations: dict[str, str] | None = None) -> dict[str, Any]:
        path = self.work / hashlib.sha256(data).hexdigest()
        path.write_bytes(data)
        layer = oras.oci.NewLayer(str(path), media_type=media_type)
        if annotations:
            layer["annotations"] = annotations
        response = self.client.upload_blob(str(path), f"{self.registry.host}/{repo}", layer)
        assert response.status_code in (200, 201, 202), response.text
        return layer

    def push(self, repo: str, tag: str, files: dict[str, bytes],
             media_type: str = NETBOOT_FILE) -> str:
        """Push ``files`` as one netboot artifact tagged ``tag``; returns its manifest digest."""
        layers = [self._blob(repo, data, media_type, {TITLE: name})
                  for name, data in files.items()]
        config = self._blob(repo, b"{}", EMPTY_CONFIG)
        config.pop("annotations", None)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "artifactType": NETBOOT_ARTIFACT, "config": config, "layers": layers,
                    "annotations": {"org.pulpproject.netboot.version": "1"}}
        container = self.client.get_container(f"{self.registry.host}/{repo}:{tag}")
        response = self.client.upload_manifest(manifest, container)
        assert response.status_code == 201, response.text
        return str(response.headers["Docker-Content-Digest"])

    def push_index(self, repo: str, tag: str, entries: dict[str, str]) -> str:
        """An image index tagged ``tag`` of manifests already pushed: {architecture: digest}."""
        manifests = []
        for arch, digest in entries.items():
            body = self.client.do_request(
                f"{self.client.prefix}://{self.registry.host}/v2/{repo}/manifests/{digest}",
                "GET", headers={"Accept": OCI_MANIFEST})
            assert body.status_code == 200, body.text
            manifests.append({"mediaType": OCI_MANIFEST, "digest": digest,
                              "size": len(body.content), "artifactType": NETBOOT_ARTIFACT,
                              "platform": {"architecture": arch, "os": "linux"}})
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
                            "annotations": {"org.pulpproject.netboot.version": "1"}}).encode()
        response = self.client.do_request(
            f"{self.client.prefix}://{self.registry.host}/v2/{repo}/manifests/{tag}", "PUT",
            data=index, headers={"Content-Type": OCI_INDEX})
        assert response.status_code == 201, response.text
        return str(response.headers["Docker-Content-Digest"])

