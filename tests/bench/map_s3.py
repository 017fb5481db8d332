#!/usr/bin/env python3
"""The S3 Distributed Map figure: one DISTRIBUTED Map over N items read from a JSONL object
(ItemReader), in batches, children EXPRESS or STANDARD, results exported (ResultWriter) or
counted; on one `trellis dev` node this script starts, with a moto S3 server it starts too.

Reports the run's time, children per second and the node's peak RSS (VmHWM), as one JSON
line. Everything listens on 127.0.0.1 and is stopped by PID at the end.

    .venv/bin/python tests/bench/map_s3.py --trellis target/release/trellis \
        --items 1000000 --batch 100 --express --cache-mib 64
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3
from botocore.config import Config


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, what, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not start")


def rss_peak_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trellis", required=True)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=100, help="MaxItemsPerBatch (0: no batching)")
    ap.add_argument("--concurrency", type=int, default=1000)
    ap.add_argument("--express", action="store_true")
    ap.add_argument("--writer", action="store_true", help="export the results to S3")
    ap.add_argument("--cache-mib", type=int, default=64)
    ap.add_argument("--timeout", type=int, default=3600)
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="trellis-bench-s3-")
    procs = []
    try:
        s3_port = free_port()
        moto = subprocess.Popen([str(os.path.join(os.path.dirname(sys.executable), "moto_server")),
                                 "-H", "127.0.0.1", "-p", str(s3_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(moto)
        s3_url = f"http://127.0.0.1:{s3_port}"
        wait_http(f"{s3_url}/moto-api/", moto, "moto_server")
        s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
        s3.create_bucket(Bucket="bench")
        body = "".join(json.dumps({"id": i, "sku": f"sku-{i:07d}"}) + "\n" for i in range(a.items))
        s3.put_object(Bucket="bench", Key="items.jsonl", Body=body.encode())
        del body

        http, grpc, peer = free_port(), free_port(), free_port()
        env = {**os.environ, "AWS_ENDPOINT_URL_S3": s3_url, "AWS_ACCESS_KEY_ID": "test",
               "AWS_SECRET_ACCESS_KEY": "test", "TRELLIS__NODE__CACHE_MIB": str(a.cache_mib)}
        log = open(os.path.join(work, "node.log"), "wb")
        node = subprocess.Popen([a.trellis, "dev", "--data-dir", os.path.join(work, "data"),
                                 "--http-addr", f"127.0.0.1:{http}", "--grpc-addr", f"127.0.0.1:{grpc}",
                                 "--peer-addr", f"127.0.0.1:{peer}"], stdout=log, stderr=log, env=env)
        procs.append(node)
        wait_http(f"http://127.0.0.1:{http}/healthz", node, "trellis")
        sfn = boto3.client("stepfunctions", endpoint_url=f"http://127.0.0.1:{http}", region_name="us-east-1",
                           aws_access_key_id="test", aws_secret_access_key="test",
                           config=Config(retries={"max_attempts": 3}, read_timeout=120))
        state = {
            "Type": "Map", "End": True, "MaxConcurrency": a.concurrency,
            "ItemReader": {"Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": {"InputType": "JSONL"},
                           "Parameters": {"Bucket": "bench", "Key": "items.jsonl"}},
            "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED",
                                                  "ExecutionType": "EXPRESS" if a.express else "STANDARD"},
                              "StartAt": "P", "States": {"P": {"Type": "Pass", "Result": 1, "End": True}}},
        }
        if a.batch:
            state["ItemBatcher"] = {"MaxItemsPerBatch": a.batch}
        if a.writer:
            state["ResultWriter"] = {"Resource": "arn:aws:states:::s3:putObject",
                                     "Parameters": {"Bucket": "bench", "Prefix": "out"}}
        else:
            state["ResultSelector"] = {"children.$": "States.ArrayLength($)"}
        arn = sfn.create_state_machine(name="bench-s3-map", roleArn="arn:aws:iam::000000000000:role/b",
                                       definition=json.dumps({"StartAt": "M", "States": {"M": state}}))["stateMachineArn"]
        t0 = time.time()
        e = sfn.start_execution(stateMachineArn=arn, input="{}")["executionArn"]
        while True:
            d = sfn.describe_execution(executionArn=e)
            if d["status"] != "RUNNING":
                break
            if time.time() - t0 > a.timeout:
                raise SystemExit(f"still running after {a.timeout}s")
            time.sleep(0.5)
        seconds = time.time() - t0
        children = -(-a.items // a.batch) if a.batch else a.items
        result = {"items": a.items, "batch": a.batch, "children": children, "express": a.express,
                  "writer": a.writer, "status": d["status"], "seconds": round(seconds, 2),
                  "itemsPerSecond": round(a.items / seconds, 1),
                  "childrenPerSecond": round(children / seconds, 1),
                  "peakRssMiB": round(rss_peak_kib(node.pid) / 1024, 1), "cacheMiB": a.cache_mib,
                  "output": d.get("output", "")[:200], "error": d.get("error"), "cause": d.get("cause")}
        print(json.dumps(result))
        return 0 if d["status"] == "SUCCEEDED" else 1
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
