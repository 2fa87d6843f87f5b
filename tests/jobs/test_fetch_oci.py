"""Boot files from a real OCI registry (Debian's docker-registry), pushed with oras-py.

What is proved here: the name is prefix-TITLE; an unchanged digest costs one request and
changes nothing; a layer the store holds is not downloaded again; a respin switches the whole
release in one generation, recorded whole; a layer is checked against its digest and size as
it streams; a reference by digest is pinned; errors name what is wrong.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.registry import Pusher, Registry
from tftproxy.jobs.status import status_report

REPO = "fedora/netboot"
K1, I1, S1 = os.urandom(300_000), os.urandom(700_000), os.urandom(90_000)
K2, I2 = os.urandom(310_000), os.urandom(710_000)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    server = Registry(tmp_path / "registry")
    yield server
    server.stop()


@pytest.fixture
def pusher(registry: Registry, tmp_path: Path) -> Pusher:
    return Pusher(registry, tmp_path / "push")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def new_requests(registry: Registry, before: int) -> list[tuple[str, str, int]]:
    return registry.requests()[before:]


async def fetch_all(proxy, registry: Registry, prefix: str, ref: str,
                    titles: tuple[str, ...]) -> list[dict]:
    out = []
    for title in titles:
        status, _, body = await proxy.fetch_boot_file(prefix, registry.url(ref, title))
        assert status == 200, body
        out.append(body)
    return out


async def test_a_release_is_published_and_an_unchanged_digest_costs_one_request(
        api, registry: Registry, pusher: Pusher, root: Path) -> None:
    digest = pusher.push(REPO, "40-amd64", {"vmlinuz": K1, "initrd.img": I1,
                                            "shimx64.efi": S1})
    # verify=require: an OCI layer is verified by construction, no .treeinfo needed.
    proxy = await api(verify="require")
    kernel, initrd = await fetch_all(proxy, registry, "boot/fedora-40", f"{REPO}:40-amd64",
                                     ("vmlinuz", "initrd.img"))
    assert (kernel["name"], kernel["status"], kernel["sha256"]) == (
        "boot/fedora-40-vmlinuz", "published", sha(K1))
    assert kernel["final_url"] == f"oci+http://{registry.host}/{REPO}@{digest}#vmlinuz"
    assert (initrd["name"], initrd["generation"]) == ("boot/fedora-40-initrd.img", 2)
    assert (root / "boot/fedora-40-vmlinuz").read_bytes() == K1
    assert (root / "boot/fedora-40-initrd.img").read_bytes() == I1
    links = {n: os.readlink(root / n) for n in ("boot/fedora-40-vmlinuz",
                                                "boot/fedora-40-initrd.img")}

    before = len(registry.requests())
    status, _, body = await proxy.fetch_boot_file("boot/fedora-40",
                                                  registry.url(f"{REPO}:40-amd64", "vmlinuz"))
    assert (status, body["status"], body["generation"]) == (200, "unchanged", 2)
    assert new_requests(registry, before) == [("HEAD", f"/v2/{REPO}/manifests/40-amd64", 200)]
    assert {n: os.readlink(root / n) for n in links} == links

    report = await proxy.files.store.call(status_report)
    [entry] = [f for f in report["files"] if f["name"] == "boot/fedora-40-vmlinuz"]
    cur = entry["current"]
    assert (cur["manifest_digest"], cur["layer_digest"]) == (digest, f"sha256:{sha(K1)}")
    assert cur["verified"] == f"sha256 is the layer's digest in manifest {digest}"


async def test_a_respin_switches_the_release_together_and_reuses_stored_layers(
        api, registry: Registry, pusher: Pusher, root: Path) -> None:
    titles = ("vmlinuz", "initrd.img", "shimx64.efi")
    pusher.push(REPO, "40-amd64", {"vmlinuz": K1, "initrd.img": I1, "shimx64.efi": S1})
    proxy = await api()
    await fetch_all(proxy, registry, "boot/f40", f"{REPO}:40-amd64", titles)
    # The respin keeps the kernel and shim and rebuilds the initrd.
    respun = pusher.push(REPO, "40-amd64", {"vmlinuz": K1, "initrd.img": I2, "shimx64.efi": S1})
    before = len(registry.requests())
    # Foreman asks for the kernel, whose bytes did not change: the moved tag still takes the
    # whole set to the new manifest, at once.
    status, _, body = await proxy.fetch_boot_file("boot/f40",
                                                  registry.url(f"{REPO}:40-amd64", "vmlinuz"))
    assert (status, body["status"], body["generation"]) == (200, "unchanged", 4)
    assert (root / "boot/f40-initrd.img").read_bytes() == I2
    assert (root / "boot/f40-vmlinuz").read_bytes() == K1
    # One resolution for the set, one manifest, one blob: the initrd's. The kernel and shim
    # are in the store under their digests.
    assert new_requests(registry, before) == [
        ("HEAD", f"/v2/{REPO}/manifests/40-amd64", 200),
        ("GET", f"/v2/{REPO}/manifests/{respun}", 200),
        ("GET", f"/v2/{REPO}/blobs/sha256:{sha(I2)}", 200),
    ]
    store = proxy.files.store.store
    srec = store.records.set_record("boot/f40")
    assert srec is not None and srec.current == 4
    gen = srec.generation(4)
    assert gen is not None and gen.members == {"boot/f40-vmlinuz": sha(K1),
                                               "boot/f40-initrd.img": sha(I2),
                                               "boot/f40-shimx64.efi": sha(S1)}
    digests = {store.records.record(f"boot/f40-{t}").current.manifest_digest for t in titles}
    assert digests == {respun}
    # Foreman's next requests find the members up to date.
    status, _, body = await proxy.fetch_boot_file("boot/f40",
                                                  registry.url(f"{REPO}:40-amd64", "initrd.img"))
    assert (status, body["status"], body["generation"]) == (200, "unchanged", 4)
    # The same artifact under another prefix downloads nothing: every layer is stored.
    before = len(registry.requests())
    for body in await fetch_all(proxy, registry, "boot/copy", f"{REPO}:40-amd64", titles):
        assert body["status"] == "published"
    assert [r for r in new_requests(registry, before) if "/blobs/" in r[1]] == []
    assert (root / "boot/copy-initrd.img").read_bytes() == I2


async def test_a_reference_by_digest_is_pinned_and_rechecked_without_a_request(
        api, registry: Registry, pusher: Pusher, root: Path) -> None:
    digest = pusher.push(REPO, "40-amd64", {"vmlinuz": K1})
    proxy = await api()
    url = registry.url(f"{REPO}@{digest}", "vmlinuz")
    status, _, body = await proxy.fetch_boot_file("boot/pin", url)
    assert (status, body["status"]) == (200, "published"), body
    pusher.push(REPO, "40-amd64", {"vmlinuz": K2})  # the tag moves; the digest does not
    before = len(registry.requests())
    status, _, body = await proxy.fetch_boot_file("boot/pin", url)
    assert (status, body["status"]) == (200, "unchanged")
    assert new_requests(registry, before) == []
    assert (root / "boot/pin-vmlinuz").read_bytes() == K1


async def test_the_path_foreman_builds_from_an_oci_medium(api, registry: Registry,
                                                           pusher: Pusher, root: Path) -> None:
    pusher.push(REPO, "40-amd64", {"vmlinuz": K1, "initrd.img": I1})
    proxy = await api()
    medium = registry.url(f"{REPO}:40-amd64")
    for title in ("vmlinuz", "initrd.img"):
        status, _, body = await proxy.fetch_boot_file(
            "boot/Fedora-40-abc123", f"{medium}/images/pxeboot/{title}")
        assert (status, body["name"]) == (200, f"boot/Fedora-40-abc123-{title}"), body
    assert (root / "boot/Fedora-40-abc123-initrd.img").read_bytes() == I1


async def test_a_corrupt_or_oversized_layer_is_refused_as_it_streams(
        api, registry: Registry, pusher: Pusher, root: Path) -> None:
    pusher.push(REPO, "40-amd64", {"vmlinuz": K1, "initrd.img": I1})
    proxy = await api()
    await fetch_all(proxy, registry, "boot/c", f"{REPO}:40-amd64", ("vmlinuz", "initrd.img"))
    pusher.push(REPO, "40-amd64", {"vmlinuz": K2, "initrd.img": I2})
    # The registry's disk now holds other bytes for the new initrd than its digest names.
    blob = registry.blob_file(f"sha256:{sha(I2)}")
    blob.write_bytes(bytes(b ^ 0xFF for b in I2[:100]) + I2[100:])
    status, _, body = await proxy.fetch_boot_file("boot/c",
                                                  registry.url(f"{REPO}:40-amd64", "vmlinuz"))
    assert status == 502
    assert (f"boot set boot/c not switched: boot/c-initrd.img: 127.0.0.1:{registry.port}/"
            f"{REPO}:40-amd64: 'initrd.img' has sha256 ") in body
    assert f"the manifest says sha256:{sha(I2)}" in body
    assert body.rstrip().endswith("previous version kept")
    assert (root / "boot/c-vmlinuz").read_bytes() == K1
    assert (root / "boot/c-initrd.img").read_bytes() == I1
    assert list((root / ".tftproxy/private/staging").iterdir()) == []
    # A blob longer than its descriptor says is refused before a byte is kept.
    blob.write_bytes(I2 + b"trailing")
    status, _, body = await proxy.fetch_boot_file("boot/c",
                                                  registry.url(f"{REPO}:40-amd64", "initrd.img"))
    assert status == 502
    assert f"the registry sends {len(I2) + 8} bytes for 'initrd.img'; the manifest says " \
           f"{len(I2)}" in body
    assert (root / "boot/c-initrd.img").read_bytes() == I1
    # Repaired upstream, the next request switches the pair.
    blob.write_bytes(I2)
    status, _, body = await proxy.fetch_boot_file("boot/c",
                                                  registry.url(f"{REPO}:40-amd64", "vmlinuz"))
    assert (status, body["status"]) == (200, "published"), body
    assert (root / "boot/c-initrd.img").read_bytes() == I2


async def test_errors_name_what_is_wrong(api, registry: Registry, pusher: Pusher,
                                         root: Path) -> None:
    pusher.push(REPO, "40-amd64", {"vmlinuz": K1, "initrd.img": I1})
    proxy = await api()
    status, _, body = await proxy.fetch_boot_file("boot/e",
                                                  registry.url(f"{REPO}:41-amd64", "vmlinuz"))
    assert status == 502
    assert (f"{registry.url(f'{REPO}:41-amd64', 'vmlinuz')}: 127.0.0.1:{registry.port}/"
            f"{REPO}:41-amd64: tag 41-amd64 not found: HTTP 404 Not Found") in body
    status, _, body = await proxy.fetch_boot_file("boot/e",
                                                  registry.url(f"{REPO}:40-amd64", "boot.iso"))
    assert status == 502
    assert "has no file 'boot.iso' (it has: initrd.img, vmlinuz); nothing published" in body
    status, _, body = await proxy.fetch_boot_file("boot/e", registry.url("Fedora:40", "x"))
    assert status == 400
    assert "'Fedora' is not a valid repository name component" in body
    registry.stop()
    status, _, body = await proxy.fetch_boot_file("boot/e",
                                                  registry.url(f"{REPO}:40-amd64", "vmlinuz"))
    assert status == 502 and "cannot connect" in body
    assert not (root / "boot").exists() or list((root / "boot").iterdir()) == []


async def test_an_index_is_read_for_the_platform_asked(api, registry: Registry,
                                                       pusher: Pusher, root: Path) -> None:
    amd = pusher.push(REPO, "40-amd64", {"vmlinuz": K1})
    arm = pusher.push(REPO, "40-arm64", {"vmlinuz": K2})
    pusher.push_index(REPO, "40", {"amd64": amd, "arm64": arm})
    proxy = await api()
    status, _, body = await proxy.fetch_boot_file(
        "boot/x86", registry.url(f"{REPO}:40?platform=x86_64", "vmlinuz"))
    assert (status, body["final_url"]) == (
        200, f"oci+http://{registry.host}/{REPO}@{amd}#vmlinuz"), body
    status, _, body = await proxy.fetch_boot_file(
        "boot/arm", registry.url(f"{REPO}:40?platform=linux/arm64", "vmlinuz"))
    assert status == 200, body
    assert (root / "boot/arm-vmlinuz").read_bytes() == K2
    status, _, body = await proxy.fetch_boot_file("boot/any", registry.url(f"{REPO}:40",
                                                                           "vmlinuz"))
    assert status == 502
    assert "is an image index of 2 manifests (linux/amd64, linux/arm64): add ?platform=" in body


async def test_a_sync_resolves_the_tag_once_per_set_and_follows_a_respin(
        api, registry: Registry, pusher: Pusher, root: Path) -> None:
    titles = ("vmlinuz", "initrd.img")
    pusher.push(REPO, "41-amd64", {"vmlinuz": K1, "initrd.img": I1})
    proxy = await api()
    await fetch_all(proxy, registry, "boot/f41", f"{REPO}:41-amd64", titles)
    before = len(registry.requests())
    run = await proxy.files.sync.sync(["boot/f41"])
    assert await run.wait(30)
    assert run.outcomes["boot/f41"].line() == "unchanged: boot/f41 generation 2"
    assert new_requests(registry, before) == [("HEAD", f"/v2/{REPO}/manifests/41-amd64", 200)]
    respun = pusher.push(REPO, "41-amd64", {"vmlinuz": K2, "initrd.img": I2})
    run = await proxy.files.sync.sync(["boot/f41"])
    assert await run.wait(30)
    assert run.outcomes["boot/f41"].line() == "updated: boot/f41 generation 2 -> 3"
    assert (root / "boot/f41-vmlinuz").read_bytes() == K2
    assert (root / "boot/f41-initrd.img").read_bytes() == I2
    store = proxy.files.store.store
    assert {store.records.record(f"boot/f41-{t}").current.manifest_digest
            for t in titles} == {respun}
