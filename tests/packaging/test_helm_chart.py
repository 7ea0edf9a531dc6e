"""The chart as others use it: as a subchart, across namespaces, labelled, extended.

Rendered by the real Helm engine (helm-python-sdk); core objects validated
against the Kubernetes schemas; values.schema.json checked against values.yaml.
"""

from __future__ import annotations

import copy
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from helm_python.chart import Chart, lint
from helm_python.errors import HelmError

from tests.support.helm import (
    CHART_DIR,
    CORE_KINDS,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    ROOT,
    by_kind,
    chart,
    documents,
    one,
    render,
    validate,
)

EVERYTHING = {
    "serviceMonitor": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "dashboards": {"enabled": True},
    "podDisruptionBudget": {"enabled": True},
    "networkPolicy": {"enabled": True},
    "secrets": {"api-key": "not-a-real-key"},
    "webConfig": {"config": {"basic_auth_users": {"prometheus": "$2b$12$" + "a" * 53}}},
}


# -- as a dependency of an umbrella chart ----------------------------------------


def umbrella(tmp_path: Path, alias: str | None = None) -> Path:
    """A small umbrella chart with a copy of this chart in its charts/ (as `helm dependency build` leaves it)."""
    root = tmp_path / "platform"
    (root / "charts").mkdir(parents=True)
    dependency = {"name": "budget-exporter", "version": chart().metadata["version"]}
    if alias:
        dependency["alias"] = alias
    meta = {
        "apiVersion": "v2",
        "name": "platform",
        "version": "1.0.0",
        "icon": "https://example.com/platform.svg",
        "dependencies": [dependency],
    }
    (root / "Chart.yaml").write_text(yaml.safe_dump(meta))
    (root / "templates").mkdir()
    (root / "templates" / "namespace-note.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-platform\n"
        "  labels:\n    app.kubernetes.io/instance: {{ .Release.Name }}\n"
        "data:\n  team: {{ .Values.global.team }}\n"
    )
    (root / "values.yaml").write_text(
        yaml.safe_dump({"global": {"imagePullSecrets": ["registry"], "team": "finops"}})
    )
    shutil.copytree(CHART_DIR, root / "charts" / "budget-exporter")
    return root


def test_renders_as_a_subchart_of_an_umbrella_chart(tmp_path: Path) -> None:
    """Helm passes `global` to every subchart: the schema must let it in."""
    root = umbrella(tmp_path)
    values = {
        "global": {"environment": "prod", "nested": {"anything": [1, 2]}},
        "budget-exporter": copy.deepcopy(EVERYTHING),
    }
    docs = documents(Chart.load(root).render(values, name=RELEASE, namespace=NAMESPACE))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("Deployment") == 1 and "PrometheusRule" in kinds and "ConfigMap" in kinds
    deployment = one(docs, "Deployment")
    assert deployment["metadata"]["name"] == FULLNAME
    pod = deployment["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}], "global.imagePullSecrets is used"
    values["global"]["imagePullSecrets"] = [{"name": "mirror"}]
    values["budget-exporter"]["imagePullSecrets"] = [{"name": "own"}]
    docs = documents(Chart.load(root).render(values, name=RELEASE, namespace=NAMESPACE))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "own"}, {"name": "mirror"}]
    for doc in docs:
        if doc["kind"] in CORE_KINDS:
            validate(doc)
    report = lint(root, values, strict=True, with_subcharts=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_subchart_values_are_still_validated(tmp_path: Path) -> None:
    root = umbrella(tmp_path, alias="costs")
    with pytest.raises(HelmError, match="serviceMonitor"):
        Chart.load(root).render(
            {"costs": {"serviceMonitor": {"enabled": "yes"}}}, name=RELEASE, namespace=NAMESPACE
        )
    docs = documents(
        Chart.load(root).render({"costs": {"replicaCount": 1}}, name=RELEASE, namespace=NAMESPACE)
    )
    assert one(docs, "Deployment")["metadata"]["name"] == f"{RELEASE}-costs", "the alias names it"


def test_global_is_in_the_schema() -> None:
    schema = chart().schema
    assert schema is not None and schema["additionalProperties"] is False
    assert schema["properties"]["global"]["type"] == "object"
    render({"global": {"imageRegistry": "mirror.example.com", "storageClass": "fast"}})


# -- namespaces, labels, extra objects ---------------------------------------------


def test_namespace_override_moves_every_object() -> None:
    docs = render(EVERYTHING | {"namespaceOverride": "finops"})
    assert len(docs) >= 10
    for doc in docs:
        assert doc["metadata"]["namespace"] == "finops", doc["kind"]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["finops"]}
    docs = render(
        EVERYTHING
        | {
            "namespaceOverride": "finops",
            "serviceMonitor": {"enabled": True, "namespace": "monitoring"},
            "dashboards": {"enabled": True, "namespace": "grafana"},
        }
    )
    assert one(docs, "ServiceMonitor")["metadata"]["namespace"] == "monitoring"
    assert one(docs, "ServiceMonitor")["spec"]["namespaceSelector"] == {"matchNames": ["finops"]}
    dashboards = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] != FULLNAME]
    assert dashboards and {d["metadata"]["namespace"] for d in dashboards} == {"grafana"}
    with pytest.raises(HelmError, match="namespaceOverride"):
        render({"namespaceOverride": "Not_A_Namespace"})


