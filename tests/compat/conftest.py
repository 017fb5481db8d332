"""Starts a real `trellis dev` node (and a small HTTP server that plays Lambda functions) for
the compatibility tests, which talk to it through boto3 and the AWS CLI only."""
import importlib.util
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trellis_bin():
    for p in (os.environ.get("TRELLIS_BIN"), ROOT / "target/debug/trellis", ROOT / "target/release/trellis"):
        if p and Path(p).exists():
            return str(p)
    raise RuntimeError("no trellis binary: run `cargo build --bin trellis` or set TRELLIS_BIN")


def trellisctl_bin():
    """`trellisctl`, beside the `trellis` the tests run."""
    p = Path(trellis_bin()).with_name("trellisctl")
    if not p.exists():
        raise RuntimeError(f"no {p}: run `cargo build --bin trellisctl`")
    return str(p)


def _example_functions():
    spec = importlib.util.spec_from_file_location("pi_functions", ROOT / "examples/product-import/functions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Functions:
    """HTTP endpoints that play Lambda functions: the product import's three, plus
    `echo`, `notify` (keeps task tokens) and `reserve` (the order example's stock call)."""

    def __init__(self):
        self.example = _example_functions()
        self.tokens = []
        self.calls = []
        self.flaky_seen = set()
        self.lock = threading.Lock()
        fns = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, reply = 200, None
                with fns.lock:
                    fns.calls.append((self.path, body, self.headers.get("Trellis-Fence")))
                    try:
                        if self.path == "/echo":
                            reply = {"echo": body}
                        elif self.path == "/notify":
                            fns.tokens.append(body)
                            reply = {"sent": True}
                        elif self.path == "/reserve":
                            reply = {"reserved": True, "items": len(body.get("items", []))}
                        elif self.path == "/flaky":
                            # Fails the first call for each key, then answers.
                            key = body.get("key")
                            if key not in fns.flaky_seen:
                                fns.flaky_seen.add(key)
                                status, reply = 500, {"errorType": "Flaky", "errorMessage": "first call fails"}
                            else:
                                reply = {"ok": key}
                        elif self.path == "/fail":
                            status, reply = 500, {"errorType": "CustomError", "errorMessage": "it failed"}
                        else:
                            fn = fns.example.FUNCTIONS[self.path]
                            reply = fn(body)
                    except Exception as e:  # Lambda-style error
                        status, reply = 500, {"errorType": type(e).__name__, "errorMessage": str(e)}
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_token(self, key, value, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                for t in self.tokens:
                    if t.get(key) == value:
                        return t
            time.sleep(0.05)
        raise AssertionError(f"no token with {key}={value}")


class S3Server:
    """A real S3-compatible server, moto's, on 127.0.0.1: Distributed Map readers and
    writers talk to it through the node's `AWS_ENDPOINT_URL_S3`."""

    def __init__(self, log_dir):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "moto_server"
        self.log = open(os.path.join(log_dir, "moto.log"), "ab")
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    # What the node needs to reach it (any credentials do for moto).
    def env(self):
        return {"AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_ACCESS_KEY_ID": "test",
                "AWS_SECRET_ACCESS_KEY": "test"}

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Node:
    """A `trellis dev` process on free ports and its own data directory."""

    def __init__(self, functions, data_dir, env=None, ca=None):
        # `ca`: the node serves HTTPS with a certificate of this CA (its `[tls]` is in `env`).
        self.ca = ca
        self.functions = functions
        self.data_dir = data_dir
        self.env = {**os.environ, **(env or {})}
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.peer_port = free_port()
        self.proc = None
        self.log = open(os.path.join(os.path.dirname(data_dir), f"node-{self.http_port}.log"), "ab")

    @property
    def endpoint(self):
        scheme = "https" if self.ca else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def grpc_endpoint(self):
        return f"http://127.0.0.1:{self.grpc_port}"

    def start(self):
        names = ["transform", "store", "stock", "echo", "notify", "reserve", "fail", "flaky"]
        args = [trellis_bin(), "dev", "--data-dir", self.data_dir, "--shards", "8",
                "--http-addr", f"127.0.0.1:{self.http_port}", "--grpc-addr", f"127.0.0.1:{self.grpc_port}",
                "--peer-addr", f"127.0.0.1:{self.peer_port}"]
        for n in names:
            args += ["--function", f"{n}={self.functions.url}/{n}"]
        self.log.flush()
        since = os.path.getsize(self.log.name)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=self.env)
        # Ready when this process says it serves the port: a free port chosen earlier may
        # have been taken meanwhile (on a restart, the port was free while the node was
        # down), and /healthz alone could be answered by another process.
        serving = f"serving the AWS Step Functions API on {self.endpoint}"
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"trellis exited with {self.proc.returncode}; see {self.log.name}")
            with open(self.log.name, "rb") as f:
                f.seek(since)
                ours = serving.encode() in f.read()
            if ours:
                context = ssl.create_default_context(cafile=self.ca) if self.ca else None
                with urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=1, context=context) as r:
                    if r.status == 200:
                        return self
            time.sleep(0.1)
        raise RuntimeError("trellis did not become healthy")

    def kill(self):
        """kill -9: no shutdown, no flush beyond what was acknowledged."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def client(self, **config):
        return boto3.client(
            "stepfunctions",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 1}, read_timeout=90, **config),
        )


@pytest.fixture(scope="session")
def functions():
    f = Functions()
    yield f
    f.server.shutdown()


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="trellis-compat-")
    yield d
    if os.environ.get("TRELLIS_KEEP_WORKDIR"):
        print(f"\nkept the nodes' data directories and logs in {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def s3server(workdir):
    server = S3Server(workdir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3(s3server):
    return s3server.client()


@pytest.fixture(scope="session")
def node(functions, workdir, s3server):
    n = Node(functions, os.path.join(workdir, "data"), env=s3server.env()).start()
    yield n
    n.stop()


@pytest.fixture(scope="session")
def sfn(node):
    return node.client()


@pytest.fixture(scope="session")
def sfn_sync(node):
    # StartSyncExecution carries the "sync-" host prefix; disable it for a local endpoint.
    return node.client(inject_host_prefix=False)


ROLE = "arn:aws:iam::000000000000:role/trellis"


def create(sfn, name, definition, **kw):
    """Creates a state machine from a definition dict; returns its ARN."""
    return sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE, **kw)["stateMachineArn"]


def wait_status(sfn, arn, timeout=60, done=("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d = sfn.describe_execution(executionArn=arn)
        if d["status"] in done:
            return d
        time.sleep(0.05)
    raise AssertionError(f"{arn} still {d['status']}")


def full_history(sfn, arn, **kw):
    events, token = [], None
    while True:
        args = dict(executionArn=arn, **kw)
        if token:
            args["nextToken"] = token
        page = sfn.get_execution_history(**args)
        events += page["events"]
        token = page.get("nextToken")
        if not token:
            return events
