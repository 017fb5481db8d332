"""The AWS Step Functions API through boto3 and the AWS CLI, against `trellis dev`."""
import json
import os
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

from conftest import ROLE, create, full_history, wait_status

PASS_WAIT = {"StartAt": "A", "States": {
    "A": {"Type": "Pass", "Result": {"x": 1}, "ResultPath": "$.r", "Next": "W"},
    "W": {"Type": "Wait", "Seconds": 1, "Next": "B"},
    "B": {"Type": "Pass", "End": True}}}


def code(err):
    return err.value.response["Error"]["Code"]


def test_state_machine_crud(sfn):
    arn = create(sfn, "Crud", PASS_WAIT)
    assert arn == "arn:aws:states:us-east-1:000000000000:stateMachine:Crud"
    # Creating the same machine again is idempotent; a different definition is refused.
    assert create(sfn, "Crud", PASS_WAIT) == arn
    with pytest.raises(ClientError) as e:
        create(sfn, "Crud", {"StartAt": "X", "States": {"X": {"Type": "Succeed"}}})
    assert code(e) == "StateMachineAlreadyExists"
    d = sfn.describe_state_machine(stateMachineArn=arn)
    assert d["name"] == "Crud" and d["type"] == "STANDARD" and json.loads(d["definition"]) == PASS_WAIT
    new = {"StartAt": "X", "States": {"X": {"Type": "Succeed"}}}
    u = sfn.update_state_machine(stateMachineArn=arn, definition=json.dumps(new))
    assert u["revisionId"] != d["revisionId"]
    assert json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"]) == new
    for n in ("Crud2", "Crud3"):
        create(sfn, n, PASS_WAIT)
    seen, token = [], None
    while True:
        page = sfn.list_state_machines(maxResults=1, **({"nextToken": token} if token else {}))
        assert len(page["stateMachines"]) <= 1
        seen += [m["name"] for m in page["stateMachines"]]
        token = page.get("nextToken")
        if not token:
            break
    assert {"Crud", "Crud2", "Crud3"} <= set(seen) and len(seen) == len(set(seen))
    sfn.delete_state_machine(stateMachineArn=arn)
    with pytest.raises(ClientError) as e:
        sfn.describe_state_machine(stateMachineArn=arn)
    assert code(e) == "StateMachineDoesNotExist"


