"""The Helm chart rendered by the real Helm engine (helm-python-sdk), and ways to pick objects.

Not imported by :mod:`tests.support`: only the Helm tests need helm-python-sdk and
kubernetes-validate.
"""

from __future__ import annotations

import copy
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import yaml
from helm_python.chart import Chart

from tests.support.tools import APT_PROMETHEUS, require_tool

ROOT = Path(__file__).resolve().parent.parent.parent
CHART_DIR = ROOT / "helm" / "budget-exporter"
RULE_FILES = sorted((ROOT / "rules").glob("*.yml"))
DASHBOARD_FILES = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
# The Chart.yaml kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.25", kubernetes_validate.utils.latest_version())
CORE_KINDS = {
    "ConfigMap",
    "Deployment",
    "NetworkPolicy",
    "PersistentVolumeClaim",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "ServiceAccount",
}
RELEASE, NAMESPACE = "spend", "monitoring"
FULLNAME = "spend-budget-exporter"


@cache
def chart() -> Chart:
    return Chart.load(CHART_DIR)


def documents(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """The objects of rendered manifests (NOTES.txt and empty documents left out)."""
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith((".yaml", ".yml"))
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    manifests = chart().render(copy.deepcopy(values or {}), name=RELEASE, namespace=NAMESPACE)
    return documents(manifests)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = by_kind(docs, kind)
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (main,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return main


def validate(doc: dict[str, Any]) -> None:
    """A core object against the oldest and newest supported Kubernetes schemas, strictly."""
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def run_promtool_tests(tmp_path: Path, groups: list[dict[str, Any]], spec: dict[str, Any]) -> str:
    """``promtool test rules`` on rendered rule ``groups`` with the test file ``spec``
    (its ``rule_files`` name ``chart.rules.yml``): promtool's output if it failed, else ""."""
    promtool = require_tool("promtool", install=APT_PROMETHEUS)
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "chart.rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    (tmp_path / "chart.test.yml").write_text(yaml.safe_dump(spec))
    result = subprocess.run(
        [promtool, "test", "rules", "chart.test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return "" if result.returncode == 0 else result.stdout + result.stderr
