"""DISTRIBUTED Map through boto3: the Map Run events, ItemBatcher, tolerated failures, the
children as executions, and the Map Run APIs."""
import json
import time

import pytest
from botocore.exceptions import ClientError

from conftest import create, full_history, wait_status


def distributed(processor, **fields):
    state = {"Type": "Map", "ItemsPath": "$.items", "End": True,
             "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"}, **processor}}
    state.update(fields)
    return {"StartAt": "M", "States": {"M": state}}


# A child that fails when its batch's first item says so.
FAILING = {"StartAt": "C", "States": {
    "C": {"Type": "Choice", "Choices": [{"Variable": "$.Items[0].fail", "BooleanEquals": True, "Next": "F"}],
          "Default": "S"},
    "F": {"Type": "Fail", "Error": "Boom", "Cause": "bad item"},
    "S": {"Type": "Pass", "End": True}}}


def run(sfn, name, definition, items):
    arn = create(sfn, name, definition)
    e = sfn.start_execution(stateMachineArn=arn, input=json.dumps({"items": items}))["executionArn"]
    return wait_status(sfn, e), full_history(sfn, e)


def test_batches_and_the_map_run_in_the_history(sfn):
    d, events = run(sfn, "DmapBatches", distributed(
        {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}},
        MaxConcurrency=2, ItemBatcher={"MaxItemsPerBatch": 2, "BatchInput": {"job.$": "$$.Execution.Name"}}),
        [1, 2, 3])
    assert d["status"] == "SUCCEEDED", d
    name = d["executionArn"].rsplit(":", 1)[1]
    assert json.loads(d["output"]) == [
        {"BatchInput": {"job": name}, "Items": [1, 2]}, {"BatchInput": {"job": name}, "Items": [3]}]
    assert [e["type"] for e in events] == [
        "ExecutionStarted", "MapStateEntered", "MapStateStarted", "MapRunStarted", "MapRunSucceeded",
        "MapStateSucceeded", "MapStateExited", "ExecutionSucceeded"]
    run_arn = events[3]["mapRunStartedEventDetails"]["mapRunArn"]
    assert run_arn.startswith("arn:aws:states:us-east-1:000000000000:mapRun:DmapBatches/"), run_arn
    # The children are executions of their own, listed by their Map Run.
    children = sfn.list_executions(mapRunArn=run_arn)["executions"]
    assert len(children) == 2 and all(c["status"] == "SUCCEEDED" for c in children), children
    assert all(c["mapRunArn"] == run_arn for c in children)
    machine = run_arn.split(":mapRun:")[1].rsplit(":", 1)[0]
    inputs = []
    for c in children:
        assert c["stateMachineArn"] == f"arn:aws:states:us-east-1:000000000000:stateMachine:{machine}"
        assert c["executionArn"].startswith(f"arn:aws:states:us-east-1:000000000000:execution:{machine}:")
        child = sfn.describe_execution(executionArn=c["executionArn"])
        assert child["mapRunArn"] == run_arn
        assert child["output"] == child["input"]
        inputs.append(json.loads(child["input"]))
        assert [e["type"] for e in full_history(sfn, c["executionArn"])] == [
            "ExecutionStarted", "PassStateEntered", "PassStateExited", "ExecutionSucceeded"]
    assert sorted(inputs, key=lambda i: i["Items"]) == json.loads(d["output"])
    # The Map Run itself.
    runs = sfn.list_map_runs(executionArn=d["executionArn"])["mapRuns"]
    assert [(r["mapRunArn"], r["stateMachineArn"]) for r in runs] == [
        (run_arn, f"arn:aws:states:us-east-1:000000000000:stateMachine:{machine}")]
    m = sfn.describe_map_run(mapRunArn=run_arn)
    assert (m["status"], m["executionArn"], m["maxConcurrency"]) == ("SUCCEEDED", d["executionArn"], 2)
    assert (m["itemCounts"]["total"], m["itemCounts"]["succeeded"]) == (3, 3)
    assert (m["executionCounts"]["total"], m["executionCounts"]["succeeded"]) == (2, 2)
    assert m["stopDate"] >= m["startDate"]
    # ... and not among the parent machine's executions.
    parent_machine = d["stateMachineArn"]
    assert [e["name"] for e in sfn.list_executions(stateMachineArn=parent_machine)["executions"]] == [name]


