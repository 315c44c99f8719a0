import subprocess

import pytest
import yaml

from tests.deploy.manifests import K8S_DIR, stage_last
from tests.tools import tool

# The oldest Kubernetes release the manifests promise to work on, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
NAME = "inception-v2-service"


def kustomization() -> dict:
    return yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())


def test_kustomization_applies_every_manifest():
    manifests = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization()["resources"]) == manifests


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_kubernetes(version):
    paths = [str(K8S_DIR / name) for name in kustomization()["resources"]]
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", version, *paths],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(paths), result.stdout + result.stderr


def container(k8s) -> dict:
    (only,) = k8s[f"Deployment/{NAME}"]["spec"]["template"]["spec"]["containers"]
    return only


def test_probes_gate_traffic_on_readiness_and_restart_on_liveness(k8s):
    probes = {kind: container(k8s)[f"{kind}Probe"] for kind in ("startup", "readiness", "liveness")}
    assert {kind: probe["httpGet"]["path"] for kind, probe in probes.items()} == {
        "startup": "/readyz",
        "readiness": "/readyz",
        "liveness": "/healthz",
    }
    assert {probe["httpGet"]["port"] for probe in probes.values()} == {"http"}
    startup = probes["startup"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 180, (
        "as long as the image's start period"
    )


def test_grace_period_outlasts_the_endpoint_removal_and_the_drain(k8s):
    pod = k8s[f"Deployment/{NAME}"]["spec"]["template"]["spec"]
    env = {item["name"]: item.get("value") for item in container(k8s)["env"]}
    pre_stop = container(k8s)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert env["SHUTDOWN_DELAY_S"] == "0", "the preStop sleep does its job in Kubernetes"
    drain = float(env["SHUTDOWN_DELAY_S"]) + float(env["SHUTDOWN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > int(pre_stop[1]) + drain + 5


def test_pods_run_as_the_images_user(k8s, stages):
    uid, _, gid = stage_last(stages, "runtime", "USER").arguments.partition(":")
    security = k8s[f"Deployment/{NAME}"]["spec"]["template"]["spec"]["securityContext"]
    assert (security["runAsNonRoot"], security["runAsUser"], security["runAsGroup"]) == (
        True,
        int(uid),
        int(gid),
    )


def test_resources_are_requested_and_limited(k8s):
    resources = container(k8s)["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_service_and_autoscaler_reach_the_deployment(k8s):
    deployment = k8s[f"Deployment/{NAME}"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = k8s[f"Service/{NAME}"]["spec"]
    assert service["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["ports"]] == [p["name"] for p in container(k8s)["ports"]]
    hpa = k8s[f"HorizontalPodAutoscaler/{NAME}"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert 1 < hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert k8s[f"PodDisruptionBudget/{NAME}"]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_environment_holds_valid_service_settings(k8s):
    from app.settings import Settings

    env = container(k8s)["env"]
    assert {item["name"].lower() for item in env} <= set(Settings.model_fields)
    Settings(**{item["name"].lower(): item["value"] for item in env if "value" in item})


def test_the_pod_runs_hardened(k8s):
    pod = k8s[f"Deployment/{NAME}"]["spec"]["template"]["spec"]
    hardened = container(k8s)["securityContext"]

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert hardened == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # The read-only root leaves /tmp (the libraries' temporary files) writable through an emptyDir.
    assert {"name": "tmp", "mountPath": "/tmp"} in container(k8s)["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