def test_versions_and_aliases(sfn):
    r = sfn.create_state_machine(name="Versioned", definition=json.dumps(PASS_WAIT), roleArn=ROLE, publish=True)
    arn, v1 = r["stateMachineArn"], r["stateMachineVersionArn"]
    assert v1 == arn + ":1"
    other = {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": "v2", "End": True}}}
    v2 = sfn.update_state_machine(stateMachineArn=arn, definition=json.dumps(other), publish=True)["stateMachineVersionArn"]
    assert v2 == arn + ":2"
    versions = [v["stateMachineVersionArn"] for v in sfn.list_state_machine_versions(stateMachineArn=arn)["stateMachineVersions"]]
    assert versions == [v2, v1]
    assert json.loads(sfn.describe_state_machine(stateMachineArn=v1)["definition"]) == PASS_WAIT
    alias = sfn.create_state_machine_alias(name="live", routingConfiguration=[{"stateMachineVersionArn": v2, "weight": 100}])["stateMachineAliasArn"]
    assert alias == arn + ":live"
    assert sfn.describe_state_machine_alias(stateMachineAliasArn=alias)["routingConfiguration"] == [{"stateMachineVersionArn": v2, "weight": 100}]
    e = sfn.start_execution(stateMachineArn=alias, name="via-alias")
    d = wait_status(sfn, e["executionArn"])
    assert d["status"] == "SUCCEEDED" and d["output"] == '"v2"'
    assert d["stateMachineAliasArn"] == alias and d["stateMachineVersionArn"] == v2
    with pytest.raises(ClientError) as err:
        sfn.delete_state_machine_version(stateMachineVersionArn=v2)
    assert code(err) == "ConflictException"
    sfn.update_state_machine_alias(stateMachineAliasArn=alias, routingConfiguration=[{"stateMachineVersionArn": v1, "weight": 100}])
    assert [a["stateMachineAliasArn"] for a in sfn.list_state_machine_aliases(stateMachineArn=arn)["stateMachineAliases"]] == [alias]
    sfn.delete_state_machine_alias(stateMachineAliasArn=alias)
    sfn.delete_state_machine_version(stateMachineVersionArn=v2)
    assert [v["stateMachineVersionArn"] for v in sfn.list_state_machine_versions(stateMachineArn=arn)["stateMachineVersions"]] == [v1]


def test_start_describe_list_and_history(sfn):
    arn = create(sfn, "Runs", PASS_WAIT)
    e = sfn.start_execution(stateMachineArn=arn, name="first", input='{"k": 2}')
    assert e["executionArn"] == "arn:aws:states:us-east-1:000000000000:execution:Runs:first"
    d = wait_status(sfn, e["executionArn"])
    assert d["status"] == "SUCCEEDED"
    assert json.loads(d["output"]) == {"k": 2, "r": {"x": 1}}
    assert d["input"] == '{"k": 2}' and d["stopDate"] >= d["startDate"]
    events = full_history(sfn, e["executionArn"])
    assert [ev["type"] for ev in events] == [
        "ExecutionStarted", "PassStateEntered", "PassStateExited", "WaitStateEntered",
        "WaitStateExited", "PassStateEntered", "PassStateExited", "ExecutionSucceeded"]
    assert [ev["id"] for ev in events] == list(range(1, 9))
    assert events[0]["executionStartedEventDetails"]["input"] == '{"k": 2}'
    # Paging gives the same events; reverseOrder gives them backwards.
    paged = full_history(sfn, e["executionArn"], maxResults=3)
    assert [ev["id"] for ev in paged] == list(range(1, 9))
    back = full_history(sfn, e["executionArn"], maxResults=3, reverseOrder=True)
    assert [ev["id"] for ev in back] == list(range(8, 0, -1))
    # A second run, then list with and without a status filter.
    running = sfn.start_execution(stateMachineArn=arn, name="second")["executionArn"]
    listed = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert {x["name"] for x in listed} == {"first", "second"}
    ok = sfn.list_executions(stateMachineArn=arn, statusFilter="SUCCEEDED")["executions"]
    assert "first" in {x["name"] for x in ok}
    wait_status(sfn, running)
    page = sfn.list_executions(stateMachineArn=arn, maxResults=1)
    assert len(page["executions"]) == 1 and "nextToken" in page


def test_stop_execution(sfn):
    arn = create(sfn, "Stoppable", {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}})
    e = sfn.start_execution(stateMachineArn=arn, name="s1")["executionArn"]
    sfn.stop_execution(executionArn=e, error="Manual", cause="stopped by test")
    d = wait_status(sfn, e)
    assert d["status"] == "ABORTED" and d["error"] == "Manual" and d["cause"] == "stopped by test"
    assert full_history(sfn, e)[-1]["type"] == "ExecutionAborted"


def test_idempotent_start_and_duplicate_names(sfn):
    arn = create(sfn, "Idem", {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}})
    a = sfn.start_execution(stateMachineArn=arn, name="same", input='{"a": 1}')
    b = sfn.start_execution(stateMachineArn=arn, name="same", input='{"a": 1}')
    assert a["executionArn"] == b["executionArn"]
    with pytest.raises(ClientError) as err:
        sfn.start_execution(stateMachineArn=arn, name="same", input='{"a": 2}')
    assert code(err) == "ExecutionAlreadyExists"
    sfn.stop_execution(executionArn=a["executionArn"])


