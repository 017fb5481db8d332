#!/usr/bin/env python3
"""The StatefulSet controller's moves, played with the real image and the real manifest.

No Kubernetes API server can run here, so this script plays the parts Kubernetes would:

* the pod spec comes from `kubectl kustomize deploy/kubernetes/overlays/production`: the
  container's arguments and environment (downward API values filled in), the ConfigMap's
  trellis.toml mounted at /etc/trellis, the security context (user 65532, read-only root,
  no capabilities), the preStop command and the grace period;
* pods are containers on a private Docker network, named and addressed as the StatefulSet's
  pods (`trellis-N`, alias `trellis-N.trellis`), each with its own volume (its PVC);
* pods start in ordinal order, each once the one before answers /readyz (OrderedReady);
  a pod stops as the kubelet stops it: the preStop command first (`docker exec`), bounded by
  the grace period, then SIGTERM with what is left of it; a scale-in deletes the volume
  (persistentVolumeClaimRetentionPolicy whenScaled: Delete);
* the Kubernetes API's one call the preStop hook makes (GET the StatefulSet) is answered by
  a small HTTPS server on the network's gateway, with a CA and a service-account token
  mounted where Kubernetes mounts them, and the replica count this script sets.

Under a bounded load of named executions started through every pod's AWS API (a client
retries a refused start on another pod under the same name), it scales 3 -> 5 -> 3 and then
does a rolling restart, and checks: every stop ran its preStop within the grace period
(a decommission on a scale-in, a hand-off on a restart); afterwards the cluster has 3
members, 3 meta voters, every shard led and fully replicated; every acknowledged execution
SUCCEEDED exactly once (one record, one ExecutionStarted, one ExecutionSucceeded, the
right output). It prints the figures docs/benchmarks.md records (JSON on the last line).

  PROFILE=debug .venv/bin/python tests/k8s/statefulset.py     # CI (.ci/run)
  .venv/bin/python tests/k8s/statefulset.py                   # release binaries

Every wait is bounded; a failure prints the pods' last log lines and exits 1.
"""

import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import botocore
import yaml
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
PROFILE = os.environ.get("PROFILE", "release")
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / PROFILE
IMAGE = os.environ.get("IMAGE", "trellis:sts")
NET = "trellis-sts"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Fewer shards than production's 64, layered over the rendered config as an operator would
# (TRELLIS__CLUSTER__SHARDS), so that five debug-build nodes fit two cores.
SHARDS = os.environ.get("SHARDS", "16")
MACHINE = "sts-load"


class Failed(Exception):
    pass


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(*args, check=True, timeout=120, **kw):
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise Failed(f"{' '.join(args)}: exit {out.returncode}\n{out.stdout}{out.stderr}")
    return out


def wait_for(what, secs, probe, every=0.5):
    end = time.monotonic() + secs
    last = None
    while time.monotonic() < end:
        try:
            r = probe()
            if r:
                return r
        except Exception as e:  # a probe that fails is a probe that says "not yet"
            last = e
        time.sleep(every)
    raise Failed(f"timed out after {secs} s: {what} (last error: {last})")


# ------------------------------------------------------------------ the manifest


class PodSpec:
    """What the rendered StatefulSet says a pod is."""

    def __init__(self):
        out = run("kubectl", "kustomize", str(ROOT / "deploy/kubernetes/overlays/production"))
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        sts = next(d for d in docs if d["kind"] == "StatefulSet")
        cm = next(d for d in docs if d["kind"] == "ConfigMap")
        pod = sts["spec"]["template"]["spec"]
        c = pod["containers"][0]
        self.name = sts["metadata"]["name"]
        self.service = sts["spec"]["serviceName"]
        self.args = c["args"]
        self.env = c.get("env", [])
        self.pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        self.grace = pod["terminationGracePeriodSeconds"]
        self.user = pod["securityContext"]["runAsUser"]
        self.read_only = c["securityContext"].get("readOnlyRootFilesystem", False)
        self.config = cm["data"]
        self.mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        self.retention = sts["spec"]["persistentVolumeClaimRetentionPolicy"]
        assert sts["spec"]["podManagementPolicy"] == "OrderedReady"

    def env_for(self, pod, zone):
        """The downward API's values for one pod."""
        out = {}
        for e in self.env:
            if "value" in e:
                out[e["name"]] = e["value"]
                continue
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            if path == "metadata.name":
                out[e["name"]] = pod
            elif path == "metadata.labels['topology.kubernetes.io/zone']":
                out[e["name"]] = zone
            else:
                raise Failed(f"the test does not know the downward API field {path}")
        return out

    def args_for(self, env):
        """The container's arguments with $(VAR) expanded, as the kubelet does."""
        out = []
        for a in self.args:
            for k, v in env.items():
                a = a.replace(f"$({k})", v)
            out.append(a)
        return out


