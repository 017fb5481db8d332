"""Nested executions: `arn:aws:states:::states:startExecution` in its three patterns."""
import json

from conftest import create, full_history, wait_status


def test_start_execution_patterns(sfn):
    child = create(sfn, "Child", {"StartAt": "Double", "States": {
        "Double": {"Type": "Pass", "Parameters": {"doubled.$": "States.MathAdd($.n, $.n)"}, "End": True}}})
    failing = create(sfn, "ChildFails", {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "ChildError", "Cause": "no"}}})
    parent = create(sfn, "Parent", {"StartAt": "Fire", "States": {
        "Fire": {"Type": "Task", "Resource": "arn:aws:states:::states:startExecution",
                 "Parameters": {"StateMachineArn": child, "Input": {"n": 1}, "Name": "fired"},
                 "ResultPath": "$.fired", "Next": "Sync"},
        "Sync": {"Type": "Task", "Resource": "arn:aws:states:::states:startExecution.sync",
                 "Parameters": {"StateMachineArn": child, "Input": {"n": 2}},
                 "ResultSelector": {"status.$": "$.Status", "output.$": "$.Output"},
                 "ResultPath": "$.sync", "Next": "Sync2"},
        "Sync2": {"Type": "Task", "Resource": "arn:aws:states:::states:startExecution.sync:2",
                  "Parameters": {"StateMachineArn": child, "Input": {"n": 3}},
                  "ResultSelector": {"output.$": "$.Output"}, "ResultPath": "$.sync2", "Next": "Fails"},
        "Fails": {"Type": "Task", "Resource": "arn:aws:states:::states:startExecution.sync",
                  "Parameters": {"StateMachineArn": failing},
                  "Catch": [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.caught", "Next": "Done"}],
                  "End": True},
        "Done": {"Type": "Pass", "End": True}}})
    e = sfn.start_execution(stateMachineArn=parent, name="p1")["executionArn"]
    d = wait_status(sfn, e)
    assert d["status"] == "SUCCEEDED", d
    out = json.loads(d["output"])
    assert out["fired"]["ExecutionArn"].endswith(":execution:Child:fired")
    assert out["sync"] == {"status": "SUCCEEDED", "output": '{"doubled":4}'}
    assert out["sync2"] == {"output": {"doubled": 6}}
    assert out["caught"]["Error"] == "States.TaskFailed"
    cause = json.loads(out["caught"]["Cause"])
    assert cause["Status"] == "FAILED" and cause["Error"] == "ChildError"
    fired = wait_status(sfn, out["fired"]["ExecutionArn"])
    assert json.loads(fired["output"]) == {"doubled": 2}
    assert "TaskSucceeded" in [ev["type"] for ev in full_history(sfn, e)]


def test_start_execution_wait_for_task_token(sfn):
    worker = create(sfn, "TokenChild", {"StartAt": "Hold", "States": {"Hold": {"Type": "Wait", "Seconds": 600, "End": True}}})
    parent = create(sfn, "TokenParent", {"StartAt": "Ask", "States": {
        "Ask": {"Type": "Task", "Resource": "arn:aws:states:::states:startExecution.waitForTaskToken",
                "Parameters": {"StateMachineArn": worker, "Input": {"token.$": "$$.Task.Token"}, "Name": "holder"},
                "End": True}}})
    e = sfn.start_execution(stateMachineArn=parent, name="t1")["executionArn"]
    child_arn = worker.replace(":stateMachine:", ":execution:") + ":holder"
    for _ in range(500):
        try:
            child = sfn.describe_execution(executionArn=child_arn)
            break
        except sfn.exceptions.ExecutionDoesNotExist:
            import time
            time.sleep(0.02)
    token = json.loads(child["input"])["token"]
    sfn.send_task_success(taskToken=token, output='{"answered": true}')
    d = wait_status(sfn, e)
    assert d["status"] == "SUCCEEDED" and json.loads(d["output"]) == {"answered": True}
    sfn.stop_execution(executionArn=child_arn)
