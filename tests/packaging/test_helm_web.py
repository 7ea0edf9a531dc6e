"""`--web.config.file` in the chart: TLS and basic auth, the probes and the ServiceMonitor.

Exporter-toolkit style web configurations protect every path, the health
endpoints included, and the kubelet has no credentials. The chart therefore
adapts the probes: over HTTPS when the exporter serves TLS, with
``probeHttpHeaders`` when given, else (basic auth or client certificates
required) as a TCP connect. The rendered probes are then played, as the
kubelet would, against the real exporter started with the rendered web
configuration.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests
import yaml
from helm_python.errors import HelmError

from budget_exporter.web.webconfig import WebConfig, load_web_config
from tests.support.exporter import ExporterProcess, exporters
from tests.support.helm import CHART_DIR, CORE_KINDS, FULLNAME, container, one, render, validate
from tests.support.tls import self_signed_cert

WEB_SECRET = f"{FULLNAME}-web-config"
TLS_FILES = {
    "cert_file": "/etc/budget-exporter/tls/tls.crt",
    "key_file": "/etc/budget-exporter/tls/tls.key",
}
PASSWORD = "probe-password-not-real"
# bcrypt with the lowest cost, so that the exporter checks it quickly in the tests.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
BASIC = "Basic " + base64.b64encode(f"probe:{PASSWORD}".encode()).decode()
MONITOR_AUTH = {
    "basicAuth": {
        "username": {"name": "scrape-auth", "key": "username"},
        "password": {"name": "scrape-auth", "key": "password"},
    },
    "tlsConfig": {
        "ca": {"secret": {"name": "budget-exporter-tls", "key": "ca.crt"}},
        "serverName": f"{FULLNAME}.monitoring.svc",
    },
}


def probes(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    main = container(docs)
    return {kind: main[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}


def web_config_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    secret = next(d for d in docs if d["metadata"]["name"] == WEB_SECRET)
    decoded: dict[str, Any] = yaml.safe_load(base64.b64decode(secret["data"]["web-config.yml"]))
    return decoded


def with_web(web: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"webConfig": web, "serviceMonitor": {"enabled": True} | MONITOR_AUTH} | more


def check_valid(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in CORE_KINDS:
            validate(doc)


# -- renderings ----------------------------------------------------------------------


def test_no_web_config_by_default() -> None:
    docs = render({"serviceMonitor": {"enabled": True}})
    assert not any(a.startswith("--web.config.file") for a in container(docs)["args"])
    assert all(p["httpGet"].get("scheme") is None for p in probes(docs).values())
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "http"


def test_tls_and_basic_auth_inline() -> None:
    web = {
        "config": {
            "tls_server_config": TLS_FILES,
            "basic_auth_users": {"prometheus": HASH, "probe": HASH},
        },
        "tlsSecret": "budget-exporter-tls",
    }
    docs = render(with_web(web))
    check_valid(docs)
    assert web_config_of(docs) == web["config"]
    main = container(docs)
    assert "--web.config.file=/etc/budget-exporter/web/web-config.yml" in main["args"]
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    assert mounts["web-config"] == {
        "name": "web-config",
        "mountPath": "/etc/budget-exporter/web",
        "readOnly": True,
    }
    assert mounts["tls"]["mountPath"] == "/etc/budget-exporter/tls" and mounts["tls"]["readOnly"]
    pod = one(docs, "Deployment")["spec"]["template"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["web-config"]["secret"]["secretName"] == WEB_SECRET
    assert volumes["tls"]["secret"]["secretName"] == "budget-exporter-tls"
    assert "checksum/web-config" in pod["metadata"]["annotations"]
    assert HASH not in str(one(docs, "Deployment")), "the hashes stay in the Secret"
    # Basic auth on every path, no credentials for the kubelet: TCP probes, timings kept.
    for name, probe in probes(docs).items():
        assert probe["tcpSocket"] == {"port": "http"} and "httpGet" not in probe, name
    assert probes(docs)["readinessProbe"]["periodSeconds"] == 10
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["basicAuth"] == MONITOR_AUTH["basicAuth"]
    assert endpoint["tlsConfig"] == MONITOR_AUTH["tlsConfig"]


def test_tls_only_keeps_http_probes_over_https() -> None:
    docs = render(with_web({"config": {"tls_server_config": TLS_FILES}, "tlsSecret": "tls"}))
    check_valid(docs)
    ready = probes(docs)["readinessProbe"]["httpGet"]
    assert ready == {"path": "/-/ready", "port": "http", "scheme": "HTTPS"}
    assert probes(docs)["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "https"


def test_probe_headers_carry_a_probe_users_credentials() -> None:
    headers = [{"name": "Authorization", "value": BASIC}]
    web = {
        "config": {"tls_server_config": TLS_FILES, "basic_auth_users": {"probe": HASH}},
        "tlsSecret": "tls",
        "probeHttpHeaders": headers,
    }
    docs = render(with_web(web))
    check_valid(docs)
    for probe in probes(docs).values():
        assert probe["httpGet"]["scheme"] == "HTTPS"
        assert probe["httpGet"]["httpHeaders"] == headers


def test_basic_auth_without_tls() -> None:
    docs = render(with_web({"config": {"basic_auth_users": {"prometheus": HASH}}}))
    check_valid(docs)
    assert all("tcpSocket" in p for p in probes(docs).values())
    assert "tls" not in {
        v["name"] for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "http"


def test_required_client_certificates_always_probe_by_tcp() -> None:
    tls = TLS_FILES | {
        "client_auth_type": "RequireAndVerifyClientCert",
        "client_ca_file": "/etc/budget-exporter/tls/ca.crt",
    }
    web = {
        "config": {"tls_server_config": tls},
        "tlsSecret": "tls",
        "probeHttpHeaders": [{"name": "Authorization", "value": BASIC}],
    }
    assert all("tcpSocket" in p for p in probes(render(with_web(web))).values())


def test_existing_secret() -> None:
    """The chart cannot read it: TCP probes unless told; scheme from webConfig.tls."""
    web = {"existingSecret": "exporter-web", "existingSecretKey": "web.yml", "tls": True}
    docs = render(with_web(web))
    check_valid(docs)
    assert not [d for d in docs if d["metadata"]["name"] == WEB_SECRET]
    main = container(docs)
    assert "--web.config.file=/etc/budget-exporter/web/web.yml" in main["args"]
    pod = one(docs, "Deployment")["spec"]["template"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == "web-config"]
    assert volume["secret"]["secretName"] == "exporter-web"
    assert volume["secret"]["items"] == [{"key": "web.yml", "path": "web.yml"}]
    assert "checksum/web-config" not in pod["metadata"]["annotations"]
    assert all("tcpSocket" in p for p in probes(docs).values())
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "https"
    # A TLS-only configuration: say so, and the probes stay HTTP(S).
    docs = render(with_web(web | {"probeMode": "httpGet"}))
    assert probes(docs)["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    # Explicit scheme wins over the detection.
    docs = render(with_web(web, serviceMonitor={"enabled": True, "scheme": "http"}))
    assert one(docs, "ServiceMonitor")["spec"]["endpoints"][0]["scheme"] == "http"


def test_wrong_web_configs_are_refused() -> None:
    for wrong, problem in (
        ({"config": {"basic_auth_users": {"prometheus": "plain-password"}}}, "basic_auth_users"),
        ({"config": {"tls_server_config": {"cert_file": "a.crt"}}}, "key_file"),
        ({"config": {"tls": {}}}, "tls"),
        ({"probeMode": "exec"}, "probeMode"),
        ({"probeHttpHeaders": [{"name": "Authorization"}]}, "value"),
    ):
        with pytest.raises(HelmError, match=problem):
            render({"webConfig": wrong})
    with pytest.raises(HelmError, match="basicAuth"):
        render({"serviceMonitor": {"basicAuth": {"username": "prometheus"}}})


@pytest.mark.parametrize(
    "scenario",
    [
        p.name
        for p in sorted((CHART_DIR / "ci").glob("*-values.yaml"))
        if "webConfig" in p.read_text()
    ],
)
def test_ci_web_configs_are_accepted_by_the_exporter(scenario: str) -> None:
    values = yaml.safe_load((CHART_DIR / "ci" / scenario).read_text())
    docs = render(values)
    config = WebConfig.model_validate(web_config_of(docs))
    assert config.tls_server_config is not None and config.basic_auth_users
    ready = probes(docs)["readinessProbe"]["httpGet"]
    assert ready["scheme"] == "HTTPS" and ready["httpHeaders"][0]["name"] == "Authorization"
    user = base64.b64decode(ready["httpHeaders"][0]["value"].removeprefix("Basic ")).decode()
    assert user.split(":", 1)[0] in config.basic_auth_users, "the probe user exists"


# -- the rendered probes against the real exporter -------------------------------------


@pytest.fixture
def running() -> Iterator[Callable[..., ExporterProcess]]:
    yield from exporters()


def start_as_rendered(
    docs: list[dict[str, Any]], tmp_path: Path, start: Callable[..., ExporterProcess]
) -> tuple[ExporterProcess, str]:
    """The exporter with the chart's config and web config, the pod's mounts under tmp_path."""
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    self_signed_cert(tls_dir / "tls.crt", tls_dir / "tls.key")
    web = yaml.safe_dump(web_config_of(docs)).replace("/etc/budget-exporter/tls", str(tls_dir))
    (tmp_path / "web-config.yml").write_text(web)
    load_web_config(str(tmp_path / "web-config.yml"))  # what the exporter accepts at start
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    (tmp_path / "budget-exporter.yml").write_text(config_map["data"]["budget-exporter.yml"])
    exporter = start(
        tmp_path / "budget-exporter.yml", f"--web.config.file={tmp_path / 'web-config.yml'}"
    )
    return exporter, exporter.url.replace("http://", "https://")


def kubelet_probe(probe: dict[str, Any], base: str, port: int) -> bool:
    """One probe as the kubelet runs it: no certificate check, only the probe's own headers."""
    if "tcpSocket" in probe:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True
        except OSError:
            return False
    get = probe["httpGet"]
    scheme = get.get("scheme", "HTTP").lower()
    url = f"{scheme}://{base.split('://', 1)[1]}{get['path']}"
    headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
    try:
        answer = requests.get(url, headers=headers, verify=False, timeout=2)
    except requests.RequestException:
        return False
    return 200 <= answer.status_code < 400


