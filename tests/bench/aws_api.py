"""AWS API throughput, plaintext and unauthenticated vs HTTPS with SigV4 and a policy check:
StartExecution of a one-state Pass machine from several boto3 client processes, against a
fresh `trellis dev` node each time (release build), rate limits lifted.

    cargo build --release --bin trellis --bin trellisctl
    .venv/bin/python tests/bench/aws_api.py

The client (boto3 signs and parses in Python) shares the machine with the node, so the
absolute figures are the client's as much as the node's; the two modes are run alike.
Uses ports 7300/7301/8083 and /tmp/aws-api-bench.
"""
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import ssl

import boto3
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release")
WORK = "/tmp/aws-api-bench"
KEY, SECRET = "AKBENCH", "bench-secret"
PROCESSES, SECONDS = 4, 15


def client(endpoint, ca):
    return boto3.client("stepfunctions", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        verify=ca if ca else False,
                        config=Config(retries={"max_attempts": 1}, max_pool_connections=4))


def worker(args):
    endpoint, ca, arn, until = args
    sfn = client(endpoint, ca)
    done = 0
    while time.time() < until:
        sfn.start_execution(stateMachineArn=arn)
        done += 1
    return done


def run(mode):
    shutil.rmtree(f"{WORK}/data", ignore_errors=True)
    env = dict(os.environ)
    ca = None
    if mode == "https+sigv4":
        env.update({"TRELLIS_ROOT_ACCESS_KEY_ID": KEY, "TRELLIS_ROOT_SECRET_ACCESS_KEY": SECRET,
                    "TRELLIS__TLS__CERT_FILE": f"{WORK}/pki/node.pem",
                    "TRELLIS__TLS__KEY_FILE": f"{WORK}/pki/node-key.pem"})
        for k in ("START_BURST", "START_PER_SECOND", "OTHER_BURST", "OTHER_PER_SECOND"):
            env[f"TRELLIS__AUTH__RATE__{k}"] = "100000000"
        ca = f"{WORK}/pki/ca.pem"
    log = open(f"{WORK}/node-{mode}.log", "w")
    node = subprocess.Popen([f"{BIN}/trellis", "dev", "--data-dir", f"{WORK}/data"], env=env,
                            stdout=log, stderr=log)
    scheme = "https" if ca else "http"
    endpoint = f"{scheme}://127.0.0.1:8083"
    try:
        ctx = ssl.create_default_context(cafile=ca) if ca else None
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{endpoint}/readyz", timeout=1, context=ctx)
                break
            except Exception:
                time.sleep(0.1)
        sfn = client(endpoint, ca)
        arn = sfn.create_state_machine(
            name="Bench", roleArn="arn:aws:iam::000000000000:role/r",
            definition=json.dumps({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}),
        )["stateMachineArn"]
        until = time.time() + SECONDS
        with multiprocessing.Pool(PROCESSES) as pool:
            counts = pool.map(worker, [(endpoint, ca, arn, until)] * PROCESSES)
        return sum(counts) / SECONDS
    finally:
        node.terminate()
        node.wait(timeout=30)


def main():
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    ctl = f"{BIN}/trellisctl"
    subprocess.run([ctl, "certs", "ca", "--dir", f"{WORK}/pki"], check=True, capture_output=True)
    subprocess.run([ctl, "certs", "node", "node", "--san", "127.0.0.1", "--dir", f"{WORK}/pki"],
                   check=True, capture_output=True)
    results = {"plaintext": [], "https+sigv4": []}
    for _ in range(3):
        for mode in results:
            results[mode].append(run(mode))
            print(mode, f"{results[mode][-1]:.0f} starts/s", flush=True)
    for mode, r in results.items():
        print(mode, "runs", [round(x) for x in r], "median", round(sorted(r)[1]))


if __name__ == "__main__":
    sys.exit(main())