def test_a_failed_batch_beyond_the_tolerance_fails_the_state(sfn):
    items = [{"n": n, "fail": n == 1} for n in range(1, 5)]
    ok, _ = run(sfn, "DmapTolerated", distributed(
        FAILING, ItemBatcher={"MaxItemsPerBatch": 2}, ToleratedFailureCount=2), items)
    assert ok["status"] == "SUCCEEDED", ok
    assert json.loads(ok["output"])[0] == {"Error": "Boom", "Cause": "bad item"}
    failed, events = run(sfn, "DmapExceeded", distributed(
        FAILING, ItemBatcher={"MaxItemsPerBatch": 2}, ToleratedFailurePercentage=25), items)
    assert failed["status"] == "FAILED", failed
    assert failed["error"] == "States.ExceedToleratedFailureThreshold"
    assert failed["cause"] == "The specified tolerated failure threshold was exceeded"
    run_arn = next(e for e in events if e["type"] == "MapRunStarted")["mapRunStartedEventDetails"]["mapRunArn"]
    m = sfn.describe_map_run(mapRunArn=run_arn)
    assert m["status"] == "FAILED" and m["toleratedFailurePercentage"] == 25
    assert (m["executionCounts"]["failed"], m["executionCounts"]["total"]) == (1, 2)
    assert (m["itemCounts"]["failed"], m["itemCounts"]["total"]) == (2, 4)
    map_run_failed = next(e for e in events if e["type"] == "MapRunFailed")
    assert map_run_failed["mapRunFailedEventDetails"] == {
        "error": "States.ExceedToleratedFailureThreshold",
        "cause": "The specified tolerated failure threshold was exceeded"}


