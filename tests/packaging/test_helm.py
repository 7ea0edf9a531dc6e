"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk).

Every scenario (default values and each ci/*-values.yaml) is linted and
rendered; every core object is validated against the Kubernetes schemas of the
oldest and newest supported versions; the PrometheusRule is checked by
promtool; the chart's copies of rules/ and grafana/dashboards/ must not drift.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python.chart import lint
from helm_python.errors import HelmError

from budget_exporter.config.loader import load_config
from tests.support.extras import providers_in, skip_unless_installed_for
from tests.support.helm import (
    CHART_DIR,
    CORE_KINDS,
    DASHBOARD_FILES,
    FULLNAME,
    KUBE_VERSIONS,
    NAMESPACE,
    RELEASE,
    ROOT,
    RULE_FILES,
    by_kind,
    chart,
    container,
    one,
    render,
)
from tests.support.tools import APT_PROMETHEUS, require_tool

SYNC = ROOT / "helm" / "sync.py"
SCENARIOS = {"default": {}} | {
    path.name: yaml.safe_load(path.read_text())
    for path in sorted((CHART_DIR / "ci").glob("*-values.yaml"))
}


# -- lint, render, schemas -------------------------------------------------------


def test_chart_metadata() -> None:
    meta = chart().metadata
    assert meta["apiVersion"] == "v2"
    assert meta["appVersion"] and meta["kubeVersion"].startswith(">=1.25")
    from budget_exporter import __version__

    assert meta["appVersion"] == __version__, "appVersion must follow the exporter's version"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_lint_is_clean(scenario: str) -> None:
    report = lint(CHART_DIR, copy.deepcopy(SCENARIOS[scenario]), strict=True)
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


def test_lint_reports_broken_values() -> None:
    """The lint above can fail: values against the schema are errors."""
    report = lint(CHART_DIR, {"serviceMonitor": {"enabled": "yes"}}, strict=True)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_objects_are_valid_kubernetes(scenario: str) -> None:
    docs = render(SCENARIOS[scenario])
    assert {"Deployment", "Service"} <= {d["kind"] for d in docs}
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        if doc["kind"] not in CORE_KINDS:
            assert doc["kind"] in {"ServiceMonitor", "PrometheusRule"}, doc["kind"]
            continue
        for version in KUBE_VERSIONS:
            # strict: unknown fields are errors too
            kubernetes_validate.validate(doc, version, strict=True)


def test_schema_validation_rejects_wrong_values() -> None:
    with pytest.raises(HelmError, match="serviceMonitor"):
        render({"serviceMonitor": {"enabled": "yes"}})
    with pytest.raises(HelmError, match="servicemonitor"):
        render({"servicemonitor": {"enabled": True}})
    with pytest.raises(HelmError, match="level"):
        render({"log": {"level": "verbose"}})
    with pytest.raises(HelmError, match="currency"):
        render({"config": {"budgets": [{"name": "b", "limit": 1, "currency": "usd"}]}})


def test_budgets_take_a_limit_or_a_limit_from() -> None:
    """A budget needs exactly one of limit and limit_from, as the exporter's own config says."""
    sources = [{"name": "aws-budgets", "provider": "aws_budgets"}]
    limit_from = {"source": "aws-budgets", "budget": "monthly-total"}

    def budgets(*items: dict[str, Any]) -> dict[str, Any]:
        return {"config": {"sources": sources, "budgets": list(items)}}

    docs = render(budgets({"name": "aws", "currency": "USD", "limit_from": limit_from}))
    assert "limit_from" in rendered_config(docs)
    render(budgets({"name": "fixed", "currency": "USD", "limit": 100}))
    for wrong in (
        {"name": "neither", "currency": "USD"},
        {"name": "both", "currency": "USD", "limit": 100, "limit_from": limit_from},
        {"name": "no-budget", "currency": "USD", "limit_from": {"source": "aws-budgets"}},
    ):
        with pytest.raises(HelmError, match="budgets"):
            render(budgets(wrong))
    with pytest.raises(HelmError, match="currency"):
        render(budgets({"name": "aws", "limit_from": limit_from}))


def test_kubernetes_schema_check_can_fail() -> None:
    deployment = one(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUsr"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSIONS[0], strict=True)


# -- hardened by default ---------------------------------------------------------


def test_default_pod_is_hardened() -> None:
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    main = container(docs)
    security = main["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert main["resources"]["requests"]["cpu"] and main["resources"]["requests"]["memory"]
    assert main["resources"]["limits"]["memory"]
    assert main["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    # A writable /tmp, since the root filesystem is read-only.
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert "/tmp" in mounts and mounts["/etc/budget-exporter/config"]["readOnly"] is True


def test_container_runs_the_exporter_cli() -> None:
    docs = render(
        {"log": {"level": "debug", "format": "json"}, "extraArgs": ["--web.telemetry-path=/m"]}
    )
    main = container(docs)
    assert (
        main["image"] == f"ghcr.io/budget-exporter/budget-exporter:{chart().metadata['appVersion']}"
    )
    assert main["args"] == [
        "--config.file=/etc/budget-exporter/config/budget-exporter.yml",
        "--web.listen-address=:9820",
        "--log.level=debug",
        "--log.format=json",
        "--web.read-timeout=15s",
        "--web.max-connections=512",
        "--web.telemetry-path=/m",
    ]
    assert main["ports"] == [{"name": "http", "containerPort": 9820, "protocol": "TCP"}]
    service = one(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert service["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]


def test_lifecycle_flag() -> None:
    assert "--web.enable-lifecycle" not in container(render())["args"]
    assert "--web.enable-lifecycle" in container(render({"web": {"enableLifecycle": True}}))["args"]


def test_web_limits_reach_the_exporter() -> None:
    args = container(render({"web": {"readTimeout": "30s", "maxConnections": 200}}))["args"]
    assert "--web.read-timeout=30s" in args and "--web.max-connections=200" in args
    for wrong in ({"maxConnections": 1}, {"readTimeout": "soon"}):
        with pytest.raises(HelmError, match="web"):
            render({"web": wrong})


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "ab" * 32
    main = container(render({"image": {"tag": "9.9.9", "digest": digest}}))
    assert main["image"] == f"ghcr.io/budget-exporter/budget-exporter@{digest}"


# -- configuration, secrets, identity --------------------------------------------


def rendered_config(docs: list[dict[str, Any]]) -> str:
    (config_map,) = [
        d for d in by_kind(docs, "ConfigMap") if "budget-exporter.yml" in d.get("data", {})
    ]
    return config_map["data"]["budget-exporter.yml"]


@pytest.mark.parametrize(
    "scenario", [s for s in sorted(SCENARIOS) if s == "default" or "config" in SCENARIOS[s]]
)
def test_rendered_config_is_accepted_by_the_exporter(scenario: str, tmp_path: Path) -> None:
    """The ConfigMap holds a configuration budget-exporter itself validates.

    Secret files are laid out as the pod would see them (the chart's Secret, or
    a stand-in for an existing one), and env variables get placeholder values.
    """
    values = SCENARIOS[scenario]
    docs = render(values)
    mount = container(docs)["volumeMounts"]
    text = rendered_config(docs)
    skip_unless_installed_for(providers_in(text))
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    if any(m["name"] == "secrets" for m in mount):
        for secret in by_kind(docs, "Secret"):
            for key in secret["data"]:
                (secret_dir / key).write_text("placeholder")
        for line in text.splitlines():
            if "/etc/budget-exporter/secrets/" in line:
                name = line.rsplit("/", 1)[1].strip()
                (secret_dir / name).write_text("placeholder")
    path = tmp_path / "budget-exporter.yml"
    path.write_text(text.replace("/etc/budget-exporter/secrets", str(secret_dir)))
    env = {e["name"]: "placeholder" for e in container(docs).get("env", [])}
    config = load_config(path, env=env)
    assert config.sources and config.budgets


def test_config_changes_roll_the_pod() -> None:
    def checksum(values: dict[str, Any]) -> str:
        return one(render(values), "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    base = checksum({})
    assert base == checksum({})
    changed = copy.deepcopy(chart().values["config"])
    changed["budgets"][0]["limit"] = 99
    assert checksum({"config": changed}) != base


def test_chart_secret_is_mounted_for_file_credentials() -> None:
    values = SCENARIOS["secrets-values.yaml"]
    docs = render(values)
    secret = one(docs, "Secret")
    assert secret["metadata"]["name"] == FULLNAME
    assert set(secret["data"]) == set(values["secrets"])
    assert "sk-admin-example-not-a-real-key" not in json.dumps(secret), "must be base64"
    pod = one(docs, "Deployment")["spec"]["template"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "secrets"]
    assert volume["secret"]["secretName"] == FULLNAME
    (mount,) = [m for m in container(docs)["volumeMounts"] if m["name"] == "secrets"]
    assert mount == {
        "name": "secrets",
        "mountPath": "/etc/budget-exporter/secrets",
        "readOnly": True,
    }
    assert "checksum/secret" in pod["metadata"]["annotations"]
    assert "sk-admin" not in rendered_config(docs), "secrets never go into the ConfigMap"


def test_existing_secret_and_configmap() -> None:
    docs = render(SCENARIOS["existing-secret-values.yaml"])
    assert by_kind(docs, "Secret") == []
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "secrets"]
    assert volume["secret"]["secretName"] == "budget-exporter-credentials"
    assert container(docs)["env"][0]["valueFrom"]["secretKeyRef"]["key"] == "billing-token"
    assert pod["volumes"][0]["configMap"]["name"] == FULLNAME

    docs = render(SCENARIOS["existing-configmap-values.yaml"])
    assert by_kind(docs, "ConfigMap") == []
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    (config,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert config["configMap"]["name"] == "budget-exporter-config"
    assert not any(v["name"] == "secrets" for v in pod["volumes"])


@pytest.mark.parametrize(
    ("scenario", "annotation"),
    [
        ("aws-irsa-values.yaml", "eks.amazonaws.com/role-arn"),
        ("gke-workload-identity-values.yaml", "iam.gke.io/gcp-service-account"),
        ("gke-network-policy-values.yaml", "iam.gke.io/gcp-service-account"),
        ("existing-secret-values.yaml", "azure.workload.identity/client-id"),
    ],
)
def test_cloud_identity_on_the_service_account(scenario: str, annotation: str) -> None:
    docs = render(SCENARIOS[scenario])
    account = one(docs, "ServiceAccount")
    assert account["metadata"]["annotations"][annotation]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"] == FULLNAME


# -- optional objects: off by default, exact when on ---------------------------


OPTIONAL = {
    "ServiceMonitor": {"serviceMonitor": {"enabled": True}},
    "PrometheusRule": {"prometheusRule": {"enabled": True}},
    "PodDisruptionBudget": {"podDisruptionBudget": {"enabled": True}},
    "NetworkPolicy": {"networkPolicy": {"enabled": True}},
}


def test_optional_objects_are_off_by_default() -> None:
    kinds = sorted(d["kind"] for d in render())
    assert kinds == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]


@pytest.mark.parametrize("kind", sorted(OPTIONAL))
def test_each_gate_adds_exactly_its_object(kind: str) -> None:
    base = sorted(d["kind"] for d in render())
    assert sorted(d["kind"] for d in render(OPTIONAL[kind])) == sorted([*base, kind])


def test_service_monitor() -> None:
    values = SCENARIOS["monitoring-values.yaml"]
    monitor = one(render(values), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "2m"
    assert endpoint["metricRelabelings"] == values["serviceMonitor"]["metricRelabelings"]
    service = one(render(values), "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_pdb_and_network_policy() -> None:
    docs = render(SCENARIOS["monitoring-values.yaml"])
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == selector
    assert policy["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert policy["ingress"][0]["from"][0]["namespaceSelector"]
    ports = [p["port"] for rule in policy["egress"] for p in rule["ports"]]
    assert sorted(ports) == [53, 53, 443]
    pdb = one(
        render({"podDisruptionBudget": {"enabled": True, "minAvailable": 1}}), "PodDisruptionBudget"
    )
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]


def allows(policy: dict[str, Any], address: str, port: int, protocol: str = "TCP") -> bool:
    """Whether the NetworkPolicy's egress rules let the pod reach ``address:port``."""
    target = ipaddress.ip_address(address)

    def peer_matches(peer: dict[str, Any]) -> bool:
        block = peer.get("ipBlock")
        if block is None:
            return False  # pod and namespace selectors never match an address outside
        network = ipaddress.ip_network(block["cidr"])
        if target.version != network.version or target not in network:
            return False
        return not any(target in ipaddress.ip_network(cidr) for cidr in block.get("except", []))

    for rule in policy["spec"]["egress"]:
        peers = rule.get("to")
        if peers and not any(peer_matches(peer) for peer in peers):
            continue
        ports = rule.get("ports")
        if not ports or any(
            p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports
        ):
            return True
    return False


GKE_METADATA = [("169.254.169.254", 80), ("169.254.169.252", 988)]
EKS_POD_IDENTITY = [("169.254.170.23", 80), ("fd00:ec2::23", 80)]


def test_default_egress_is_dns_and_https_only() -> None:
    policy = one(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert allows(policy, "203.0.113.7", 443)
    assert allows(policy, "10.0.0.10", 53, "UDP")
    assert not allows(policy, "203.0.113.7", 80)
    for address, port in [*GKE_METADATA, *EKS_POD_IDENTITY]:
        assert not allows(policy, address, port), "no metadata endpoint unless asked"


def test_network_policy_lets_gke_workload_identity_reach_the_metadata_server() -> None:
    values = SCENARIOS["gke-network-policy-values.yaml"]
    docs = render(values)
    assert one(docs, "ServiceAccount")["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    policy = one(docs, "NetworkPolicy")
    # Dataplane V2 checks the address the pod dials; Calico sees the node's DNAT target.
    for address, port in GKE_METADATA:
        assert allows(policy, address, port), (address, port)
    assert allows(policy, "142.250.0.1", 443), "the Google APIs themselves"
    for address, port in EKS_POD_IDENTITY:
        assert not allows(policy, address, port)
    assert not allows(policy, "169.254.169.254", 443 + 1)


def test_network_policy_lets_eks_pod_identity_reach_its_agent_and_not_imds() -> None:
    policy = one(render(SCENARIOS["aws-pod-identity-values.yaml"]), "NetworkPolicy")
    for address, port in EKS_POD_IDENTITY:
        assert allows(policy, address, port), (address, port)
    for address, port in GKE_METADATA:
        assert not allows(policy, address, port), "the node's instance role stays out of reach"


def test_network_policy_extra_destinations() -> None:
    extra = [
        {"cidr": "10.20.0.0/16", "ports": [3128, 8080]},
        {"cidr": "fd00:10::/64", "ports": [514], "protocol": "UDP"},
    ]
    values = {"networkPolicy": {"enabled": True, "egress": {"extra": extra}}}
    policy = one(render(values), "NetworkPolicy")
    assert allows(policy, "10.20.3.4", 3128) and allows(policy, "10.20.3.4", 8080)
    assert not allows(policy, "10.21.0.1", 3128) and not allows(policy, "10.20.3.4", 22)
    assert allows(policy, "fd00:10::5", 514, "UDP") and not allows(policy, "fd00:10::5", 514)
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(policy, version, strict=True)
    for wrong in ({"cidr": "proxy.internal", "ports": [3128]}, {"cidr": "10.0.0.0/8"}):
        with pytest.raises(HelmError, match="extra"):
            render({"networkPolicy": {"enabled": True, "egress": {"extra": [wrong]}}})


# -- rules and dashboards: exactly the repository's --------------------------------


def test_chart_copies_are_in_sync() -> None:
    check = subprocess.run(
        [sys.executable, str(SYNC), "--check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr


def test_sync_check_detects_drift(tmp_path: Path) -> None:
    """helm/sync.py --check fails on an edited, a missing and an extra copy."""
    tree = tmp_path / "repo"
    for part in ("rules", "grafana/dashboards", "helm"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("tests"))
    sync = tree / "helm" / "sync.py"

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(sync), "--check"], capture_output=True, text=True, check=False
        )

    subprocess.run([sys.executable, str(sync)], check=True)
    assert check().returncode == 0
    copy_ = tree / "helm/budget-exporter/files/rules" / RULE_FILES[0].name
    copy_.write_text(copy_.read_text() + "\n# edited\n")
    (tree / "helm/budget-exporter/files/dashboards" / DASHBOARD_FILES[0].name).unlink()
    (tree / "helm/budget-exporter/files/rules/old.yml").write_text("groups: []\n")
    result = check()
    assert result.returncode == 1
    assert "differs from" in result.stderr
    assert "missing" in result.stderr
    assert "old.yml: no longer in rules" in result.stderr
    subprocess.run([sys.executable, str(sync)], check=True)
    assert check().returncode == 0


DEFAULT_SELECTOR = 'job="budget-exporter"'


def repository_groups(selector: str) -> list[dict[str, Any]]:
    """The groups of rules/*.yml with the exporter's job selector replaced, as the chart must."""
    groups = [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    for group in groups:
        for rule in group["rules"]:
            rule["expr"] = rule["expr"].replace(DEFAULT_SELECTOR, selector)
    return groups


def alert_expr(groups: list[dict[str, Any]], name: str) -> str:
    (expr,) = [r["expr"] for g in groups for r in g["rules"] if r.get("alert") == name]
    return str(expr)


def promtool_check(tmp_path: Path, groups: list[dict[str, Any]]) -> None:
    promtool = require_tool("promtool", install=APT_PROMETHEUS)
    rules_file = tmp_path / "from-chart.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_rule_holds_the_rules_with_the_release_selector(tmp_path: Path) -> None:
    """The repository's rules, unchanged but for the selector of the exporter's own job."""
    rule = one(render({"prometheusRule": {"enabled": True}}), "PrometheusRule")
    selector = f'job="budget-exporter",namespace="{NAMESPACE}"'
    assert rule["spec"]["groups"] == repository_groups(selector)
    assert f"up{{{selector}}} == 0" in alert_expr(rule["spec"]["groups"], "BudgetExporterDown")
    # Alert templates reach Prometheus as written, not rendered by Helm.
    assert "{{ $labels.budget }}" in json.dumps(rule["spec"])
    promtool_check(tmp_path, rule["spec"]["groups"])


def test_dashboard_configmaps_hold_exactly_the_dashboards() -> None:
    values = SCENARIOS["monitoring-values.yaml"]
    maps = [d for d in by_kind(render(values), "ConfigMap") if d["metadata"]["name"] != FULLNAME]
    assert len(maps) == len(DASHBOARD_FILES)
    found = {}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "FinOps"}
        assert config_map["metadata"]["namespace"] == "monitoring"
        ((key, text),) = config_map["data"].items()
        found[key] = json.loads(text)
    assert found == {p.name: json.loads(p.read_text()) for p in DASHBOARD_FILES}
    custom = render({"dashboards": {"enabled": True, "label": "dash", "labelValue": "yes"}})
    labels = [d["metadata"]["labels"] for d in by_kind(custom, "ConfigMap")]
    assert sum(1 for lab in labels if lab.get("dash") == "yes") == len(DASHBOARD_FILES)


def test_notes_render() -> None:
    notes = chart().render({"replicaCount": 2}, name=RELEASE, namespace=NAMESPACE)[
        "budget-exporter/templates/NOTES.txt"
    ]
    assert f"port-forward svc/{FULLNAME} 9820" in notes
    assert "WARNING: replicaCount is 2" in notes


def test_network_policy_opens_the_meters_ports() -> None:
    """The docs' meter (``http://prometheus:9090``) is reachable with the default policy: the
    port of every prometheus source's url is allowed, and meterPorts adds those it cannot read."""
    sources = [
        {"name": "demo", "provider": "demo", "monthly_spend": 10},
        {"name": "meter", "provider": "prometheus", "url": "http://prometheus.monitoring:9090",
         "query": "sum(spend)", "currency": "USD"},
        {"name": "mimir", "provider": "prometheus", "url": "https://mimir.example",
         "query": "sum(spend)", "currency": "USD"},
        {"name": "env", "provider": "prometheus", "url": "${PROMETHEUS_URL}",
         "query": "sum(spend)", "currency": "USD"},
    ]  # fmt: skip
    values = {
        "config": {"sources": sources, "budgets": [{"name": "b", "limit": 1, "currency": "USD"}]},
        "networkPolicy": {"enabled": True, "egress": {"meterPorts": [8428]}},
    }
    policy = one(render(values), "NetworkPolicy")
    for port in (443, 9090, 8428):
        assert allows(policy, "10.96.0.20", port), port
    assert not allows(policy, "10.96.0.20", 80) and not allows(policy, "10.96.0.20", 9091)
    plain = one(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert not allows(plain, "10.96.0.20", 9090), "no meter, no port"
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(policy, version, strict=True)
