"""Authentication, authorization and rate limits on the AWS JSON API, through boto3 and the
AWS CLI: a node with a root principal (`TRELLIS_ROOT_ACCESS_KEY_ID`,
`TRELLIS_ROOT_SECRET_ACCESS_KEY`) serves requests signed with its keys and refuses the rest
with AWS's errors; principals from a principals file get what their policies allow, lose
their keys when the file drops them, and are throttled each on its own."""
import datetime
import json
import os
import subprocess
import sys
from unittest import mock

import boto3
import botocore.auth
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import Node, create, trellisctl_bin, wait_status

KEY, SECRET = "TRELLISROOTKEY", "root-secret-of-the-tests"
ROOT_TOKEN = "root-token-of-the-tests"


@pytest.fixture(scope="module")
def secured(functions, workdir):
    env = {"TRELLIS_ROOT_ACCESS_KEY_ID": KEY, "TRELLIS_ROOT_SECRET_ACCESS_KEY": SECRET}
    n = Node(functions, os.path.join(workdir, "secured"), env=env).start()
    yield n
    n.stop()


def client(node, key=KEY, secret=SECRET, **config):
    return boto3.client("stepfunctions", endpoint_url=node.endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}, **config))


def refusal(call):
    with pytest.raises(ClientError) as e:
        call()
    err = e.value.response["Error"]
    return err["Code"], err["Message"]