def test_list_executions_takes_a_machine_or_a_map_run(sfn):
    arn = create(sfn, "DmapLists", distributed({"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}))
    run = "arn:aws:states:us-east-1:000000000000:mapRun:DmapLists/none:00000000-0000-4000-8000-000000000000"
    # A Map Run over no items lists no children; one that no execution started does not exist.
    e = sfn.start_execution(stateMachineArn=arn, input='{"items": []}')["executionArn"]
    assert wait_status(sfn, e)["status"] == "SUCCEEDED"
    empty = next(ev for ev in full_history(sfn, e) if ev["type"] == "MapRunStarted")
    assert sfn.list_executions(mapRunArn=empty["mapRunStartedEventDetails"]["mapRunArn"])["executions"] == []
    with pytest.raises(ClientError) as err:
        sfn.list_executions(mapRunArn=run)
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"
    for kw, code in (({"stateMachineArn": arn, "mapRunArn": run}, "ValidationException"),
                     ({}, "ValidationException"),
                     ({"mapRunArn": arn}, "InvalidArn")):
        with pytest.raises(ClientError) as err:
            sfn.list_executions(**kw)
        assert err.value.response["Error"]["Code"] == code, kw


def test_describe_map_run_errors(sfn):
    for arn, code in (("arn:aws:states:us-east-1:000000000000:mapRun:Nope/x:00000000-0000-4000-8000-000000000000",
                       "ResourceNotFound"),
                      ("arn:aws:states:us-east-1:000000000000:stateMachine:Nope", "InvalidArn")):
        with pytest.raises(ClientError) as err:
            sfn.describe_map_run(mapRunArn=arn)
        assert err.value.response["Error"]["Code"] == code, arn


def test_update_map_run_widens_the_window_of_a_running_map(sfn):
    slow = {"StartAt": "Nap", "States": {"Nap": {"Type": "Wait", "Seconds": 2, "End": True}}}
    arn = create(sfn, "DmapUpdate", distributed(slow, MaxConcurrency=1))
    e = sfn.start_execution(stateMachineArn=arn, input=json.dumps({"items": list(range(6))}))["executionArn"]
    run_arn = None
    for _ in range(100):
        runs = sfn.list_map_runs(executionArn=e)["mapRuns"]
        if runs:
            run_arn = runs[0]["mapRunArn"]
            break
        time.sleep(0.05)
    assert run_arn, "no Map Run started"
    before = sfn.describe_map_run(mapRunArn=run_arn)
    assert (before["maxConcurrency"], before["executionCounts"]["running"]) == (1, 1)
    sfn.update_map_run(mapRunArn=run_arn, maxConcurrency=6, toleratedFailureCount=2)
    after = sfn.describe_map_run(mapRunArn=run_arn)
    assert (after["maxConcurrency"], after["toleratedFailureCount"]) == (6, 2)
    # The window opened at once: every remaining child started with the update.
    counts = after["executionCounts"]
    assert counts["pending"] == 0 and counts["running"] + counts["succeeded"] == 6, counts
    assert wait_status(sfn, e)["status"] == "SUCCEEDED"
    # A Map Run that ended, or an update of nothing, is refused.
    for kw in ({"maxConcurrency": 2}, {}):
        with pytest.raises(ClientError) as err:
            sfn.update_map_run(mapRunArn=run_arn, **kw)
        assert err.value.response["Error"]["Code"] == "ValidationException", kw


def test_redriving_the_parent_redrives_its_map_run(sfn):
    # One child at a time: "a" succeeds, "b" fails (its first call), "c" never starts.
    arn = create(sfn, "DmapRedrive", distributed({"StartAt": "Which", "States": {
        "Which": {"Type": "Choice", "Choices": [
            {"Variable": "$", "StringEquals": "b", "Next": "Call"}], "Default": "Keep"},
        "Keep": {"Type": "Pass", "End": True},
        "Call": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                 "Parameters": {"FunctionName": "flaky", "Payload": {"key": "redrive-maprun-b"}},
                 "OutputPath": "$.Payload", "End": True}}}, MaxConcurrency=1))
    e = sfn.start_execution(stateMachineArn=arn, input=json.dumps({"items": ["a", "b", "c"]}))["executionArn"]
    d = wait_status(sfn, e)
    assert d["status"] == "FAILED" and d["error"] == "States.ExceedToleratedFailureThreshold"
    run = next(ev for ev in full_history(sfn, e) if ev["type"] == "MapRunStarted")["mapRunStartedEventDetails"]["mapRunArn"]
    failed_child = [c for c in sfn.list_executions(mapRunArn=run)["executions"] if c["status"] == "FAILED"]
    assert len(failed_child) == 1
    sfn.redrive_execution(executionArn=e)
    d = wait_status(sfn, e)
    assert d["status"] == "SUCCEEDED", d
    assert json.loads(d["output"]) == ["a", {"ok": "redrive-maprun-b"}, "c"]
    events = full_history(sfn, e)
    redriven = [ev["mapRunRedrivenEventDetails"] for ev in events if ev["type"] == "MapRunRedriven"]
    assert redriven == [{"mapRunArn": run, "redriveCount": 1}]
    m = sfn.describe_map_run(mapRunArn=run)
    assert m["status"] == "SUCCEEDED" and m["redriveCount"] == 1 and "redriveDate" in m
    assert m["executionCounts"]["succeeded"] == 3 and m["executionCounts"]["total"] == 3
    # Three children, one per item: the failed one redriven under its own ARN.
    children = sfn.list_executions(mapRunArn=run)["executions"]
    assert len(children) == 3 and all(c["status"] == "SUCCEEDED" for c in children)
    b = sfn.describe_execution(executionArn=failed_child[0]["executionArn"])
    assert b["redriveCount"] == 1


def test_express_children_run_in_memory(sfn):
    d, events = run(sfn, "DmapExpress", {"StartAt": "M", "States": {"M": {
        "Type": "Map", "ItemsPath": "$.items", "End": True,
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "EXPRESS"},
                          "StartAt": "W", "States": {
                              "W": {"Type": "Wait", "Seconds": 1, "Next": "P"},
                              "P": {"Type": "Pass", "Parameters": {"v.$": "$"}, "End": True}}}}}},
        [1, 2, 3, 4])
    assert d["status"] == "SUCCEEDED", d
    assert json.loads(d["output"]) == [{"v": 1}, {"v": 2}, {"v": 3}, {"v": 4}]
    run_arn = next(e for e in events if e["type"] == "MapRunStarted")["mapRunStartedEventDetails"]["mapRunArn"]
    m = sfn.describe_map_run(mapRunArn=run_arn)
    assert (m["status"], m["executionCounts"]["succeeded"]) == ("SUCCEEDED", 4)
    # Listed by their Map Run; they keep no history.
    children = sfn.list_executions(mapRunArn=run_arn)["executions"]
    assert len(children) == 4 and all(c["status"] == "SUCCEEDED" for c in children), children
    assert full_history(sfn, children[0]["executionArn"]) == []