# ------------------------------------------------------------------ the Kubernetes API


class FakeApi:
    """GET /apis/apps/v1/namespaces/<ns>/statefulsets/<name>, over HTTPS, with a token."""

    def __init__(self, host, certs, token, namespace, name):
        self.replicas = 3
        self.calls = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                want = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"
                if self.headers.get("Authorization") != f"Bearer {token}":
                    self.reply(401, {"kind": "Status", "message": "Unauthorized"})
                elif self.path != want:
                    self.reply(403, {"kind": "Status", "message": f"forbidden: {self.path}"})
                else:
                    api.calls.append((time.monotonic(), self.client_address[0]))
                    self.reply(200, {"kind": "StatefulSet", "apiVersion": "apps/v1",
                                     "metadata": {"name": name, "namespace": namespace},
                                     "spec": {"replicas": api.replicas}})

            def reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((host, 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs / "kube.pem", certs / "kube-key.pem")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


# ------------------------------------------------------------------ pods


class StatefulSet:
    def __init__(self, spec, work, api_env):
        self.spec = spec
        self.work = work
        self.api_env = api_env
        self.running = {}  # ordinal -> container name
        self.events = []  # ("start"|"stop", ordinal)
        self.stops = []  # per stop: ordinal, kind, preStop seconds, its output

    def pod(self, i):
        return f"{self.spec.name}-{i}"

    def ip(self, i):
        out = run("docker", "inspect", "-f",
                  "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", self.pod(i))
        return out.stdout.strip()

    def start(self, i):
        name = self.pod(i)
        env = self.spec.env_for(name, zone_of(i))
        env.update(self.api_env)
        env["TRELLIS__CLUSTER__SHARDS"] = SHARDS
        args = ["docker", "run", "-d", "--name", name, "--hostname", name,
                "--network", NET, "--network-alias", f"{name}.{self.spec.service}",
                "--user", f"{self.spec.user}:{self.spec.user}",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "--volume", f"{NET}-data-{i}:{self.spec.mounts['data']}",
                "--volume", f"{self.work / 'config'}:{self.spec.mounts['config']}:ro",
                "--volume", f"{self.work / 'sa'}:{SA_DIR}:ro"]
        if self.spec.read_only:
            args.append("--read-only")
        for k, v in env.items():
            args += ["--env", f"{k}={v}"]
        run(*args, IMAGE, *self.spec.args_for(env))
        self.running[i] = name
        self.events.append(("start", i))
        wait_for(f"{name} ready (/readyz)", 180, lambda: self.ready(i))
        log(f"{name} started and ready")

    def ready(self, i):
        try:
            with urllib.request.urlopen(f"http://{self.ip(i)}:8083/readyz", timeout=2) as r:
                return r.status == 200
        except urllib.error.HTTPError:
            return False

    def stop(self, i, scale_in):
        """The kubelet's stop: preStop within the grace period, then SIGTERM."""
        name = self.pod(i)
        t0 = time.monotonic()
        try:
            out = run("docker", "exec", name, *self.spec.pre_stop, check=False,
                      timeout=self.spec.grace)
        except subprocess.TimeoutExpired:
            raise Failed(f"{name}: preStop still running after the grace period")
        took = time.monotonic() - t0
        text = out.stderr + out.stdout
        if out.returncode != 0:
            raise Failed(f"{name}: preStop failed ({out.returncode}):\n{text}")
        left = max(1, int(self.spec.grace - took))
        run("docker", "stop", "-t", str(left), name, timeout=left + 30)
        stopped = time.monotonic() - t0
        if stopped > self.spec.grace + 5:
            raise Failed(f"{name}: stopped after {stopped:.0f} s, beyond the grace period")
        run("docker", "rm", "-f", name)
        del self.running[i]
        self.events.append(("stop", i))
        kind = "decommission" if "decommission" in text else "hand-off" if "hand-off" in text else "?"
        self.stops.append({"pod": name, "kind": kind, "preStopSeconds": round(took, 1)})
        log(f"{name} stopped after a {kind} of {took:.1f} s: {text.strip().splitlines()[-1]}")
        if scale_in and self.spec.retention["whenScaled"] == "Delete":
            run("docker", "volume", "rm", f"{NET}-data-{i}")
        return kind

    def ctl(self, *args, i=None):
        i = min(self.running) if i is None else i
        return run("docker", "exec", self.pod(i), "/trellisctl", *args)

    def logs(self):
        out = []
        for i in sorted(self.running):
            r = run("docker", "logs", "--tail", "40", self.pod(i), check=False)
            out.append(f"--- {self.pod(i)}\n{r.stdout}{r.stderr}")
        return "\n".join(out)

    def remove_all(self):
        for i in list(self.running):
            run("docker", "rm", "-f", self.pod(i), check=False)
        self.running.clear()


# ------------------------------------------------------------------ load


class Load:
    """Named executions started through every pod; a refused start is sent again to another
    pod under the same name. Bounded: at most `cap` executions, `rate` per second."""

    def __init__(self, sts, machine_arn, cap=2000, rate=8):
        self.sts = sts
        self.arn = machine_arn
        self.cap = cap
        self.rate = rate
        self.acked = []
        self.refused_since = None
        self.refused_seconds = 0.0
        self.errors = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def client(self, i):
        return boto3.client(
            "stepfunctions", endpoint_url=f"http://{self.sts.ip(i)}:8083", region_name="us-east-1",
            aws_access_key_id="x", aws_secret_access_key="x",
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))

    def start_one(self, n):
        name = f"x-{n}"
        t_first = None
        for attempt in range(200):
            pods = sorted(self.sts.running)
            if not pods:
                time.sleep(0.1)
                continue
            i = pods[(n + attempt) % len(pods)]
            try:
                self.client(i).start_execution(stateMachineArn=self.arn, name=name,
                                               input=json.dumps({"n": n}))
                ok = True
            except botocore.exceptions.ClientError as e:
                # Started by an attempt whose answer was lost: acknowledged all the same.
                ok = e.response["Error"]["Code"] == "ExecutionAlreadyExists"
                if not ok:
                    self.errors.append(e.response["Error"]["Code"])
            except Exception as e:  # the pod stopped under us, or is not serving yet
                self.errors.append(type(e).__name__)
                ok = False
            if ok:
                if t_first is not None:
                    self.refused_seconds += time.monotonic() - t_first
                self.acked.append(name)
                return
            t_first = t_first or time.monotonic()
            time.sleep(0.1)
        raise Failed(f"{name}: not started after 200 attempts: {self.errors[-5:]}")

    def loop(self):
        n = 0
        while not self.stop_flag.is_set() and n < self.cap:
            t = time.monotonic()
            try:
                self.start_one(n)
            except Failed as e:
                self.errors.append(str(e))
                return
            n += 1
            time.sleep(max(0.0, 1.0 / self.rate - (time.monotonic() - t)))

    def verify(self):
        """Every acknowledged execution succeeded once, with the right output."""
        c = self.client(min(self.sts.running))
        base = self.arn.replace(":stateMachine:", ":execution:")
        listed = []
        for page in c.get_paginator("list_executions").paginate(stateMachineArn=self.arn):
            listed += [e["name"] for e in page["executions"]]
        dup = {n for n in listed if listed.count(n) > 1}
        if dup:
            raise Failed(f"listed more than once: {sorted(dup)[:5]}")
        for name in self.acked:
            arn = f"{base}:{name}"
            d = wait_for(f"{name} finished", 120,
                         lambda: (lambda d: d if d["status"] != "RUNNING" else None)(
                             c.describe_execution(executionArn=arn)))
            if d["status"] != "SUCCEEDED":
                raise Failed(f"{name}: {d['status']}")
            n = int(name.split("-")[1])
            if json.loads(d["output"]) != {"n": n, "double": 2 * n}:
                raise Failed(f"{name}: output {d['output']}")
            events = []
            for page in c.get_paginator("get_execution_history").paginate(executionArn=arn):
                events += page["events"]
            kinds = [e["type"] for e in events]
            if kinds.count("ExecutionStarted") != 1 or kinds.count("ExecutionSucceeded") != 1:
                raise Failed(f"{name}: history {kinds}")
            if [e["id"] for e in events] != list(range(1, len(events) + 1)):
                raise Failed(f"{name}: event ids {[e['id'] for e in events]}")
            if name not in listed:
                raise Failed(f"{name}: not listed")


