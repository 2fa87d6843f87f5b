"""Benchmark: three members out of a 1 GiB ISO, tftproxy's reader against xorriso and bsdtar.

The image is built by xorriso like a Red Hat boot.iso: ``images/install.img`` (filler, most of
the image, before the members), ``images/pxeboot/vmlinuz`` (Debian's kernel),
``images/pxeboot/initrd.img`` (100 MiB), ``EFI/BOOT/grubx64.efi`` and a ``.treeinfo`` with
sha256 sums. Each run extracts vmlinuz, initrd.img and grubx64.efi into a fresh directory:

* tftproxy: ``fetch.extract.extract_members`` in a child process, timed from after its
  imports (the service is long-running: it does not pay them per request), with the peak RSS
  of the whole child. It also hashes every member (sha256) and checks the .treeinfo;
* ``xorriso -osirrox on -indev ISO -extract_single ...`` and ``bsdtar -xf ISO -C out ...``,
  which only copy; and the same followed by ``sha256sum`` of the members, the same work as
  tftproxy's (publishing needs the hash).

Cold runs evict the image from the page cache first (``posix_fadvise(DONTNEED)`` on that file
only, so other processes' caches are left alone); warm runs read it from memory. Runs
alternate between the tools; the figures are medians and ratios within the same run.

    .venv/bin/python -m bench.extract_iso [--size-mib 1024] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Run, median, timed

MEMBERS = ("images/pxeboot/vmlinuz", "images/pxeboot/initrd.img", "EFI/BOOT/grubx64.efi")
KERNEL = Path("/usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64/linux")
GRUB = Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed")


def build(work: Path, size_mib: int) -> Path:
    import hashlib

    tree = work / "tree"
    for rel in MEMBERS:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(KERNEL, tree / MEMBERS[0])
    shutil.copyfile(GRUB, tree / MEMBERS[2])
    with open(tree / MEMBERS[1], "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    filler = max(1, size_mib - 100 - 12)
    with open(tree / "images/install.img", "wb") as f:
        block = os.urandom(1 << 20)
        for _ in range(filler):
            f.write(block)
    sums = "\n".join(f"{rel} = sha256:{hashlib.sha256((tree / rel).read_bytes()).hexdigest()}"
                     for rel in MEMBERS[:2])
    (tree / ".treeinfo").write_text(f"[header]\ntype = productmd.treeinfo\nversion = 1.2\n"
                                    f"[general]\nfamily = bench\n[checksums]\n{sums}\n")
    iso = work / "boot.iso"
    subprocess.run(["xorriso", "-rockridge", "on", "-joliet", "on", "-outdev", str(iso),
                    "-volid", "BENCH", "-map", str(tree), "/"], check=True, capture_output=True)
    shutil.rmtree(tree)
    return iso


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def child(iso: str, out: str) -> None:
    """Extract the members with tftproxy's reader; print the extraction's own seconds."""
    from tftproxy.fetch.extract import Limits, extract_members

    class Sink:
        def __init__(self, path: Path) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

        def write(self, data: bytes | memoryview) -> None:
            os.write(self.fd, data)

    start = time.perf_counter()
    sinks = {m: Sink(Path(out) / m) for m in MEMBERS}
    got = extract_members(iso, "iso", sinks, Limits(1 << 40, 1 << 40), "boot.iso")
    for sink in sinks.values():
        os.close(sink.fd)
    seconds = time.perf_counter() - start
    assert all(v.verified.startswith("sha256 matches") for k, v in got.items()
               if k != MEMBERS[2]), got
    print(json.dumps({"seconds": seconds, "hwm_kib": _hwm_kib("self")}))


def _hwm_kib(pid: str) -> int:
    """Peak RSS of one address space (VmHWM): wait4's ru_maxrss would also count the bench's
    own memory, which a vfork'ed child shares until it execs."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_tftproxy(iso: Path, out: Path) -> tuple[Run, float]:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bench.extract_iso", "--child", str(iso),
                             str(out)], stdout=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    assert proc.stdout is not None
    report = json.loads(proc.stdout.read())
    del usage
    return Run(wall, report["hwm_kib"], os.waitstatus_to_exitcode(status)), report["seconds"]


def peers(iso: Path, out: Path) -> dict[str, list[str]]:
    xorriso = ["xorriso", "-osirrox", "on", "-indev", str(iso)]
    for m in MEMBERS:
        xorriso += ["-extract_single", f"/{m}", str(out / m)]
    bsdtar = ["bsdtar", "-xf", str(iso), "-C", str(out), *MEMBERS]
    hashed = " && sha256sum " + " ".join(str(out / m) for m in MEMBERS) + " >/dev/null"
    return {
        "xorriso": xorriso, "bsdtar": bsdtar,
        "xorriso+sha256sum": ["sh", "-c", " ".join(xorriso) + hashed],
        "bsdtar+sha256sum": ["sh", "-c", " ".join(bsdtar) + hashed],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    work = Path(tempfile.mkdtemp(prefix="tftproxy-bench-iso-", dir="/var/tmp"))
    try:
        iso = build(work, args.size_mib)
        print(f"image: {iso.stat().st_size / 2**20:.0f} MiB; members: "
              f"{', '.join(MEMBERS)}", flush=True)
        for cache in ("cold", "warm"):
            times: dict[str, list[float]] = {}
            rss: dict[str, int] = {}
            for _ in range(args.runs):
                tools = {"tftproxy": None, **peers(iso, work / "out")}
                for name, cmd in tools.items():
                    out = work / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    out.mkdir()
                    subprocess.run(["sync"], check=False)
                    if cache == "cold":
                        evict(iso)
                    else:
                        subprocess.run(["cat", str(iso)], stdout=subprocess.DEVNULL, check=True)
                    if cmd is None:
                        run, inner = run_tftproxy(iso, out)
                        times.setdefault("tftproxy (whole process)", []).append(run.seconds)
                        times.setdefault(name, []).append(inner)
                    else:
                        # GNU time reports the tool's own peak (its %M), not the bench's.
                        run = timed(["/usr/bin/time", "-f", "%M", "-o", str(work / "rss"),
                                     *cmd])
                        run = Run(run.seconds, int((work / "rss").read_text().split()[-1]),
                                  run.returncode)
                        times.setdefault(name, []).append(run.seconds)
                    assert run.returncode == 0, name
                    rss[name] = max(rss.get(name, 0), run.max_rss_kib)
            base = median(times["tftproxy"])
            print(f"\n{cache} cache, median of {args.runs}:")
            for name, values in times.items():
                key = "tftproxy" if name.startswith("tftproxy") else name
                ratio = base / median(values)
                print(f"  {name:<26} {median(values):7.3f} s   peak RSS "
                      f"{rss.get(key, 0) / 1024:6.1f} MiB   tftproxy/this {ratio:5.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
