"""The project's container image, built and run without a container engine or a registry.

The released image builds on the official ``python:3.X.Y-slim-<suite>`` image, which cannot be
pulled here. A stand-in with the same Debian suite takes its place: a ``debootstrap`` minbase
root file system with Debian's Python (``python3``, ``python3-venv``, ``python3-pip``) and
``ca-certificates``, fetched from the mirror the machine's apt sources name, imported as a
local image. ``podman build --isolation chroot`` builds the Dockerfile on it, and the result is
run from its mounted (read-only) file system under ``chroot --userspec``: no container runtime,
no daemon.

The stand-in is cached as a tarball outside the repository (``$XDG_CACHE_HOME`` or
``/var/tmp``), named by a digest of everything that goes into it, so a second run on the same
machine skips ``debootstrap``. Podman's storage lives in a directory of the test's own and is
removed afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What the stand-in holds, besides minbase. Part of the cache key: change it and the next run
# builds a new one.
STAND_IN_PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
STAND_IN_VARIANT = "minbase"
# Bump when the recipe below changes in a way the key does not capture.
STAND_IN_RECIPE = 1
# The official image's environment that a bare root file system lacks.
STAND_IN_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)
# The build secret the Dockerfile's pip reads when present (RUN --mount=type=secret,id=...).
CA_SECRET_ID = "ca-bundle"


def base_suite(dockerfile_text: str) -> str:
    """The Debian suite of the Dockerfile's default base (``python:3.12.8-slim-bookworm``)."""
    match = re.search(r"^ARG PYTHON_IMAGE=python:[\d.]+-slim-([a-z]+)", dockerfile_text, re.M)
    if match is None:
        raise ValueError("the Dockerfile's ARG PYTHON_IMAGE names no python:X.Y.Z-slim-SUITE")
    return match.group(1)


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]


def parse_apt_sources(name: str, text: str) -> list[AptSource]:
    """The ``deb`` entries of one apt sources file: one-line (``.list``) or deb822
    (``.sources``) format, as apt reads them; ``deb-src`` and disabled stanzas left out."""
    found: list[AptSource] = []
    if name.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            key = ""
            for line in stanza.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0].isspace() and key:
                    fields[key] += " " + line.strip()
                    continue
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            suites = tuple(fields.get("suites", "").split())
            found += [AptSource(uri.rstrip("/"), suites) for uri in fields.get("uris", "").split()]
    else:
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            line = re.sub(r"\[[^\]]*\]\s*", "", line)  # [arch=amd64 signed-by=...]
            words = line.split()
            if len(words) >= 3 and words[0] == "deb":
                found.append(AptSource(words[1].rstrip("/"), (words[2],)))
    return found


def apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """Every ``deb`` entry apt would use: sources.list, then sources.list.d/*.list|*.sources
    (apt ignores other names, such as ``foo.list.disabled``)."""
    files = [etc_apt / "sources.list"]
    listing = etc_apt / "sources.list.d"
    if listing.is_dir():
        files += sorted(p for p in listing.iterdir() if p.suffix in (".list", ".sources"))
    found: list[AptSource] = []
    for path in files:
        if path.is_file():
            found += parse_apt_sources(path.name, path.read_text())
    return found


def debian_mirror(suite: str, sources: Sequence[AptSource]) -> str | None:
    """The machine's mirror for Debian ``suite``: an entry that lists the suite itself, else the
    first that lists some Debian release (a mirror serves them all). Security and update
    pockets (``bookworm-security``) are archives of their own, never the mirror."""
    for source in sources:
        if suite in source.suites:
            return source.uri
    for source in sources:
        if any(re.fullmatch(r"[a-z]+", s) for s in source.suites) and "/debian" in source.uri:
            return source.uri
    return None


def cache_root() -> Path:
    """Outside the repository: ``$XDG_CACHE_HOME/budget-exporter-tests``, else under /var/tmp."""
    base = os.environ.get("XDG_CACHE_HOME") or "/var/tmp"
    return Path(base) / "budget-exporter-tests"


