"""Issue #6, packaging: the Dockerfile and deploy/kubernetes/ checked statically (no Docker or
cluster here), against the code they configure: env names are real `imgopt serve` options,
values pass the CLI's own validation, ports, probes, labels and selectors line up, and the
image's HEALTHCHECK command really reports a live server healthy.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import free_port
from imgopt import cli
from imgopt.config import Settings, parse_images_config

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
OPTION_ENV = {cli._env_name(flag) for flag, _convert, _help in cli.OPTIONS}
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
            stages.append({"image": image, "name": name, "ins": []})
        else:
            stages[-1]["ins"].append((keyword, rest))
    return {"stages": stages, "final": stages[-1]}


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


def test_dockerfile_is_multi_stage_on_python_311_slim(dockerfile):
    stages = dockerfile["stages"]
    assert len(stages) >= 2
    assert {s["image"] for s in stages} == {"python:3.11-slim"}
    builder = next(s for s in stages if s["name"] == "builder")
    assert any("pip wheel" in r and "/wheels" in r for r in stage_values(builder, "RUN")), "the wheel is built here"
    final = dockerfile["final"]
    assert any(c.startswith("--from=builder") and "/wheels" in c for c in stage_values(final, "COPY"))
    assert any("pip install" in r and "--no-index" in r for r in stage_values(final, "RUN"))


def test_final_image_has_no_compiler(dockerfile):
    final = dockerfile["final"]
    assert not (apt_packages(final) & BUILD_TOOLS)
    assert not any(p.endswith("-dev") for p in apt_packages(final))
    builder = next(s for s in dockerfile["stages"] if s["name"] == "builder")
    assert "gcc" in apt_packages(builder)  # the C kernels are compiled in the builder only


def test_final_image_runs_as_non_root_with_env_options(dockerfile):
    final = dockerfile["final"]
    users = stage_values(final, "USER")
    assert users, "USER is set"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric and non-root (Kubernetes runAsNonRoot can check it)"
    env = env_of(final)
    assert env["IMGOPT_HOST"] == "0.0.0.0"
    assert {k for k in env if k.startswith("IMGOPT_")} <= OPTION_ENV
    # imgopt tunes glibc malloc itself (imgopt/malloc.py); MALLOC_* or LD_PRELOAD would turn that off
    assert not {k for k in env if k.startswith("MALLOC_") or k == "LD_PRELOAD"}
    expose = [int(p.split("/")[0]) for p in " ".join(stage_values(final, "EXPOSE")).split()]
    assert expose == [int(env["IMGOPT_PORT"])]
    assert json.loads(stage_values(final, "ENTRYPOINT")[-1]) + json.loads(stage_values(final, "CMD")[-1]) == [
        "imgopt", "serve"]  # exec form: SIGTERM reaches imgopt


def test_build_context_has_what_the_wheel_needs(dockerfile):
    ignore = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
              if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
                   or path.startswith(p.rstrip("/") + "/") for p in ignore)

    builder = next(s for s in dockerfile["stages"] if s["name"] == "builder")
    copied = set()
    for rest in stage_values(builder, "COPY"):
        words = [w for w in rest.split() if not w.startswith("--")]
        copied |= {w.rstrip("/") for w in words[:-1]}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {"pyproject.toml", "imgopt", project.get("readme", "README.md")}
    needed |= {p for p in ("setup.py", "native") if (ROOT / p).exists()}
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
    assert template["spec"]["terminationGracePeriodSeconds"] > 20  # imgopt's own drain time


def test_deployment_env_is_valid_imgopt_configuration(manifests, tmp_path):
    dep, template = pod(manifests)
    (c,) = template["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert set(env) <= OPTION_ENV, f"not imgopt options: {set(env) - OPTION_ENV}"

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
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a drain must be able to evict a pod"


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
