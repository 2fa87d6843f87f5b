"""The HTTP fuzzers, against a running ``tftproxy serve``: schemathesis over every documented
operation, a fuzzer of fetch requests whose URLs all point at a loopback upstream, and
malformed framing and bodies over raw sockets on every route. No 5xx but a fetch's 502, no
crash, and the descriptors come back."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.upstream import Reply, Upstream, static
from tests.hostile.conftest import Served
from tests.hostile.figures import process_usage, record
from tests.hostile.rawhttp import exchange, request, statuses

ENV = {"TFTPROXY_FETCH_WAIT": "2", "TFTPROXY_STALL_TIMEOUT": "1", "TFTPROXY_RETRIES": "0",
       "TFTPROXY_HTTP_HEADER_TIMEOUT": "2", "TFTPROXY_TFTP_CONNECT_TIMEOUT": "1",
       "TFTPROXY_MAX_FILE_SIZE": "1048576"}
ROUTES = ["/features", "/version", "/v2/features", "/apidoc/openapi.json",
          "/tftp/fetch_boot_file", "/tftp/fetch_boot_file/0123456789abcdef", "/tftp/prune",
          "/tftp/status", "/tftp/serverName", "/tftp/create_default",
          "/tftp/pxegrub2/create_default", "/tftp/aa:bb:cc:dd:ee:ff",
          "/tftp/pxelinux/aa:bb:cc:dd:ee:ff", "/tftp/fetch_and_process", "/logs/",
          "/httpboot/pxelinux.0", "/EFI/pxelinux.0", "/nowhere"]


def _alive(served: Served) -> None:
    assert served.proc.poll() is None, served.log_text()[-3000:]
    with urllib.request.urlopen(f"{served.url}/features", timeout=10) as r:
        assert r.status == 200


def test_schemathesis_against_the_running_service(serve, root: Path, tmp_path: Path) -> None:
    served = serve(root, env=ENV)
    before = process_usage(served.proc.pid)
    st_bin = Path(sys.executable).with_name("st")
    done = subprocess.run(
        [str(st_bin), "run", f"{served.url}/apidoc/openapi.json", "--checks", "all",
         # Their generated URLs would make the proxy fetch from anywhere: fuzzed below instead
         # (fetch_boot_file also takes fetch_and_process's JSON).
         "--exclude-operation-id", "fetchBootFile", "--exclude-operation-id", "fetchAndProcess",
         "--max-examples", "20", "--seed", "1100",
         # One worker: CPython 3.11.7's ast module shares its recursion counter between
         # threads, and hypothesis parses lambda sources while building strategies; two
         # workers sometimes end in "AST constructor recursion depth mismatch".
         "--workers", "1", "--generation-database", "none", "--request-timeout", "10",
         "--no-color"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-5000:]
    generated = sum(int(n) for n in re.findall(r"(\d+) generated", report))
    _alive(served)
    after = process_usage(served.proc.pid)
    assert after["fds"] <= before["fds"] + 5
    record("schemathesis against tftproxy serve",
           operations="all but fetchBootFile, fetchAndProcess",
           cases=generated, server_errors=0, crashes=0, rss_kib_before=before["rss_kib"],
           rss_kib_after=after["rss_kib"], fds_before=before["fds"], fds_after=after["fds"])


PREFIXES = st.one_of(st.text(max_size=60), st.sampled_from(
    ["boot/a", "boot/a/", "/", "", ".", "..", "boot/..", "\\", "a\x00b", "boot/\ud800",
     "x" * 300, "/".join("d" * 40), ".tftproxy/x", "boot/\u202e", "%00", " "]))
PATHS = st.one_of(st.text(max_size=40), st.sampled_from(
    ["/vmlinuz", "/", "", "/..", "/a/../vmlinuz", "/vmlinuz?x=1#f", "/%00", "/%2e%2e",
     "/broken", "/slow", "/" + "v" * 300, "/\u00e9t\u00e9"]))
SCHEMES = st.sampled_from(["http://127.0.0.1:{port}", "http://localhost:{port}",
                           "http://[::1]:{port}", "https://127.0.0.1:{port}",
                           "ftp://127.0.0.1:1", "nfs://127.0.0.1:/export", "file://",
                           "gopher://127.0.0.1:{port}", "http://127.0.0.1:1", "", "http://"])


def test_a_fetch_fuzzer_over_loopback_urls(serve, root: Path, upstream: Upstream) -> None:
    upstream.routes["/vmlinuz"] = static(b"kernel " * 1000, etag='"k"')
    upstream.routes["/broken"] = lambda seen: Reply(body=b"x" * 10_000, cut_at=100)
    served = serve(root, env=ENV)
    port = int(served.url.rsplit(":", 1)[1])
    before = process_usage(served.proc.pid)
    seen: dict[int, int] = {}

    @settings(max_examples=200, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(PREFIXES, SCHEMES, PATHS, st.sampled_from(["form", "query", "json"]))
    def one(prefix: str, scheme: str, path: str, how: str) -> None:
        import json
        import urllib.parse

        url = scheme.format(port=upstream.port) + path
        params = {"prefix": prefix, "path": url}
        if how == "json":
            body = json.dumps(params).encode()
            raw = request("POST", "/tftp/fetch_boot_file", body,
                          {"Content-Type": "application/json"})
        elif how == "form":
            body = urllib.parse.urlencode(params, errors="surrogatepass").encode()
            raw = request("POST", "/tftp/fetch_boot_file", body,
                          {"Content-Type": "application/x-www-form-urlencoded"})
        else:
            query = urllib.parse.urlencode(params, errors="surrogatepass")
            raw = request("POST", f"/tftp/fetch_boot_file?{query}")
        codes = statuses(exchange(port, raw, timeout=15))
        assert len(codes) == 1, (params, codes)
        seen[codes[0]] = seen.get(codes[0], 0) + 1
        assert codes[0] < 500 or codes[0] == 502, (params, codes)

    one()
    first = process_usage(served.proc.pid)
    one()  # the same requests again: whatever the first round left open is a cache, or a leak
    _alive(served)
    after = process_usage(served.proc.pid)
    # Kept open on purpose: lock files (a cache of 256) and upstream connections (64).
    assert first["fds"] <= before["fds"] + 256 + 64 + 16, (before, first)
    assert after["fds"] <= first["fds"] + 5, (first, after)
    assert seen.get(200, 0) > 0 and seen.get(400, 0) > 0  # both kinds of answer were reached
    record("fetch_boot_file fuzzer (URLs on loopback)", requests=sum(seen.values()),
           statuses=dict(sorted(seen.items())), server_errors=0, crashes=0,
           fds_before=before["fds"], fds_after_round_1=first["fds"],
           fds_after_round_2=after["fds"], rss_kib_before=before["rss_kib"],
           rss_kib_after=after["rss_kib"])


def _framing(rng: random.Random) -> bytes:
    """A request that is broken in one of many ways, on one of the routes."""
    route = rng.choice(ROUTES)
    method = rng.choice(["GET", "POST", "DELETE", "HEAD", "PUT", "OPTIONS", "PATCH", "get",
                         "G\x00T", "CONNECT", "TRACE", "X" * 300])
    kind = rng.randrange(16)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
    if kind == 1:
        return f"{method} {route} HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n" \
               f"\r\nhello".encode()
    if kind == 2:
        return (f"POST {route} HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n"
                f"\r\n{rng.choice(['zz', '-1', 'ffffffffffffffffff', '5;x'])}\r\nhello\r\n0\r\n"
                f"\r\n").encode()
    if kind == 3:
        return f"{method} {route} HTTP/1.1\r\nX-Big: {'a' * rng.randrange(8000, 70000)}\r\n" \
               f"\r\n".encode()
    if kind == 4:
        return f"{method} {route} HTTP/1.1\r\n".encode() + b"X-H: v\r\n" * rng.randrange(
            100, 3000) + b"\r\n"
    if kind == 5:
        return b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    if kind == 6:
        return f"{method} {route}\r\n\r\n".encode()  # HTTP/0.9 style
    if kind == 7:
        return f"{method} {route} HTTP/9.9\r\nHost: x\r\n\r\n".encode()
    if kind == 8:
        return request("GET", route) * rng.randrange(2, 60)  # pipelined
    if kind == 9:
        ctype = rng.choice(["multipart/form-data; boundary=b", "multipart/form-data",
                            "application/json", "text/plain; charset=nope",
                            "application/x-www-form-urlencoded; charset=utf-16",
                            "application/xml"])
        body = rng.choice([b"--b\r\nContent-Disposition: form-data; name=pxeconfig\r\n\r\nx",
                           b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\""
                           b"\r\n\r\nxx\r\n--b--\r\n", b"\xff\xfe\x00", b"{\"a\":", b"a=%zz&b",
                           b"pxeconfig=" + b"x" * 2_000_000, b"[]", b"null", b"\"s\""])
        return request("POST", route, body, {"Content-Type": ctype})
    if kind == 10:
        return f"{method} {route} HTTP/1.1\r\nHost: x\r\n folded: yes\r\n\r\n".encode()
    if kind == 11:
        return f"{method} {route}?{'&'.join('a' * 50 for _ in range(2000))} HTTP/1.1\r\n\r\n" \
            .encode()
    if kind == 12:
        return f"{method} {route} HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: " \
               f"99999999999999999999\r\n\r\n".encode()
    if kind == 13:
        return f"{method} /{'%' * rng.randrange(1, 50)}{route} HTTP/1.1\r\n\r\n".encode()
    if kind == 14:
        return f"{method} {route} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc".encode()
    return request(method if method.isalpha() else "GET", route + rng.choice(
        ["", "/", "/..", "?%ff", "?a=%00", "#x", "%00", "/%2e%2e/%2e%2e/etc/passwd"]))


def test_malformed_framing_and_bodies_on_every_route(serve, root: Path) -> None:
    served = serve(root, env=ENV)
    port = int(served.url.rsplit(":", 1)[1])
    before = process_usage(served.proc.pid)
    rng = random.Random(2024)
    requests = [_framing(rng) for _ in range(600)]
    # Sixteen at a time: some wait for a body that never comes (the server's timeouts end them).
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda raw: statuses(exchange(port, raw, timeout=4)), requests))
    count = len(replies)
    server_errors = sum(1 for codes in replies for c in codes if c >= 500 and c != 502)
    assert sum(1 for codes in replies if codes) > count * 0.9  # nearly all were answered
    _alive(served)
    after = process_usage(served.proc.pid)
    assert server_errors == 0
    assert after["fds"] <= before["fds"] + 5
    assert "Traceback" not in served.log_text()
    record("malformed HTTP framing and bodies (raw sockets)", requests=count, server_errors=0,
           crashes=0, rss_kib_before=before["rss_kib"], rss_kib_after=after["rss_kib"],
           fds_before=before["fds"], fds_after=after["fds"])