def test_activity_worker_loop(sfn):
    act = sfn.create_activity(name="resize")["activityArn"]
    assert sfn.create_activity(name="resize")["activityArn"] == act
    assert sfn.describe_activity(activityArn=act)["name"] == "resize"
    assert act in [a["activityArn"] for a in sfn.list_activities()["activities"]]
    arn = create(sfn, "WithActivity", {"StartAt": "Work", "States": {
        "Work": {"Type": "Task", "Resource": act, "HeartbeatSeconds": 60, "ResultPath": "$.done", "End": True}}})
    runs = [sfn.start_execution(stateMachineArn=arn, name=f"w{i}", input=json.dumps({"n": i}))["executionArn"] for i in range(3)]
    handled = []

    def worker():
        while len(handled) < 3:
            t = sfn.get_activity_task(activityArn=act, workerName="py-worker")
            if not t.get("taskToken"):
                continue
            sfn.send_task_heartbeat(taskToken=t["taskToken"])
            n = json.loads(t["input"])["n"]
            sfn.send_task_success(taskToken=t["taskToken"], output=json.dumps({"doubled": n * 2}))
            handled.append(n)

    th = threading.Thread(target=worker)
    th.start()
    th.join(timeout=60)
    assert sorted(handled) == [0, 1, 2]
    for i, r in enumerate(runs):
        d = wait_status(sfn, r)
        assert json.loads(d["output"]) == {"n": i, "done": {"doubled": i * 2}}
        types = [ev["type"] for ev in full_history(sfn, r)]
        assert types == ["ExecutionStarted", "TaskStateEntered", "ActivityScheduled", "ActivityStarted",
                         "ActivitySucceeded", "TaskStateExited", "ExecutionSucceeded"]
        started = [ev for ev in full_history(sfn, r) if ev["type"] == "ActivityStarted"][0]
        assert started["activityStartedEventDetails"]["workerName"] == "py-worker"
    with pytest.raises(ClientError) as err:
        sfn.send_task_success(taskToken="not-a-token", output="{}")
    assert code(err) == "InvalidToken"


def test_callback_token(sfn, functions):
    arn = create(sfn, "Callback", {"StartAt": "Ask", "States": {
        "Ask": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {"FunctionName": "notify", "Payload": {"id.$": "$.id", "token.$": "$$.Task.Token"}},
                "ResultPath": "$.answer", "End": True}}})
    ok = sfn.start_execution(stateMachineArn=arn, name="cb-ok", input='{"id": "ok"}')["executionArn"]
    no = sfn.start_execution(stateMachineArn=arn, name="cb-no", input='{"id": "no"}')["executionArn"]
    good = functions.wait_token("id", "ok")["token"]
    t = functions.wait_token("id", "no")["token"]
    # Tokens carry a MAC under the cluster's key: an altered token, one execution's MAC on
    # another's token, or a made-up one is invalid, and says nothing about what exists.
    body, mac = good.rsplit(".", 1)
    shard, _exec, task, nonce = body.split(".")
    forged = [
        body + "." + ("0" if mac[0] != "0" else "1") + mac[1:],
        t.rsplit(".", 1)[0] + "." + mac,
        ".".join([shard, "fffff", task, nonce, mac]),
        ".".join([shard, "fffff", task, nonce, "0" * 32]),
    ]
    for bad in forged:
        for answer in (lambda: sfn.send_task_success(taskToken=bad, output='{"forged": true}'),
                       lambda: sfn.send_task_heartbeat(taskToken=bad)):
            with pytest.raises(ClientError) as err:
                answer()
            assert code(err) == "InvalidToken", bad
    assert sfn.describe_execution(executionArn=no)["status"] == "RUNNING"
    sfn.send_task_success(taskToken=good, output='{"yes": true}')
    sfn.send_task_failure(taskToken=t, error="Declined", cause="customer said no")
    d = wait_status(sfn, ok)
    assert d["status"] == "SUCCEEDED" and json.loads(d["output"]) == {"id": "ok", "answer": {"yes": True}}
    d = wait_status(sfn, no)
    assert d["status"] == "FAILED" and d["error"] == "Declined" and d["cause"] == "customer said no"
    # TaskSubmitted is written when the function's call returns, which may be after the
    # answer to its token: only the result is certain.
    assert "TaskSucceeded" in [ev["type"] for ev in full_history(sfn, ok)]
    with pytest.raises(ClientError) as err:
        sfn.send_task_success(taskToken=t, output="{}")
    assert code(err) == "TaskTimedOut"