# ------------------------------------------------------------------ the cluster's view


def status(sts):
    return json.loads(sts.ctl("--json", "cluster", "status").stdout)


def shards(sts):
    s = json.loads(sts.ctl("--json", "shards", "list").stdout)
    return s.get("shards", s) if isinstance(s, dict) else s


def zone_of(i):
    """The zone label the test gives pod i (node i+1): three zones, as a cloud region has."""
    return f"zone-{'abc'[i % 3]}"


def balanced(sts, ids, rf=3):
    """Every shard has rf replicas in distinct zones on these nodes and a leader among them;
    replica counts differ by at most one between nodes of a zone, leader counts by at most
    one between all (a zone with fewer nodes holds more per node: a replica of a shard per
    zone)."""
    s = shards(sts)
    zone = {i: zone_of(i - 1) for i in ids}
    placed = all(len(x["replicas"]) == rf and set(x["replicas"]) <= set(ids)
                 and len({zone[r] for r in x["replicas"]}) == rf and x["leader"] in ids
                 for x in s)
    reps = {i: sum(1 for x in s if i in x["replicas"]) for i in ids}
    leads = [sum(1 for x in s if x["leader"] == i) for i in ids]
    even = all(max(c) - min(c) <= 1 for z in set(zone.values())
               for c in [[reps[i] for i in ids if zone[i] == z]])
    return placed and even and max(leads) - min(leads) <= 1