def stand_in_key(suite: str, mirror: str) -> str:
    recipe = {
        "suite": suite,
        "mirror": mirror,
        "variant": STAND_IN_VARIANT,
        "packages": sorted(STAND_IN_PACKAGES),
        "arch": platform.machine(),
        "recipe": STAND_IN_RECIPE,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def stand_in_tarball(debootstrap: str, suite: str, mirror: str, cache: Path) -> tuple[Path, bool]:
    """The stand-in's root file system as a tarball: ``(path, made)``, ``made`` False when the
    cache had it. Made under a lock, renamed into place whole, so a run interrupted halfway or
    a second run at the same time never sees half a tarball; stale stand-ins are removed."""
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"stand-in-{suite}-{stand_in_key(suite, mirror)}.tar"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.is_file():
            return tarball, False
        # Under the lock, any half-made stand-in is from a run that was killed.
        for stale in cache.glob("making-*"):
            remove_tree(stale)
        work = cache / f"making-{os.getpid()}"
        rootfs = work / "rootfs"
        try:
            result = subprocess.run(
                [
                    debootstrap,
                    f"--variant={STAND_IN_VARIANT}",
                    f"--include={','.join(STAND_IN_PACKAGES)}",
                    suite,
                    str(rootfs),
                    mirror,
                ],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if result.returncode != 0:
                log = rootfs / "debootstrap" / "debootstrap.log"
                detail = log.read_text(errors="replace") if log.is_file() else result.stderr
                raise AssertionError(f"debootstrap {suite} from {mirror} failed:\n{detail[-3000:]}")
            # What an image does not carry: downloaded packages and package lists.
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / leftover).glob("*"):
                    if path.is_file():
                        path.unlink()
            partial = work / "rootfs.tar"
            subprocess.run(
                ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."],
                check=True,
                timeout=300,
            )
            for stale in cache.glob(f"stand-in-{suite}-*.tar"):
                stale.unlink()
            partial.rename(tarball)
        finally:
            remove_tree(work)
    return tarball, True


def ca_bundle() -> Path | None:
    """The CA bundle this machine's TLS clients trust (a proxy that re-signs TLS is in it)."""
    candidates = [os.environ.get(v) for v in ("SSL_CERT_FILE", "PIP_CERT", "REQUESTS_CA_BUNDLE")]
    paths = ssl.get_default_verify_paths()
    candidates += [paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    found = []
    prefix = str(root.resolve())
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Delete ``path``, detaching whatever is mounted below it first (a killed ``debootstrap``
    leaves /proc and /sys, maybe /dev, mounted in its target: never delete through them)."""
    if not path.exists():
        return
    for point in mounts_under(path):
        subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)
    if mounts_under(path):
        raise AssertionError(f"cannot unmount everything under {path}: {mounts_under(path)}")
    shutil.rmtree(path, ignore_errors=True)


def filesystem_type(path: Path) -> str:
    """The type of the file system ``path`` is on (the longest mount point above it)."""
    best, kind = "", ""
    target = str(path.resolve())
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, fstype, *_ = line.split()
        if (target == point or target.startswith(point.rstrip("/") + "/")) and len(point) > len(
            best
        ):
            best, kind = point, fstype
    return kind


def storage_driver(root: Path) -> str:
    """``overlay`` where the kernel has it and the storage is not itself on an overlay (a
    container's file system), else ``vfs`` (a full copy per layer: slower, works anywhere)."""
    kernel = Path("/proc/filesystems").read_text().split()
    if "overlay" in kernel and filesystem_type(root) != "overlay":
        return "overlay"
    return "vfs"


@dataclass
class Podman:
    """``podman`` on a storage of its own under ``root``; as root, no daemon, no systemd."""

    executable: str
    root: Path
    driver: str = ""

    def __post_init__(self) -> None:
        (self.root / "storage").mkdir(parents=True, exist_ok=True)
        (self.root / "run").mkdir(parents=True, exist_ok=True)
        self.driver = self.driver or storage_driver(self.root)

    def command(self, *args: str) -> list[str]:
        return [
            self.executable,
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            self.driver,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            *args,
        ]

    def __call__(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def inspect(self, image: str) -> dict[str, Any]:
        (found,) = json.loads(self("image", "inspect", image))
        return dict(found)

    def remove(self) -> None:
        """Unmount everything, then delete the storage."""
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self("image", "unmount", "--all", "--force")
        remove_tree(self.root)


@dataclass
class BuiltImage:
    podman: Podman
    name: str
    base: str
    rootfs: Path
    build_log: str
    made_stand_in: bool
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.podman.inspect(self.name)["Config"])


@contextlib.contextmanager
def timed(timings: dict[str, float], what: str) -> Iterator[None]:
    start = time.monotonic()
    yield
    timings[what] = round(time.monotonic() - start, 1)


def build_image(
    podman: Podman,
    debootstrap: str,
    context: Path,
    *,
    suite: str,
    mirror: str,
    build_args: dict[str, str],
    name: str = "localhost/budget-exporter:test",
) -> BuiltImage:
    """Stand-in base (cached), imported; the Dockerfile in ``context`` built on it; the
    result mounted read-only."""
    timings: dict[str, float] = {}
    with timed(timings, "stand-in"):
        tarball, made = stand_in_tarball(debootstrap, suite, mirror, cache_root())
    base = f"localhost/budget-exporter-stand-in:{tarball.stem.removeprefix('stand-in-')}"
    with timed(timings, "import"):
        changes = [arg for change in STAND_IN_CHANGES for arg in ("--change", change)]
        podman("import", *changes, str(tarball), base, timeout=300)
    args = [arg for key, value in build_args.items() for arg in ("--build-arg", f"{key}={value}")]
    bundle = ca_bundle()
    if bundle is not None:
        args += ["--secret", f"id={CA_SECRET_ID},src={bundle}"]
    with timed(timings, "build"):
        log = podman(
            "build",
            "--isolation",
            "chroot",
            "--pull=never",  # the base is local; nothing is pulled
            "--build-arg",
            f"PYTHON_IMAGE={base}",
            *args,
            "--tag",
            name,
            str(context),
            timeout=900,
        )
    rootfs = Path(podman("image", "mount", name).strip())
    return BuiltImage(podman, name, base, rootfs, log, made, timings)


def prepare_stand_in(dockerfile: Path) -> threading.Thread | None:
    """Start making the stand-in base in a background thread, so that the minute debootstrap
    takes passes while other tests run; the image test then finds it made (or waits on the
    lock for the rest). Nothing starts where the image test could not run (no tools, not
    root, no mirror) or the cache has it already; a failure here is left for the image test
    to meet and report."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None or shutil.which("podman") is None or os.geteuid() != 0:
        return None
    suite = base_suite(dockerfile.read_text())
    mirror = debian_mirror(suite, apt_sources())
    if mirror is None:
        return None
    cache = cache_root()
    if (cache / f"stand-in-{suite}-{stand_in_key(suite, mirror)}.tar").is_file():
        return None

    def make() -> None:
        with contextlib.suppress(Exception):
            stand_in_tarball(debootstrap, suite, mirror, cache)

    thread = threading.Thread(target=make, name="stand-in", daemon=True)
    thread.start()
    return thread
