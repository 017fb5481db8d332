"""Durability: 1,000 executions that Wait and call activity tasks survive `kill -9` of the
node; after a restart on the same data every one finishes with the right output, and no
history has a gap or a duplicate event."""
import json
import os
import re
import threading
import time

from conftest import ROLE, Node, full_history

N = 1000


def restart_log(node):
    """What the node logged about its shards since it last started."""
    node.log.flush()
    with open(node.log.name, errors="replace") as f:
        lines = re.sub(r"\x1b\[[0-9;]*m", "", f.read()).splitlines()
    starts = [i for i, line in enumerate(lines) if "listening: gRPC" in line]
    since = lines[starts[-1]:] if starts else lines
    return "\n".join(line for line in since if "leading the shard" in line or "executor loaded" in line)


# The shard hand-overs are DEBUG events; this test logs them for its diagnostics.
SHARD_EVENTS = {"TRELLIS_LOG": "info,openraft=error,openraft::replication=off,sled=warn,trellis::audit=off,"
                               "trellis_cluster::host=debug,trellis_shard::executor=debug"}


def test_kill_9_and_restart(functions, workdir):
    node = Node(functions, os.path.join(workdir, "durable"), env=SHARD_EVENTS).start()
    try:
        sfn = node.client()
        act = sfn.create_activity(name="durable-work")["activityArn"]
        definition = {"StartAt": "Pause", "States": {
            "Pause": {"Type": "Wait", "Seconds": 1, "Next": "Work"},
            "Work": {"Type": "Task", "Resource": act, "ResultPath": "$.work", "Next": "Done"},
            "Done": {"Type": "Pass", "Parameters": {"n.$": "$.n", "work.$": "$.work"}, "End": True}}}
        arn = sfn.create_state_machine(name="Durable", definition=json.dumps(definition), roleArn=ROLE)["stateMachineArn"]
        runs = []
        for i in range(N):
            runs.append(sfn.start_execution(stateMachineArn=arn, name=f"d{i}", input=json.dumps({"n": i}))["executionArn"])
        # Some tasks are taken and answered before the crash, some only taken.
        answered, taken = set(), []
        for _ in range(100):
            t = sfn.get_activity_task(activityArn=act, workerName="before")
            n = json.loads(t["input"])["n"]
            if len(answered) < 50:
                sfn.send_task_success(taskToken=t["taskToken"], output=json.dumps({"by": "before", "n": n}))
                answered.add(n)
            else:
                taken.append((n, t["taskToken"]))
        node.kill()

        node.start()
        sfn = node.client()
        # Workers that held tokens across the crash answer them now.
        for n, token in taken:
            sfn.send_task_success(taskToken=token, output=json.dumps({"by": "holder", "n": n}))
        stop = threading.Event()
        # A worker that fails records why here; the test fails with it.
        errors = []

        def worker():
            c = node.client()
            while not stop.is_set():
                try:
                    t = c.get_activity_task(activityArn=act, workerName="after")
                    if t.get("taskToken"):
                        n = json.loads(t["input"])["n"]
                        c.send_task_success(taskToken=t["taskToken"], output=json.dumps({"by": "after", "n": n}))
                except Exception as e:
                    # The node stops at the end of the test while workers long-poll it.
                    if not stop.is_set():
                        errors.append(repr(e))
                        stop.set()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
        for th in threads:
            th.start()
        deadline = time.time() + 300
        pending = set(runs)
        while pending and not errors and time.time() < deadline:
            for r in list(pending):
                try:
                    status = sfn.describe_execution(executionArn=r)["status"]
                except sfn.exceptions.ExecutionDoesNotExist:
                    # Whichever it is, the test fails: the message says which.
                    time.sleep(3)
                    try:
                        sfn.describe_execution(executionArn=r)
                        seen = "it was found 3 s later (a stale read)"
                    except sfn.exceptions.ExecutionDoesNotExist:
                        seen = "nor 3 s later (lost)"
                    raise AssertionError(f"{r} acknowledged before the kill, not found after the restart, "
                                         f"{seen}; the restarted node's shards:\n{restart_log(node)}")
                if status != "RUNNING":
                    pending.discard(r)
            time.sleep(0.2)
        stop.set()
        assert not errors, f"a worker failed: {errors}"
        assert not pending, f"{len(pending)} executions did not finish"
        holders = {n for n, _ in taken}
        for i, r in enumerate(runs):
            d = sfn.describe_execution(executionArn=r)
            assert d["status"] == "SUCCEEDED", (r, d.get("error"), d.get("cause"))
            out = json.loads(d["output"])
            want_by = "before" if i in answered else "holder" if i in holders else "after"
            assert out == {"n": i, "work": {"by": want_by, "n": i}}, out
            events = full_history(sfn, r, maxResults=1000)
            assert [e["id"] for e in events] == list(range(1, len(events) + 1)), r
            types = [e["type"] for e in events]
            assert types.count("ActivityScheduled") == 1 and types.count("ActivitySucceeded") == 1, types
            assert types[-1] == "ExecutionSucceeded"
    finally:
        # Also when an assertion fails: a leaked node would outlive the suite.
        node.stop()