def test_start_sync_execution(sfn, sfn_sync):
    arn = create(sfn, "Quick", {"StartAt": "Call", "States": {
        "Call": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                 "Parameters": {"FunctionName": "echo", "Payload.$": "$"}, "OutputPath": "$.Payload", "End": True}}},
        type="EXPRESS")
    r = sfn_sync.start_sync_execution(stateMachineArn=arn, input='{"hello": "world"}')
    assert r["status"] == "SUCCEEDED"
    assert json.loads(r["output"]) == {"echo": {"hello": "world"}}
    assert ":express:Quick:" in r["executionArn"]
    failing = create(sfn, "QuickFail", {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Nope", "Cause": "c"}}}, type="EXPRESS")
    r = sfn_sync.start_sync_execution(stateMachineArn=failing)
    assert r["status"] == "FAILED" and r["error"] == "Nope" and "output" not in r
    standard = create(sfn, "NotExpress", PASS_WAIT)
    with pytest.raises(ClientError) as err:
        sfn_sync.start_sync_execution(stateMachineArn=standard)
    assert code(err) == "StateMachineTypeNotSupported"
    # Express executions cannot be activity or callback machines.
    with pytest.raises(ClientError) as err:
        create(sfn, "BadExpress", {"StartAt": "T", "States": {"T": {"Type": "Task",
               "Resource": "arn:aws:states:us-east-1:000000000000:activity:a", "End": True}}}, type="EXPRESS")
    assert code(err) == "InvalidDefinition"


def test_calls_carry_the_fence(sfn, functions):
    # A Standard execution's Lambda call carries its shard, the shard's epoch and the term
    # of the leader that dispatched it; an Express execution runs outside any shard.
    arn = create(sfn, "Fenced", {"StartAt": "Call", "States": {
        "Call": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                 "Parameters": {"FunctionName": "echo", "Payload.$": "$"}, "End": True}}})
    e = sfn.start_execution(stateMachineArn=arn, input='{"fence": "standard"}')["executionArn"]
    assert wait_status(sfn, e)["status"] == "SUCCEEDED"
    fences = [f for (_, body, f) in functions.calls if body == {"fence": "standard"}]
    assert len(fences) == 1 and fences[0] is not None, fences
    parts = dict(p.split("=") for p in fences[0].split(";"))
    assert sorted(parts) == ["epoch", "shard", "term"] and int(parts["term"]) >= 1, fences
    assert 0 <= int(parts["shard"]) < 8


def test_error_names(sfn):
    arn = create(sfn, "Errors", PASS_WAIT)
    cases = [
        (lambda: sfn.describe_execution(executionArn="arn:nope"), "InvalidArn"),
        (lambda: sfn.describe_state_machine(stateMachineArn="arn:aws:states:us-east-1:000000000000:activity:x"), "InvalidArn"),
        (lambda: sfn.start_execution(stateMachineArn=arn + "Missing"), "StateMachineDoesNotExist"),
        (lambda: sfn.describe_execution(executionArn="arn:aws:states:us-east-1:000000000000:execution:Errors:none"), "ExecutionDoesNotExist"),
        (lambda: create(sfn, "Invalid", {"StartAt": "Nowhere", "States": {"A": {"Type": "Succeed"}}}), "InvalidDefinition"),
        (lambda: sfn.start_execution(stateMachineArn=arn, input=json.dumps({"big": "x" * 300_000})), "ValidationException"),
        (lambda: sfn.start_execution(stateMachineArn=arn, input="{not json"), "InvalidExecutionInput"),
        (lambda: sfn.start_execution(stateMachineArn=arn, name="has space"), "InvalidName"),
        (lambda: sfn.create_state_machine(name="a/b", definition=json.dumps(PASS_WAIT), roleArn=ROLE), "InvalidName"),
        (lambda: sfn.list_state_machines(maxResults=1001), "ValidationException"),
        (lambda: sfn.describe_activity(activityArn="arn:aws:states:us-east-1:000000000000:activity:none"), "ActivityDoesNotExist"),
    ]
    for call, want in cases:
        with pytest.raises(ClientError) as err:
            call()
        assert code(err) == want, (want, err.value.response["Error"])
    sfn.start_execution(stateMachineArn=arn, name="dup", input="{}")
    with pytest.raises(ClientError) as err:
        sfn.start_execution(stateMachineArn=arn, name="dup", input='{"other": 1}')
    assert code(err) == "ExecutionAlreadyExists"


def test_aws_cli(node, sfn):
    create(sfn, "FromCli", PASS_WAIT)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    aws = os.path.join(os.path.dirname(os.path.realpath(__import__("sys").executable)), "aws")
    out = subprocess.run([aws, "stepfunctions", "list-state-machines", "--endpoint-url", node.endpoint],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "FromCli" in [m["name"] for m in json.loads(out.stdout)["stateMachines"]]
    out = subprocess.run([aws, "stepfunctions", "describe-execution", "--endpoint-url", node.endpoint,
                          "--execution-arn", "arn:aws:states:us-east-1:000000000000:execution:FromCli:none"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "ExecutionDoesNotExist" in out.stderr


def test_health_and_metrics(node, sfn):
    import urllib.request
    arn = create(sfn, "Metered", {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    wait_status(sfn, sfn.start_execution(stateMachineArn=arn, name="m1")["executionArn"])
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(node.endpoint + path, timeout=5) as r:
            assert r.status == 200
    with urllib.request.urlopen(node.endpoint + "/metrics", timeout=5) as r:
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            values[k] = float(v)
    assert values["trellis_executions_started_total"] >= 1
    assert values['trellis_executions_finished_total{status="SUCCEEDED"}'] >= 1
    assert values["trellis_state_transitions_total"] >= 1
    assert values["trellis_proposal_batch_executions_count"] >= 1
    assert "trellis_raft_apply_seconds_bucket{le=\"+Inf\"}" in values


def test_redrive(sfn):
    arn = create(sfn, "Redrivable", {"StartAt": "Prep", "States": {
        "Prep": {"Type": "Pass", "Result": "r1", "ResultPath": "$.key", "Next": "Call"},
        "Call": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                 "Parameters": {"FunctionName": "flaky", "Payload": {"key.$": "$.key"}},
                 "OutputPath": "$.Payload", "End": True}}})
    e = sfn.start_execution(stateMachineArn=arn, name="rd")["executionArn"]
    d = wait_status(sfn, e)
    assert d["status"] == "FAILED" and d["error"] == "Flaky"
    assert d["redriveStatus"] == "REDRIVABLE"
    r = sfn.redrive_execution(executionArn=e)
    assert "redriveDate" in r
    d = wait_status(sfn, e)
    assert d["status"] == "SUCCEEDED" and json.loads(d["output"]) == {"ok": "r1"}
    assert d["redriveCount"] == 1 and "redriveDate" in d
    types = [ev["type"] for ev in full_history(sfn, e)]
    assert types.count("ExecutionFailed") == 1 and "ExecutionRedriven" in types
    # Prep is not run again: the redrive starts at the state that failed.
    assert types.count("PassStateEntered") == 1
    assert [ev["id"] for ev in full_history(sfn, e)] == list(range(1, len(types) + 1))
    with pytest.raises(ClientError) as err:
        sfn.redrive_execution(executionArn=e)
    assert code(err) == "ExecutionNotRedrivable"


def test_redrive_reruns_only_the_iterations_that_did_not_succeed(sfn):
    # One iteration at a time: m1 succeeds, m2 fails (its first call), m3 never starts.
    arn = create(sfn, "RedriveMap", {"StartAt": "M", "States": {"M": {
        "Type": "Map", "MaxConcurrency": 1, "End": True,
        "ItemProcessor": {"StartAt": "Which", "States": {
            "Which": {"Type": "Choice", "Choices": [
                {"Variable": "$", "StringEquals": "m2", "Next": "Call"}], "Default": "Keep"},
            "Keep": {"Type": "Pass", "End": True},
            "Call": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                     "Parameters": {"FunctionName": "flaky", "Payload": {"key": "redrive-map-m2"}},
                     "OutputPath": "$.Payload", "End": True}}}}}})
    e = sfn.start_execution(stateMachineArn=arn, name="rdm", input='["m1", "m2", "m3"]')["executionArn"]
    d = wait_status(sfn, e)
    assert d["status"] == "FAILED" and d["error"] == "Flaky"
    sfn.redrive_execution(executionArn=e)
    d = wait_status(sfn, e)
    assert d["status"] == "SUCCEEDED", d
    assert json.loads(d["output"]) == ["m1", {"ok": "redrive-map-m2"}, "m3"]
    events = full_history(sfn, e)
    redriven = next(i for i, ev in enumerate(events) if ev["type"] == "ExecutionRedriven")
    again = [ev["mapIterationStartedEventDetails"]["index"] for ev in events[redriven:]
             if ev["type"] == "MapIterationStarted"]
    # m1 succeeded before the failure: only m2 and m3 run after the redrive.
    assert again == [1, 2]


def test_an_oversized_body_is_refused_with_an_aws_error(node, sfn):
    import socket
    # 10 MB announced by its length; the node answers from the headers alone, before the
    # body is sent (so it never holds it).
    size = 10 << 20
    head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{node.http_port}\r\n"
            "Content-Type: application/x-amz-json-1.0\r\n"
            "X-Amz-Target: AWSStepFunctions.CreateActivity\r\n"
            f"Content-Length: {size}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=30) as s:
        s.sendall(head + b'{"name": "')
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) == 0:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status_line, rest = data.split(b"\r\n", 1)
    headers, body = rest.split(b"\r\n\r\n", 1)
    assert b" 400 " in status_line, data
    assert b"application/x-amz-json-1.0" in headers.lower(), data
    reply = json.loads(body)
    assert reply["__type"].endswith("ValidationException"), reply
    assert "larger than" in reply["message"], reply
    # Still serving.
    assert "stateMachines" in sfn.list_state_machines()


def test_deeply_nested_json_is_refused_not_a_crash(node, sfn):
    import urllib.error
    import urllib.request
    # A request body nested 100,000 deep: the JSON reader's depth limit refuses it.
    deep = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    req = urllib.request.Request(node.endpoint + "/", data=deep, method="POST", headers={
        "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "AWSStepFunctions.CreateActivity"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400
    assert json.loads(err.value.read())["__type"].endswith("SerializationException")
    # An execution input nested past the limit is not valid input.
    arn = create(sfn, "DeepInput", {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    with pytest.raises(ClientError) as e:
        sfn.start_execution(stateMachineArn=arn, input="[" * 1000 + "]" * 1000)
    assert code(e) == "InvalidExecutionInput"
    # Still serving.
    assert "stateMachines" in sfn.list_state_machines()


def test_list_executions_pages_newest_first_across_shards(sfn):
    done = create(sfn, "Paged", {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    names = [f"p{i:02d}" for i in range(57)]
    for n in names:
        sfn.start_execution(stateMachineArn=done, name=n)
    for n in names:
        wait_status(sfn, f"{done.replace(':stateMachine:', ':execution:')}:{n}")

    def pages(**kw):
        seen, token, count = [], None, 0
        while True:
            page = sfn.list_executions(stateMachineArn=done, maxResults=10,
                                       **kw, **({"nextToken": token} if token else {}))
            assert len(page["executions"]) <= 10
            seen += page["executions"]
            count += 1
            token = page.get("nextToken")
            if not token:
                return seen, count
            assert count < 20, "paging does not end"

    seen, count = pages()
    assert sorted(e["name"] for e in seen) == names and count == 6
    starts = [e["startDate"] for e in seen]
    assert starts == sorted(starts, reverse=True)
    ok, _ = pages(statusFilter="SUCCEEDED")
    assert sorted(e["name"] for e in ok) == names
    running, _ = pages(statusFilter="RUNNING")
    assert running == []
    with pytest.raises(ClientError) as err:
        sfn.list_executions(stateMachineArn=done, nextToken="not-a-token")
    assert err.value.response["Error"]["Code"] == "InvalidToken"
