"""The chart's ``storage``: ``--storage.path`` on a PersistentVolumeClaim or an emptyDir."""

from __future__ import annotations

import kubernetes_validate
import pytest
from helm_python.errors import HelmError

from tests.support.helm import FULLNAME, KUBE_VERSIONS, by_kind, container, one, render

PATH = "/var/lib/budget-exporter"


def storage_volume(docs: list[dict]) -> dict:
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == "storage"]
    return volume


def test_off_by_default() -> None:
    docs = render()
    assert not any(a.startswith("--storage.path") for a in container(docs)["args"])
    assert not by_kind(docs, "PersistentVolumeClaim")


def test_a_claim_mounted_where_the_flag_points() -> None:
    docs = render({"storage": {"enabled": True, "size": "2Gi", "storageClassName": "fast"}})
    assert f"--storage.path={PATH}" in container(docs)["args"]
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["storage"]["mountPath"] == PATH and not mounts["storage"].get("readOnly")
    claim = one(docs, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == f"{FULLNAME}-storage"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast",
        "resources": {"requests": {"storage": "2Gi"}},
    }
    assert storage_volume(docs) == {
        "name": "storage",
        "persistentVolumeClaim": {"claimName": f"{FULLNAME}-storage"},
    }
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(claim, version, strict=True)
    # Recreate (the default): the old pod lets go of a ReadWriteOnce claim before the new one starts
    assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}


def test_an_existing_claim_or_an_empty_dir() -> None:
    docs = render({"storage": {"enabled": True, "existingClaim": "kept"}})
    assert not by_kind(docs, "PersistentVolumeClaim")
    assert storage_volume(docs)["persistentVolumeClaim"] == {"claimName": "kept"}
    docs = render({"storage": {"enabled": True, "persistent": False}, "replicaCount": 2})
    assert not by_kind(docs, "PersistentVolumeClaim")
    assert storage_volume(docs) == {"name": "storage", "emptyDir": {"sizeLimit": "1Gi"}}


def test_replicas_need_a_claim_every_pod_can_mount() -> None:
    with pytest.raises(HelmError, match="ReadWriteMany"):
        render({"storage": {"enabled": True}, "replicaCount": 2})
    docs = render(
        {"storage": {"enabled": True, "accessModes": ["ReadWriteMany"]}, "replicaCount": 2}
    )
    assert one(docs, "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_the_schema_rejects_wrong_storage_values() -> None:
    with pytest.raises(HelmError, match="storage"):
        render({"storage": {"enabled": True, "size": "lots"}})
    with pytest.raises(HelmError, match="storage"):
        render({"storage": {"enabled": True, "accessModes": ["ReadWriteSometimes"]}})
    with pytest.raises(HelmError, match="storage"):
        render({"storage": {"path": "/data"}})
