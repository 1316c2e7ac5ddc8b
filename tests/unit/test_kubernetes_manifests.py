"""manifests/kubernetes: a kustomize folder whose every object is valid Kubernetes (offline,
against the JSON schemas kubernetes-validate ships) and runs twokey locked down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from app.connector_setup import check_policy_file

FOLDER = Path(__file__).resolve().parents[2] / "manifests" / "kubernetes"
KUBERNETES = "1.30.0"


def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    return doc


def objects() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        found.extend(d for d in yaml.safe_load_all((FOLDER / name).read_text()) if d)
    return found


def one(kind: str) -> dict[str, Any]:
    [found] = [o for o in objects() if o["kind"] == kind]
    return found


def test_the_kustomization_lists_every_manifest_in_the_folder() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in FOLDER.glob("*.yaml")} - {"kustomization.yaml", "policy.yaml"}
    assert listed == on_disk
    [generator] = kustomization()["configMapGenerator"]
    for entry in generator["files"]:
        assert (FOLDER / entry.rpartition("=")[2]).is_file()


def test_every_object_is_valid_kubernetes() -> None:
    validate = pytest.importorskip("kubernetes_validate")
    kinds = set()
    for doc in objects():
        validate.validate(doc, KUBERNETES, strict=True)
        kinds.add(doc["kind"])
    assert kinds >= {
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceAccount",
    }


def test_the_statefulset_is_locked_down_and_sized() -> None:
    sts = one("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["volumeClaimTemplates"], "one journal volume per replica"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    security = container["securityContext"]
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["envFrom"] == [{"secretRef": {"name": "twokey"}}]


def test_names_refer_to_objects_that_exist() -> None:
    sts = one("StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    services = {o["metadata"]["name"]: o for o in objects() if o["kind"] == "Service"}
    assert services[sts["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    assert pod["serviceAccountName"] == one("ServiceAccount")["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget",):
        assert one(kind)["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    [policy_volume] = [v for v in pod["volumes"] if "configMap" in v]
    assert policy_volume["configMap"]["name"] == kustomization()["configMapGenerator"][0]["name"]


def test_the_shipped_policy_passes_policy_check() -> None:
    code, text = check_policy_file(FOLDER / "policy.yaml", strict=False)
    assert code == 0, text