def test_right_keys_work(secured):
    sfn = client(secured)
    arn = create(sfn, "Authed", {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    e = sfn.start_execution(stateMachineArn=arn, input='{"a": 1}')["executionArn"]
    d = wait_status(sfn, e)
    assert d["status"] == "SUCCEEDED" and json.loads(d["output"]) == {"a": 1}


def test_wrong_keys_and_no_signature_get_aws_errors(secured):
    code, message = refusal(lambda: client(secured, secret="not-the-secret").list_state_machines())
    assert code == "InvalidSignatureException"
    assert message.startswith("The request signature we calculated does not match"), message
    assert refusal(lambda: client(secured, key="NOBODY").list_state_machines()) == (
        "UnrecognizedClientException", "The security token included in the request is invalid.")
    assert refusal(lambda: client(secured, signature_version=UNSIGNED).list_state_machines()) == (
        "MissingAuthenticationTokenException", "Missing Authentication Token")


def test_a_stale_date_is_refused(secured):
    stale = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    with mock.patch("botocore.auth.get_current_datetime", return_value=stale):
        code, message = refusal(lambda: client(secured).list_state_machines())
    assert code == "InvalidSignatureException"
    assert message.startswith("Signature expired: ") and message.endswith(" - 15 min.)"), message


def test_aws_cli_signs_with_its_usual_credentials(secured):
    aws = os.path.join(os.path.dirname(os.path.realpath(sys.executable)), "aws")
    base = dict(os.environ, AWS_DEFAULT_REGION="us-east-1")
    args = [aws, "stepfunctions", "list-state-machines", "--endpoint-url", secured.endpoint]
    ok = subprocess.run(args, env=dict(base, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET),
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "stateMachines" in json.loads(ok.stdout)
    bad = subprocess.run(args, env=dict(base, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY="wrong"),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "InvalidSignatureException" in bad.stderr, bad.stderr


def test_a_node_without_principals_takes_any_credentials(sfn):
    # The shared node of the other tests has none: `trellis dev` needs no setup.
    assert "stateMachines" in sfn.list_state_machines()


def test_every_call_is_audited_apart(secured):
    import re
    import time
    sfn = client(secured)
    arn = create(sfn, "Audited", {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    refusal(lambda: client(secured, secret="wrong").describe_state_machine(stateMachineArn=arn))
    ansi = re.compile(r"\x1b\[[0-9;]*m")

    def audit_lines():
        secured.log.flush()
        with open(secured.log.name, "rb") as f:
            text = ansi.sub("", f.read().decode(errors="replace"))
        return [line for line in text.splitlines() if "trellis::audit" in line]

    created = refused = []
    deadline = time.time() + 10
    while time.time() < deadline:
        lines = audit_lines()
        created = [x for x in lines if "operation=CreateStateMachine" in x
                   and 'resource="arn:aws:states:us-east-1:000000000000:stateMachine:Audited"' in x]
        refused = [x for x in lines if "operation=DescribeStateMachine" in x
                   and 'outcome="InvalidSignatureException"' in x]
        if created and refused:
            break
        time.sleep(0.1)
    assert created and refused, audit_lines()[-5:]
    assert 'principal="root"' in created[0] and 'outcome="ok"' in created[0], created
    assert 'principal="-"' in refused[0], refused


PRINCIPALS = """
[[principals]]
name = "reader"
access_key_id = "AKREADER"
secret_access_key = "reader-secret"
roles = ["read-only"]

[[principals]]
name = "starter"
access_key_id = "AKSTARTER"
secret_access_key = "starter-secret"
roles = ["read-only"]
[[principals.statements]]
effect = "Allow"
actions = ["states:StartExecution"]
resources = ["arn:aws:states:*:*:stateMachine:Orders*"]
[[principals.statements]]
effect = "Deny"
actions = ["states:StartExecution"]
resources = ["arn:aws:states:*:*:stateMachine:OrdersFrozen"]
"""


@pytest.fixture(scope="module")
def policed(functions, workdir):
    path = os.path.join(workdir, "principals.toml")
    with open(path, "w") as f:
        f.write(PRINCIPALS)
    env = {"TRELLIS_ROOT_ACCESS_KEY_ID": KEY, "TRELLIS_ROOT_SECRET_ACCESS_KEY": SECRET,
           "TRELLIS_ROOT_TOKEN": ROOT_TOKEN, "TRELLIS__AUTH__PRINCIPALS_FILE": path}
    n = Node(functions, os.path.join(workdir, "policed"), env=env).start()
    n.principals_file = path
    yield n
    n.stop()


PASS = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}


def test_a_denied_action_gets_access_denied(policed):
    root = client(policed)
    orders = create(root, "OrdersDaily", PASS)
    frozen = create(root, "OrdersFrozen", PASS)
    billing = create(root, "Billing", PASS)
    reader = client(policed, key="AKREADER", secret="reader-secret")
    assert {m["name"] for m in reader.list_state_machines()["stateMachines"]} >= {"OrdersDaily", "Billing"}
    assert reader.describe_state_machine(stateMachineArn=orders)["name"] == "OrdersDaily"
    code, message = refusal(lambda: reader.start_execution(stateMachineArn=orders))
    assert code == "AccessDeniedException"
    assert message == (f"User: arn:aws:iam::000000000000:user/reader is not authorized to perform: "
                       f"states:StartExecution on resource: {orders} because no identity-based "
                       f"policy allows the states:StartExecution action")
    assert refusal(lambda: reader.create_state_machine(
        name="Nope", definition=json.dumps(PASS), roleArn="arn:aws:iam::000000000000:role/r"))[0] == "AccessDeniedException"
    # A statement narrowed to some machines, and a deny that wins over it.
    starter = client(policed, key="AKSTARTER", secret="starter-secret")
    e = starter.start_execution(stateMachineArn=orders)["executionArn"]
    assert wait_status(starter, e)["status"] == "SUCCEEDED"
    assert refusal(lambda: starter.start_execution(stateMachineArn=billing))[0] == "AccessDeniedException"
    code, message = refusal(lambda: starter.start_execution(stateMachineArn=frozen))
    assert code == "AccessDeniedException" and message.endswith("with an explicit deny in an identity-based policy")
    # Through the AWS CLI as well.
    aws = os.path.join(os.path.dirname(os.path.realpath(sys.executable)), "aws")
    env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="AKREADER",
               AWS_SECRET_ACCESS_KEY="reader-secret")
    r = subprocess.run([aws, "stepfunctions", "start-execution", "--state-machine-arn", orders,
                        "--endpoint-url", policed.endpoint], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "AccessDeniedException" in r.stderr, r.stderr


def test_a_key_dropped_from_the_principals_file_stops_working(policed):
    import time
    reader = client(policed, key="AKREADER", secret="reader-secret")
    reader.list_activities()
    with open(policed.principals_file, "w") as f:
        f.write(PRINCIPALS.split("[[principals]]")[0] + "[[principals]]" + PRINCIPALS.split("[[principals]]")[2])
    deadline = time.time() + 20
    outcome = None
    while time.time() < deadline:
        try:
            reader.list_activities()
        except ClientError as e:
            outcome = e.response["Error"]["Code"]
            break
        time.sleep(0.2)
    assert outcome == "UnrecognizedClientException"
    # The other principal is still known; a broken file changes nothing.
    with open(policed.principals_file, "a") as f:
        f.write("\n[[principals]]\nthis is not toml\n")
    time.sleep(2.5)
    assert "activities" in client(policed, key="AKSTARTER", secret="starter-secret").list_activities()
    with open(policed.principals_file, "w") as f:
        f.write(PRINCIPALS)


def test_a_flood_from_one_principal_is_throttled_while_another_is_served(functions, workdir):
    path = os.path.join(workdir, "flood-principals.toml")
    with open(path, "w") as f:
        f.write('[[principals]]\nname = "flood"\naccess_key_id = "AKFLOOD"\nsecret_access_key = "flood-secret"\n'
                'roles = ["read-only"]\n'
                '[[principals]]\nname = "calm"\naccess_key_id = "AKCALM"\nsecret_access_key = "calm-secret"\n'
                'roles = ["read-only"]\n')
    env = {"TRELLIS__AUTH__PRINCIPALS_FILE": path, "TRELLIS__AUTH__RATE__OTHER_BURST": "10",
           "TRELLIS__AUTH__RATE__OTHER_PER_SECOND": "1"}
    n = Node(functions, os.path.join(workdir, "flood"), env=env).start()
    try:
        flood = client(n, key="AKFLOOD", secret="flood-secret")
        outcomes = []
        for _ in range(30):
            try:
                flood.list_state_machines()
                outcomes.append("ok")
            except ClientError as e:
                outcomes.append(e.response["Error"]["Code"])
        assert "ThrottlingException" in outcomes, outcomes
        # At most the burst and what refilled while the flood ran.
        assert outcomes.count("ok") < 30, outcomes
        assert set(outcomes) == {"ok", "ThrottlingException"}, outcomes
        assert "stateMachines" in client(n, key="AKCALM", secret="calm-secret").list_state_machines()
    finally:
        n.stop()


def test_trellisctl_sends_its_token(policed):
    def ctl(*args, token=None):
        env = {k: v for k, v in os.environ.items() if k != "TRELLIS_TOKEN"}
        if token:
            env["TRELLIS_TOKEN"] = token
        return subprocess.run([trellisctl_bin(), "--endpoint", policed.grpc_endpoint, *args],
                              env=env, capture_output=True, text=True, timeout=60)
    ok = ctl("--json", "sm", "list", token=ROOT_TOKEN)
    assert ok.returncode == 0, ok.stderr
    listed = client(policed).list_state_machines()["stateMachines"]
    assert sorted(m["name"] for m in json.loads(ok.stdout)) == sorted(m["name"] for m in listed)
    for token, code in ((None, "MissingAuthenticationTokenException"),
                        ("not-the-token-of-anyone", "UnrecognizedClientException")):
        bad = ctl("sm", "list", token=token)
        assert bad.returncode == 1, bad
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("trellisctl: ") and code in lines[0], bad.stderr
    # The flag as well as the variable.
    assert ctl("--token", ROOT_TOKEN, "nodes", "list").returncode == 0
