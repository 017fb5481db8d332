#!/usr/bin/env python3
"""Activity round trip (docs/benchmarks.md): one worker, one execution at a time of a machine
whose single state is an activity task. Per execution it times, through the AWS API (boto3,
one connection): the start (StartExecution), the hand-out (GetActivityTask returning the
task), the answer (SendTaskSuccess), and the whole round trip from the start until
DescribeExecution reports SUCCEEDED.

    python3 tests/bench/activity_rtt.py http://127.0.0.1:8083 [N]
"""
import statistics
import sys
import time
import uuid

import boto3
from botocore.config import Config

endpoint = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
sfn = boto3.client("stepfunctions", endpoint_url=endpoint, region_name="us-east-1",
                   aws_access_key_id="x", aws_secret_access_key="x",
                   config=Config(retries={"max_attempts": 1}, read_timeout=90))
tag = uuid.uuid4().hex[:8]
act = sfn.create_activity(name=f"rtt-{tag}")["activityArn"]
machine = sfn.create_state_machine(
    name=f"rtt-{tag}", roleArn="arn:aws:iam::000000000000:role/x",
    definition=f'{{"StartAt":"Work","States":{{"Work":{{"Type":"Task","Resource":"{act}","End":true}}}}}}')["stateMachineArn"]
rows = []
for i in range(n):
    t0 = time.perf_counter()
    arn = sfn.start_execution(stateMachineArn=machine, name=f"r{i}", input="{}")["executionArn"]
    t1 = time.perf_counter()
    task = sfn.get_activity_task(activityArn=act, workerName="rtt")
    t2 = time.perf_counter()
    sfn.send_task_success(taskToken=task["taskToken"], output="{}")
    t3 = time.perf_counter()
    while sfn.describe_execution(executionArn=arn)["status"] != "SUCCEEDED":
        pass
    t4 = time.perf_counter()
    rows.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0))
sfn.delete_state_machine(stateMachineArn=machine)
sfn.delete_activity(activityArn=act)
for i, what in enumerate(["start", "hand-out", "answer", "next state seen", "round trip"]):
    xs = sorted(r[i] * 1000 for r in rows)
    print(f"{what:16} p50 {statistics.median(xs):6.2f} ms  p99 {xs[int(len(xs) * 0.99) - 1]:6.2f} ms")
