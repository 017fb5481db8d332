#!/usr/bin/env python3
"""ListExecutions page cost (docs/benchmarks.md): times one 100-row page of a state machine's
executions through the AWS API, the first page and the tenth, and a RUNNING filter that
matches nothing; median of REPEATS calls each.

    python3 tests/bench/list_page.py http://127.0.0.1:8083 <state machine ARN> [REPEATS]
"""
import statistics
import sys
import time

import boto3
from botocore.config import Config

endpoint, machine = sys.argv[1], sys.argv[2]
repeats = int(sys.argv[3]) if len(sys.argv) > 3 else 20
sfn = boto3.client("stepfunctions", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="x", aws_secret_access_key="x",
                   config=Config(retries={"max_attempts": 1}))


def timed(**kw):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        page = sfn.list_executions(stateMachineArn=machine, maxResults=100, **kw)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), page


first, page = timed()
token = page.get("nextToken")
for _ in range(8):
    token = sfn.list_executions(stateMachineArn=machine, maxResults=100, nextToken=token)["nextToken"]
tenth, _ = timed(nextToken=token)
running, page = timed(statusFilter="RUNNING")
assert page["executions"] == []
print(f"first page {first:.1f} ms, tenth page {tenth:.1f} ms, empty RUNNING filter {running:.1f} ms")
