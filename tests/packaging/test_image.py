"""The container image, built from the Dockerfile and run, as a new user would.

The official Python base cannot be pulled here, so a Debian stand-in of the same suite made with
``debootstrap`` (Python from Debian) takes its place (tests/support/image.py). ``podman build
--isolation chroot`` builds the project's Dockerfile on it with no container runtime; the image's
file system, mounted read-only, is then run under ``chroot --userspec`` with the image's own
user, environment, entrypoint and arguments: the demo is served by a non-root process, ``/-/ready``
answers, and SIGTERM stops it cleanly.

This is the one test that reaches beyond 127.0.0.1: ``debootstrap`` fetches Debian packages from
the mirror of the machine's apt sources, and the build's first stage fetches wheels from PyPI
(through the machine's CA bundle, passed as a build secret).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import tomllib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from budget_exporter import __version__
from budget_exporter.web.endpoints import DEFAULT_PORT
from tests.support.image import (
    BuiltImage,
    Podman,
    apt_sources,
    base_suite,
    build_image,
    debian_mirror,
    parse_apt_sources,
)
from tests.support.net import free_port, http_get, wait_until
from tests.support.paths import ROOT
from tests.support.tools import missing, require_tool

DOCKERFILE = ROOT / "Dockerfile"
DEMO = ROOT / "examples" / "demo.yml"
APT_IMAGE = "apt-get install podman debootstrap"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    podman = require_tool("podman", install=APT_IMAGE)
    debootstrap = require_tool("debootstrap", install=APT_IMAGE)
    if os.geteuid() != 0:
        message = "building the image (podman build) and running it (chroot) need root"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI runs as root", pytrace=False)
        pytest.skip(message)
    suite = base_suite(DOCKERFILE.read_text())
    mirror = debian_mirror(suite, apt_sources())
    if mirror is None:
        missing(f"no Debian mirror in /etc/apt/sources.list(.d) to debootstrap {suite} from")
    assert mirror is not None
    storage = Podman(podman, tmp_path_factory.mktemp("podman"))
    try:
        built = build_image(
            storage,
            debootstrap,
            ROOT,
            suite=suite,
            mirror=mirror,
            build_args={"REVISION": REVISION, "CREATED": "2026-01-02T03:04:05Z"},
        )
        yield built
        print(f"\nimage timings (s): {built.timings}; stand-in made: {built.made_stand_in}")
    finally:
        storage.remove()


def demo_budgets() -> dict[str, Decimal]:
    config = yaml.safe_load(DEMO.read_text())
    return {b["name"]: Decimal(str(b["limit"])) for b in config["budgets"]}


# -- the image's configuration and file system ---------------------------------------


def test_image_config(image: BuiltImage) -> None:
    config = image.config
    (user,) = re.findall(r"^USER (\S+)$", DOCKERFILE.read_text(), re.M)
    assert config["User"] == user == "10001:10001"
    assert set(config["ExposedPorts"]) == {f"{DEFAULT_PORT}/tcp"}
    assert config["Entrypoint"] == ["budget-exporter"]
    assert "--config.file=/etc/budget-exporter/budget-exporter.yml" in config["Cmd"]
    assert f"--web.listen-address=:{DEFAULT_PORT}" in config["Cmd"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["PATH"].startswith("/opt/budget-exporter/bin:")
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.revision"] == REVISION
    assert labels["org.opencontainers.image.created"] == "2026-01-02T03:04:05Z"
    assert labels["org.opencontainers.image.title"] == "budget-exporter"
    assert labels["org.opencontainers.image.base.name"] == image.base


def installed_distributions(site_packages: Path) -> set[str]:
    names = set()
    for metadata in site_packages.glob("*.dist-info/METADATA"):
        match = re.search(r"^Name: (\S+)$", metadata.read_text(errors="replace"), re.M)
        assert match, metadata
        names.add(re.sub(r"[-_.]+", "-", match.group(1)).lower())
    return names


def test_image_file_system(image: BuiltImage) -> None:
    root = image.rootfs
    # The user the image runs as exists, with no home and no login shell.
    passwd = (root / "etc" / "passwd").read_text().splitlines()
    assert "budget-exporter:x:10001:10001::/nonexistent:/usr/sbin/nologin" in passwd
    assert "budget-exporter:x:10001:" in (root / "etc" / "group").read_text()

    # The venv, without a pip of its own, holds the exporter and every extra's dependencies.
    venv = root / "opt" / "budget-exporter"
    assert (venv / "bin" / "budget-exporter").is_file()
    assert not (venv / "bin" / "pip").exists()
    (site_packages,) = venv.glob("lib/python3.*/site-packages")
    installed = installed_distributions(site_packages)
    assert "budget-exporter" in installed
    (extras,) = re.findall(r"^ARG EXTRAS=(\S+)$", DOCKERFILE.read_text(), re.M)
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra in extras.split(","):
        for requirement in optional[extra]:
            name = re.sub(r"[-_.]+", "-", re.split(r"[<>=!~\[; ]", requirement)[0]).lower()
            assert name in installed, f"{requirement} (extra {extra}) is not in the image"

    # The default configuration is the demo; no source tree, wheels or build secret shipped.
    default = root / "etc" / "budget-exporter" / "budget-exporter.yml"
    assert default.read_bytes() == DEMO.read_bytes()
    for leftover in ("src", "wheels"):
        assert not (root / leftover).exists(), f"/{leftover} is in the image"
    secrets = root / "run" / "secrets"
    assert not secrets.exists() or not any(secrets.iterdir())


# -- the image, run ----------------------------------------------------------------


def process_ids(pid: int) -> dict[str, list[int]]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        key: [int(n) for n in value.split()]
        for key, value in re.findall(r"^(Uid|Gid|Groups):\s*(.*)$", status, re.M)
    }


def test_image_serves_the_demo_as_non_root_and_stops_on_sigterm(image: BuiltImage) -> None:
    chroot = require_tool("chroot", install="apt-get install coreutils")
    config = image.config
    port = free_port()
    listen = f"--web.listen-address=127.0.0.1:{port}"
    args = [listen if a.startswith("--web.listen-address=") else a for a in config["Cmd"]]
    assert listen in args
    env = dict(item.split("=", 1) for item in config["Env"])  # the image's, nothing of ours
    proc = subprocess.Popen(
        [chroot, f"--userspec={config['User']}", str(image.rootfs), *config["Entrypoint"], *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode}: {proc.communicate()[1]}")
            return http_get(f"{url}/-/ready", timeout=1)[0] == 200

        wait_until(ready, timeout=30, what="/-/ready from the image")

        # chroot exec'd the entrypoint: this pid is the exporter, in the image, not root.
        assert Path(f"/proc/{proc.pid}/root").resolve() == image.rootfs.resolve()
        assert "/opt/budget-exporter/bin/budget-exporter" in Path(
            f"/proc/{proc.pid}/cmdline"
        ).read_bytes().decode().split("\0")
        ids = process_ids(proc.pid)
        assert ids["Uid"] == [10001] * 4 and ids["Gid"] == [10001] * 4, ids
        assert 0 not in ids["Groups"], ids

        status, body = http_get(f"{url}/metrics", timeout=5)
        assert status == 200
        limits = {
            sample.labels["budget"]: Decimal(str(sample.value))
            for family in text_string_to_metric_families(body.decode())
            if family.name == "budget_limit_amount"
            for sample in family.samples
        }
        assert limits == demo_budgets()
    finally:
        stopped_at = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, log = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, log = proc.communicate()
    took = time.monotonic() - stopped_at
    assert proc.returncode == 0, log
    assert took < 5, f"SIGTERM took {took:.1f}s"
    assert 'msg="shutting down"' in log
    assert "Traceback" not in log and "level=error" not in log, log


# -- the stand-in's recipe (no tools needed) -----------------------------------------


def test_base_suite_is_the_dockerfile_default() -> None:
    assert base_suite(DOCKERFILE.read_text()) == "bookworm"
    with pytest.raises(ValueError, match="names no python"):
        base_suite("ARG PYTHON_IMAGE=debian:bookworm\n")


def test_mirror_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    deb822 = (
        "Types: deb\n"
        "URIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb-src\n"
        "URIs: http://source-only.example/debian\n"
        "Suites: bookworm\n"
        "\n"
        "# a comment\n"
        "Types: deb\n"
        "URIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    sources = parse_apt_sources("debian.sources", deb822)
    assert [s.uri for s in sources] == [
        "http://security.example/debian-security",
        "http://mirror.example/debian",
    ]
    assert debian_mirror("bookworm", sources) == "http://mirror.example/debian"
    # Another release's mirror serves bookworm too; a security archive never stands in.
    assert debian_mirror("trixie", sources) == "http://mirror.example/debian"
    assert debian_mirror("trixie", sources[:1]) is None

    one_line = (
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://source-only.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://other.example/debian bookworm main # note\n"
    )
    assert parse_apt_sources("sources.list", one_line)[0].uri == "http://other.example/debian"

    # apt reads sources.list and *.list / *.sources in sources.list.d, nothing else.
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "old.list.disabled").write_text(
        "deb http://disabled.example/debian bookworm main\n"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(deb822)
    assert debian_mirror("bookworm", apt_sources(tmp_path)) == "http://mirror.example/debian"
    disabled = deb822.replace(
        "Types: deb\nURIs: http://mirror", "Types: deb\nEnabled: no\nURIs: http://mirror"
    )
    assert debian_mirror("bookworm", parse_apt_sources("x.sources", disabled)) is None


def test_the_build_secret_is_optional_and_never_copied() -> None:
    text = DOCKERFILE.read_text()
    mounts = re.findall(r"--mount=type=secret,(\S+)", text)
    assert mounts == ["id=ca-bundle,required=false"]
    assert "/run/secrets/ca-bundle" in text
    assert not re.search(r"^(COPY|ADD)\b.*(ca-bundle|ca-certificates|\.crt|\.pem)", text, re.M)
