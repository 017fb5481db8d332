"""The founding examples, run against `trellis dev` through boto3. The test plays the HTTP
functions and the customer who confirms the order."""
import json
from pathlib import Path

from conftest import ROLE, full_history, wait_status

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_product_import(sfn, functions):
    definition = (EXAMPLES / "product-import/definition.json").read_text()
    arn = sfn.create_state_machine(name="ProductImport", definition=definition, roleArn=ROLE)["stateMachineArn"]
    e = sfn.start_execution(stateMachineArn=arn, name="batch-1",
                            input=(EXAMPLES / "product-import/input.json").read_text())["executionArn"]
    d = wait_status(sfn, e)
    assert d["status"] == "SUCCEEDED", d
    out = json.loads(d["output"])
    assert out["batch"] == "batch-1" and out["imported"] == 3
    assert [s["sku"] for s in out["stock"]] == ["CHAIR-1", "TABLE-7", "LAMP-2"]
    assert functions.example.STORE["CHAIR-1"]["name"] == "Oak Chair"
    assert functions.example.STORE["TABLE-7"]["priceCents"] == 39900
    types = [ev["type"] for ev in full_history(sfn, e)]
    assert types.count("MapIterationSucceeded") == 3 and types.count("TaskSucceeded") == 9
    assert types[-1] == "ExecutionSucceeded"


def order_machine(sfn, functions):
    definition = (EXAMPLES / "order-processing/definition.json").read_text()
    # The example calls its stock service on 127.0.0.1:8092 and the customer through the
    # notify-customer function; here the test plays both.
    definition = definition.replace("http://127.0.0.1:8092/reserve", functions.url + "/reserve")
    definition = definition.replace('"notify-customer"', '"notify"')
    return sfn.create_state_machine(name="OrderProcessing", definition=definition, roleArn=ROLE)["stateMachineArn"]


def test_order_processing(sfn, functions):
    arn = order_machine(sfn, functions)
    order = json.loads((EXAMPLES / "order-processing/input.json").read_text())
    confirmed = sfn.start_execution(stateMachineArn=arn, name="confirmed", input=json.dumps(order))["executionArn"]
    order2 = {"order": dict(order["order"], id="ORD-2002", total=2500)}
    rejected = sfn.start_execution(stateMachineArn=arn, name="rejected", input=json.dumps(order2))["executionArn"]
    empty = sfn.start_execution(stateMachineArn=arn, name="empty",
                                input=(EXAMPLES / "order-processing/empty-order.json").read_text())["executionArn"]

    # The customer confirms the first order and rejects the second, through their tokens.
    t1 = functions.wait_token("orderId", "ORD-1001")["token"]
    sfn.send_task_success(taskToken=t1, output='{"confirmed": true}')
    t2 = functions.wait_token("orderId", "ORD-2002")["token"]
    sfn.send_task_failure(taskToken=t2, error="OrderRejected", cause="changed my mind")

    d = wait_status(sfn, confirmed)
    assert d["status"] == "SUCCEEDED", d
    assert json.loads(d["output"]) == {"orderId": "ORD-1001", "status": "SHIPPED", "summary": "149.5 EUR for 2 items"}
    d = wait_status(sfn, rejected)
    assert json.loads(d["output"]) == {"orderId": "ORD-2002", "status": "CANCELLED"}
    exits = [ev["stateExitedEventDetails"]["output"] for ev in full_history(sfn, rejected) if ev["type"] == "PassStateExited"]
    assert any("manual-review" in o for o in exits)
    d = wait_status(sfn, empty)
    assert d["status"] == "FAILED" and d["error"] == "OrderEmpty"
    types = [ev["type"] for ev in full_history(sfn, confirmed)]
    # (No TaskSubmitted check: the customer may answer before the notify call returns.)
    for t in ["ChoiceStateEntered", "ParallelStateStarted", "TaskScheduled", "TaskSucceeded", "ExecutionSucceeded"]:
        assert t in types


def test_order_processing_walkthrough_runs_as_written(tmp_path):
    """The README's "On a Trellis node" section, as a user runs it: its shell block with
    `trellis` being the binary under test, from a directory that has the examples."""
    import os
    import subprocess
    from conftest import trellis_bin
    readme = (EXAMPLES / "order-processing/README.md").read_text()
    section = readme.split("## On a Trellis node, with a real confirmation", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    expected = section.split("```text\n", 1)[1].split("```", 1)[0].strip()
    (tmp_path / "examples").symlink_to(EXAMPLES)
    # `trellis` is the binary under test, on the PATH as an installed one would be.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trellis").symlink_to(trellis_bin())
    # The background jobs the block starts stop with it (SIGTERM: the node shuts down).
    script = "set -eu\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\n" + block
    venv_bin = str(Path(os.sys.executable).parent)
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), venv_bin, os.environ["PATH"]])}
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == expected, r.stdout
