"""deploy/kuberay: the RayJob manifest against KubeRay's own CRD schema (vendored in tests/data/kuberay)."""

from __future__ import annotations

import functools
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "tests" / "data" / "kuberay" / "ray.io_rayjobs.yaml"
MANIFEST = ROOT / "deploy" / "kuberay" / "rayjob-capacity.yaml"


@functools.cache
def rayjob_schema(version: str = "v1") -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # 1.4 MB of YAML: libyaml's parser where there is one
    crd = yaml.load(CRD.read_text(), Loader=loader)
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == "RayJob"
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema: dict[str, Any] = served["schema"]["openAPIV3Schema"]
    return schema


def test_the_rayjob_manifest_is_valid_against_kuberays_crd() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    jsonschema.validate(manifest, rayjob_schema())


def test_the_schema_does_catch_a_broken_manifest() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    manifest["spec"]["shutdownAfterJobFinishes"] = "yes"  # a string where the CRD wants a boolean
    with pytest.raises(jsonschema.ValidationError, match="boolean"):
        jsonschema.validate(manifest, rayjob_schema())
    manifest = yaml.safe_load(MANIFEST.read_text())
    manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "four"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, rayjob_schema())


def test_the_entrypoint_runs_a_capacity_search_keeps_the_report_and_names_no_secret() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    words = shlex.split(manifest["spec"]["entrypoint"])
    assert words[:2] == ["lkswarm", "capacity"] and "--url" in words
    report = words[words.index("--json") + 1]
    head = manifest["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    mounts = [m["mountPath"] for c in head["containers"] for m in c.get("volumeMounts", [])]
    assert any(report.startswith(mount + "/") for mount in mounts), "the report lands on the mounted volume"
    env = {e["name"]: e for c in head["containers"] for e in c.get("env", [])}
    assert "secretKeyRef" in env["LIVEKIT_API_SECRET"]["valueFrom"], "the secret comes from a Kubernetes Secret"
    assert "secret" not in manifest["spec"]["entrypoint"].lower()
