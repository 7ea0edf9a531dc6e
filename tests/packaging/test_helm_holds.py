"""`sharedHolds` in the chart: the configuration's `global.check.holds` and the mounted Secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_python.errors import HelmError

from budget_exporter.config.loader import load_config
from tests.support.helm import container, one, render, validate

SHARED = {
    "replicaCount": 2,
    "sharedHolds": {
        "enabled": True,
        "url": "rediss://budget-redis.budget.svc:6379/0",
        "username": "exporter",
        "passwordSecret": "budget-redis",
        "passwordKey": "redis-password",
        "caSecret": "budget-redis-tls",
        "onUnavailable": "fail_closed",
    },
}


def rendered_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    text = one(docs, "ConfigMap")["data"]["budget-exporter.yml"]
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def test_shared_holds_configure_redis_and_mount_its_secrets(tmp_path: Path) -> None:
    docs = render(SHARED)
    config = rendered_config(docs)
    assert config["global"]["check"]["holds"] == {
        "store": "redis",
        "redis": {
            "url": "rediss://budget-redis.budget.svc:6379/0",
            "on_unavailable": "fail_closed",
            "username": "exporter",
            "password_file": "/etc/budget-exporter/redis/redis-password",
            "ca_file": "/etc/budget-exporter/redis-ca/ca.crt",
        },
    }
    assert config["global"]["stop_ratio"] == 0.95  # the rest of `config` is kept
    # The rendered configuration is one the exporter accepts, the Secret's file mounted
    # (here: in a temporary folder).
    mounted = tmp_path / "redis-password"
    mounted.write_text("from-the-secret\n")
    config["global"]["check"]["holds"]["redis"]["password_file"] = str(mounted)
    path = tmp_path / "budget-exporter.yml"
    path.write_text(yaml.safe_dump(config))
    holds = load_config(path).global_.check.holds
    assert holds.store == "redis" and holds.redis is not None
    assert holds.redis.on_unavailable == "fail_closed"

    deployment = one(docs, "Deployment")
    validate(deployment)
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["redis-password"]["mountPath"] == "/etc/budget-exporter/redis"
    assert mounts["redis-ca"]["mountPath"] == "/etc/budget-exporter/redis-ca"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["redis-password"]["secret"]["secretName"] == "budget-redis"
    assert volumes["redis-password"]["secret"]["items"] == [
        {"key": "redis-password", "path": "redis-password"}
    ]
    assert volumes["redis-ca"]["secret"]["secretName"] == "budget-redis-tls"
    assert deployment["spec"]["replicas"] == 2


def test_off_by_default_and_the_config_unchanged() -> None:
    docs = render()
    assert "holds" not in rendered_config(docs)["global"].get("check", {})
    names = {m["name"] for m in container(docs)["volumeMounts"]}
    assert not names & {"redis-password", "redis-ca"}


def test_a_url_is_required() -> None:
    with pytest.raises(HelmError, match=r"sharedHolds\.url is required"):
        render({"sharedHolds": {"enabled": True}})


@pytest.mark.parametrize(
    "values",
    [
        {"sharedHolds": {"url": "redis://user:pw@redis:6379"}},
        {"sharedHolds": {"url": "http://redis"}},
        {"sharedHolds": {"onUnavailable": "maybe"}},
        {"sharedHolds": {"port": 6379}},
    ],
)
def test_the_schema_refuses_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(HelmError):
        render(values)
