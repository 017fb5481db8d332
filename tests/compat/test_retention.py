"""Retention through boto3 and the metrics, with the period from the environment
(`TRELLIS__CLUSTER__RETENTION`), as an operator sets it."""

import os
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import Node, create, wait_status

PASS = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}
WAIT = {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": True}}}


def metric(node, name):
    with urllib.request.urlopen(f"{node.endpoint}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} is not exposed")


@pytest.fixture
def short_node(functions, workdir):
    node = Node(functions, os.path.join(workdir, "retention"),
                env={"TRELLIS__CLUSTER__RETENTION": "2s"}).start()
    yield node
    node.stop()


def test_closed_executions_are_deleted_after_the_retention(short_node):
    sfn = short_node.client()
    done = create(sfn, "RetainedBriefly", PASS)
    waits = create(sfn, "RetainedWaiting", WAIT)
    closed = [sfn.start_execution(stateMachineArn=done, name=f"e{i}")["executionArn"] for i in range(20)]
    for arn in closed:
        assert wait_status(sfn, arn)["status"] == "SUCCEEDED"
    running = sfn.start_execution(stateMachineArn=waits, name="w")["executionArn"]
    # Gone within the retention plus a few sweeps (bounded wait on the condition).
    deadline = time.time() + 60
    left = list(closed)
    while left and time.time() < deadline:
        still = []
        for arn in left:
            try:
                sfn.describe_execution(executionArn=arn)
                still.append(arn)
            except ClientError as e:
                assert e.response["Error"]["Code"] == "ExecutionDoesNotExist", e
        left = still
        time.sleep(0.5)
    assert not left, f"{len(left)} closed executions were kept"
    assert sfn.list_executions(stateMachineArn=done)["executions"] == []
    with pytest.raises(ClientError) as e:
        sfn.get_execution_history(executionArn=closed[0])
    assert e.value.response["Error"]["Code"] == "ExecutionDoesNotExist"
    assert metric(short_node, "trellis_executions_expired_total") >= 20
    # A running execution is never deleted; a deleted name may be used again.
    assert sfn.describe_execution(executionArn=running)["status"] == "RUNNING"
    again = sfn.start_execution(stateMachineArn=done, name="e0")["executionArn"]
    assert again == closed[0]
    assert wait_status(sfn, again)["status"] == "SUCCEEDED"
    sfn.stop_execution(executionArn=running)