def healthy_three(sts):
    s = status(sts)
    members = sorted(n["id"] for n in s["nodes"] if n["state"] != "REMOVED")
    up = all(n["state"] == "UP" for n in s["nodes"] if n["state"] != "REMOVED")
    return (members == [1, 2, 3] and up and sorted(s["metaVoters"]) == [1, 2, 3]
            and s["health"] == "HEALTHY" and not s["leaderless"] and not s["underReplicated"])


# ------------------------------------------------------------------ the test


def main():
    if shutil.which("docker") is None or run("docker", "info", check=False).returncode != 0:
        raise Failed("needs a Docker engine")
    spec = PodSpec()
    log(f"pod spec from the production overlay: preStop {spec.pre_stop}, grace {spec.grace} s")
    env = dict(os.environ, IMAGE=IMAGE, PROFILE=PROFILE)
    run("bash", str(ROOT / "deploy/docker/build-image.sh"), env=env, timeout=1800)
    trellisctl = TARGET / "trellisctl"

    work = Path(tempfile.mkdtemp(prefix="trellis-sts-"))
    sts = None
    api = None
    try:
        run("docker", "network", "rm", NET, check=False)
        run("docker", "network", "create", NET)
        gateway = run("docker", "network", "inspect", "-f",
                      "{{range .IPAM.Config}}{{.Gateway}}{{end}}", NET).stdout.strip()
        # The API server's certificate from a CA of our own; the CA, a token and the
        # namespace where Kubernetes mounts a service account.
        certs = work / "certs"
        run(str(trellisctl), "certs", "ca", "--dir", str(certs))
        run(str(trellisctl), "certs", "node", "kube", "--san", gateway, "--dir", str(certs))
        sa = work / "sa"
        sa.mkdir()
        token = os.urandom(16).hex()
        (sa / "token").write_text(token)
        (sa / "namespace").write_text("default")
        shutil.copy(certs / "ca.pem", sa / "ca.crt")
        (work / "config").mkdir()
        for k, v in spec.config.items():
            (work / "config" / k).write_text(v)
        for p in [work, sa, work / "config", *sa.iterdir(), *(work / "config").iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        api = FakeApi(gateway, certs, token, "default", spec.name)
        api_env = {"KUBERNETES_SERVICE_HOST": gateway, "KUBERNETES_SERVICE_PORT": str(api.port)}
        sts = StatefulSet(spec, work, api_env)
        for i in range(5):
            run("docker", "volume", "rm", "-f", f"{NET}-data-{i}", check=False)

        # 3 pods, in order.
        for i in range(3):
            sts.start(i)
        wait_for("three nodes, healthy", 120, lambda: healthy_three(sts))
        definition = {
            "StartAt": "Nap",
            "States": {
                "Nap": {"Type": "Wait", "Seconds": 2, "Next": "Done"},
                "Done": {"Type": "Pass", "End": True,
                         "Parameters": {"n.$": "$.n", "double.$": "States.MathAdd($.n, $.n)"}},
            },
        }
        c = boto3.client("stepfunctions", endpoint_url=f"http://{sts.ip(0)}:8083",
                         region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        arn = c.create_state_machine(name=MACHINE, definition=json.dumps(definition),
                                     roleArn="arn:aws:iam::000000000000:role/r")["stateMachineArn"]
        load = Load(sts, arn)
        load.thread.start()
        wait_for("load running", 30, lambda: len(load.acked) >= 20)

        # Scale out: 3 -> 5.
        figures = {}
        t0 = time.monotonic()
        api.replicas = 5
        for i in (3, 4):
            sts.start(i)
        wait_for("five nodes balanced", 300, lambda: balanced(sts, [1, 2, 3, 4, 5]), every=1)
        figures["scaleOutSeconds"] = round(time.monotonic() - t0, 1)
        log(f"3 -> 5: replicas and leaders balanced after {figures['scaleOutSeconds']} s")

        # Scale in: 5 -> 3, the highest ordinal first, each after the one before is gone.
        api.replicas = 3
        for i in (4, 3):
            calls = len(api.calls)
            kind = sts.stop(i, scale_in=True)
            if kind != "decommission" or len(api.calls) != calls + 1:
                raise Failed(f"{sts.pod(i)}: a scale-in gave {kind!r} ({len(api.calls) - calls} API calls)")
        wait_for("three members, healthy", 120, lambda: healthy_three(sts))
        figures["decommissionSeconds"] = [s["preStopSeconds"] for s in sts.stops]
        log(f"5 -> 3: {sts.stops}")

        # A rolling update: the highest ordinal first, each back and ready before the next.
        for i in (2, 1, 0):
            kind = sts.stop(i, scale_in=False)
            if kind != "hand-off":
                raise Failed(f"{sts.pod(i)}: a restart gave {kind!r}")
            sts.start(i)
            wait_for(f"healthy after restarting {sts.pod(i)}", 120, lambda: healthy_three(sts))
        figures["handOffSeconds"] = [s["preStopSeconds"] for s in sts.stops[2:]]

        load.stop_flag.set()
        load.thread.join(timeout=60)
        if any(len(e) > 40 for e in load.errors):
            raise Failed(f"the load gave up: {load.errors[-3:]}")
        wait_for("healthy at the end", 60, lambda: healthy_three(sts))
        load.verify()
        order = [f"{k} {sts.pod(i)}" for k, i in sts.events]
        expected = ([f"start {sts.pod(i)}" for i in range(5)]
                    + [f"stop {sts.pod(i)}" for i in (4, 3)]
                    + [x for i in (2, 1, 0) for x in (f"stop {sts.pod(i)}", f"start {sts.pod(i)}")])
        if order != expected:
            raise Failed(f"pods started and stopped out of order: {order}")
        figures.update({
            "acknowledged": len(load.acked),
            "refusedAttempts": len(load.errors),
            "refusedBy": {e: load.errors.count(e) for e in sorted(set(load.errors))},
            "refusedSeconds": round(load.refused_seconds, 1),
            "shards": int(SHARDS),
            "profile": PROFILE,
        })
        log(f"passed: {len(load.acked)} acknowledged executions, each SUCCEEDED once; "
            f"{len(load.errors)} refused attempts retried on another pod")
        print(json.dumps(figures))
    except Exception:
        if sts is not None:
            print(sts.logs(), file=sys.stderr)
        raise
    finally:
        if sts is not None:
            sts.remove_all()
        if api is not None:
            api.close()
        for i in range(5):
            run("docker", "volume", "rm", "-f", f"{NET}-data-{i}", check=False)
        run("docker", "network", "rm", NET, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        print(f"statefulset: {e}", file=sys.stderr)
        sys.exit(1)