def wait_for(check: Callable[[], bool], exporter: ExporterProcess, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        assert exporter.proc.poll() is None, exporter.stop()[1]
        time.sleep(0.1)
    raise AssertionError(f"probe never passed: {exporter.stop()[1]}")


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_rendered_probes_pass_against_the_exporter(
    tmp_path: Path, running: Callable[..., ExporterProcess]
) -> None:
    """TLS + basic auth with probeHttpHeaders: the kubelet's probes pass; Prometheus' scrape too."""
    web = {
        "config": {
            "tls_server_config": TLS_FILES,
            "basic_auth_users": {"prometheus": HASH, "probe": HASH},
        },
        "tlsSecret": "tls",
        "probeHttpHeaders": [{"name": "Authorization", "value": BASIC}],
    }
    docs = render(with_web(web))
    exporter, base = start_as_rendered(docs, tmp_path, running)
    port = int(base.rsplit(":", 1)[1])
    rendered = probes(docs)
    wait_for(lambda: kubelet_probe(rendered["readinessProbe"], base, port), exporter)
    for name, probe in rendered.items():
        assert kubelet_probe(probe, base, port), name
        assert "tcpSocket" not in probe
    # Without the header the same request is refused: the probe passes on its credentials.
    bare = {
        "httpGet": {
            k: v for k, v in rendered["readinessProbe"]["httpGet"].items() if k != "httpHeaders"
        }
    }
    assert not kubelet_probe(bare, base, port)
    metrics = requests.get(
        f"{base}/metrics", auth=("prometheus", PASSWORD), verify=False, timeout=5
    )
    assert metrics.status_code == 200 and "budget_spend_amount" in metrics.text


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tcp_probes_pass_where_http_probes_cannot(
    tmp_path: Path, running: Callable[..., ExporterProcess]
) -> None:
    web = {
        "config": {"tls_server_config": TLS_FILES, "basic_auth_users": {"prometheus": HASH}},
        "tlsSecret": "tls",
    }
    docs = render(with_web(web))
    exporter, base = start_as_rendered(docs, tmp_path, running)
    port = int(base.rsplit(":", 1)[1])
    rendered = probes(docs)
    wait_for(lambda: kubelet_probe(rendered["livenessProbe"], base, port), exporter)
    assert all(kubelet_probe(p, base, port) for p in rendered.values())
    # What an httpGet probe would get: 401.
    default = render()
    assert not kubelet_probe(
        {"httpGet": probes(default)["livenessProbe"]["httpGet"] | {"scheme": "HTTPS"}}, base, port
    )
    assert requests.get(f"{base}/-/healthy", verify=False, timeout=5).status_code == 401, (
        "the exporter protects its health endpoints"
    )