def test_common_labels_on_every_object_and_the_pods() -> None:
    labels = {"cost-center": "42", "team": "finops"}
    docs = render(EVERYTHING | {"commonLabels": labels})
    for doc in docs:
        assert doc["metadata"]["labels"].items() >= labels.items(), doc["kind"]
        if doc["kind"] in CORE_KINDS:
            validate(doc)
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["template"]["metadata"]["labels"].items() >= labels.items()
    assert "team" not in deployment["spec"]["selector"]["matchLabels"], "selectors stay stable"
    # The chart's own labels win: the ServiceMonitor still selects the Service.
    docs = render(EVERYTHING | {"commonLabels": {"app.kubernetes.io/name": "other"}})
    service = one(docs, "Service")
    selector = one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["labels"]["app.kubernetes.io/name"] == "budget-exporter"


def test_extra_manifests_as_objects_and_templated_strings() -> None:
    extra = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": '{{ include "budget-exporter.fullname" . }}-notes',
                "namespace": "{{ .Release.Namespace }}",
                "labels": {"app.kubernetes.io/instance": "{{ .Release.Name }}"},
            },
            "data": {"owner": "finops"},
        },
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-extra\n"
        "  labels:\n    app.kubernetes.io/instance: {{ .Release.Name }}\n"
        "stringData:\n  token: placeholder\n",
    ]
    docs = render({"extraManifests": extra})
    notes = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-notes")]
    assert [n["metadata"] for n in notes] == [
        {
            "name": f"{FULLNAME}-notes",
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/instance": RELEASE},
        }
    ]
    (secret,) = by_kind(docs, "Secret")
    assert secret["metadata"]["name"] == f"{RELEASE}-extra"
    for doc in [*notes, secret]:
        validate(doc)
    with pytest.raises(HelmError, match="extraManifests"):
        render({"extraManifests": [42]})


def test_revision_history_limit() -> None:
    assert one(render(), "Deployment")["spec"]["revisionHistoryLimit"] == 5
    deployment = one(render({"revisionHistoryLimit": 2}), "Deployment")
    assert deployment["spec"]["revisionHistoryLimit"] == 2
    with pytest.raises(HelmError, match="revisionHistoryLimit"):
        render({"revisionHistoryLimit": -1})


def test_chart_icon_is_a_file_of_the_repository() -> None:
    icon = urlparse(chart().metadata["icon"])
    assert icon.scheme == "https" and icon.netloc == "raw.githubusercontent.com"
    home = urlparse(chart().metadata["home"]).path.strip("/")
    owner, repo, branch, *path = icon.path.strip("/").split("/")
    assert f"{owner}/{repo}" == home and branch == "main"
    svg = ET.parse(ROOT.joinpath(*path)).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"


# -- ServiceMonitor options ----------------------------------------------------------


def test_service_monitor_community_options() -> None:
    values = {
        "serviceMonitor": {
            "enabled": True,
            "additionalLabels": {"release": "kube-prometheus-stack"},
            "labels": {"team": "finops"},
            "targetLabels": ["app.kubernetes.io/instance"],
            "podTargetLabels": ["azure.workload.identity/use"],
            "sampleLimit": 5000,
            "labelLimit": 30,
        }
    }
    spec_and_meta = one(render(values), "ServiceMonitor")
    labels = spec_and_meta["metadata"]["labels"]
    assert labels["release"] == "kube-prometheus-stack" and labels["team"] == "finops"
    spec = spec_and_meta["spec"]
    assert spec["targetLabels"] == ["app.kubernetes.io/instance"]
    assert spec["podTargetLabels"] == ["azure.workload.identity/use"]
    assert spec["sampleLimit"] == 5000 and spec["labelLimit"] == 30
    plain = one(render({"serviceMonitor": {"enabled": True}}), "ServiceMonitor")["spec"]
    for key in ("targetLabels", "podTargetLabels", "sampleLimit", "labelLimit"):
        assert key not in plain, "unset limits are left to Prometheus"
    with pytest.raises(HelmError, match="sampleLimit"):
        render({"serviceMonitor": {"enabled": True, "sampleLimit": -1}})


# -- values.schema.json matches values.yaml ------------------------------------------


def schema_node(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a local ``$ref`` resolved (its own description kept)."""
    ref = node.get("$ref")
    if ref is None:
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def walk_values(
    schema: dict[str, Any], node: dict[str, Any], values: dict[str, Any], path: str
) -> list[str]:
    """Keys of ``values`` the schema does not describe (missing, or without a description)."""
    found = []
    properties = node.get("properties", {})
    for key, value in values.items():
        where = f"{path}.{key}" if path else key
        if key not in properties:
            found.append(f"{where}: not in the schema")
            continue
        child = schema_node(schema, properties[key])
        if not child.get("description"):
            found.append(f"{where}: no description")
        if isinstance(value, dict) and "properties" in child and key != "config":
            found.extend(walk_values(schema, child, value, where))
    return found


def test_every_value_is_in_the_schema_with_a_description() -> None:
    schema = chart().schema
    assert schema is not None
    assert walk_values(schema, schema, chart().values, "") == []
    # And the schema's top level has no key values.yaml lacks.
    assert set(schema["properties"]) == set(chart().values)


def test_schema_walk_can_fail() -> None:
    schema = chart().schema
    assert schema is not None
    values = chart().values | {"surprise": 1, "webConfig": {"nope": True}}
    assert walk_values(schema, schema, values, "") == [
        "webConfig.nope: not in the schema",
        "surprise: not in the schema",
    ]


def test_schema_is_json() -> None:
    """One copy, valid JSON, draft-07 like Helm expects."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
