import re
import subprocess

import pytest
import yaml

from tests.deploy.manifests import K8S_DIR, K8S_TRAINING_DIR, load_k8s, stage_last
from tests.tools import tool

# The oldest Kubernetes release the manifests promise to work on, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
NAME = "inception-v2-service"


# The service (kubectl apply -k deploy/k8s) and multi-worker training (kubectl apply -k deploy/k8s/training).
KUSTOMIZATIONS = pytest.mark.parametrize(
    "directory", [K8S_DIR, K8S_TRAINING_DIR], ids=["service", "training"]
)


def kustomization(directory=K8S_DIR) -> dict:
    return yaml.safe_load((directory / "kustomization.yaml").read_text())


@KUSTOMIZATIONS
def test_kustomization_applies_every_manifest(directory):
    manifests = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization(directory)["resources"]) == manifests


@KUSTOMIZATIONS
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_kubernetes(directory, version):
    paths = [str(directory / name) for name in kustomization(directory)["resources"]]
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


TRAINING = "inception-v2-training"


@pytest.fixture(scope="module")
def training() -> dict[str, dict]:
    return load_k8s(K8S_TRAINING_DIR)


def trainer(training) -> dict:
    (only,) = training[f"Job/{TRAINING}"]["spec"]["template"]["spec"]["containers"]
    return only


def pod_environment(training, index: int) -> dict[str, str]:
    """The trainer's environment in the pod of completion `index`, as the kubelet expands it."""
    env: dict[str, str] = {}
    for item in trainer(training)["env"]:
        if "valueFrom" in item:
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == (
                "metadata.annotations['batch.kubernetes.io/job-completion-index']"
            )
            env[item["name"]] = str(index)
        else:  # $(NAME) refers to a variable declared above it
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
    return env


def test_training_pods_build_their_tf_config_from_the_completion_index(training):
    from training.cluster import worker_from_environment

    job = training[f"Job/{TRAINING}"]["spec"]
    service = training[f"Service/{TRAINING}"]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"]
    workers = [worker_from_environment(pod_environment(training, i)) for i in range(job["completions"])]

    assert [(w.task_type, w.task_id, w.is_chief) for w in workers] == [
        ("worker", i, i == 0) for i in range(job["completions"])
    ]
    assert {w.count for w in workers} == {job["completions"]}
    # Each address is a pod's DNS name under the headless Service: <job>-<index>.<subdomain>:<port>.
    (port,) = service["ports"]
    assert workers[0].cluster == {
        "worker": [f"{TRAINING}-{i}.{TRAINING}:{port['port']}" for i in range(job["completions"])]
    }
    pod = job["template"]
    assert pod["spec"]["subdomain"] == TRAINING
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    assert [p["name"] for p in trainer(training)["ports"]] == [port["targetPort"]]
    assert [p["containerPort"] for p in trainer(training)["ports"]] == [port["port"]]


def test_training_reads_and_writes_the_shared_volume(training, stages):
    from training.__main__ import build_parser

    container = trainer(training)
    args = build_parser().parse_args(container["command"][-1:] + container["args"])
    (mount,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "shared"]
    assert all(
        path.startswith(f"{mount}/") for path in (args.data_dir, args.model_base_path, args.checkpoint_dir)
    )
    assert container["command"][:4] == ["python", "-m", "training", "train"]
    pod = training[f"Job/{TRAINING}"]["spec"]["template"]["spec"]
    (claim,) = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if v["name"] == "shared"]
    assert training[f"PersistentVolumeClaim/{claim}"]["spec"]["accessModes"] == ["ReadWriteMany"]
    # The trainer image's user, hardened as the service's pods are; a lost peer restarts the pod in place.
    uid, _, gid = stage_last(stages, "trainer", "USER").arguments.partition(":")
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["restartPolicy"] == "OnFailure"
