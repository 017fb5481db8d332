"""SigV4 authentication on the AWS JSON API, through boto3 and the AWS CLI: a node with a
root principal (`TRELLIS_ROOT_ACCESS_KEY_ID`, `TRELLIS_ROOT_SECRET_ACCESS_KEY`) serves
requests signed with its keys and refuses the rest with AWS's errors."""
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

from conftest import Node, create, wait_status

KEY, SECRET = "TRELLISROOTKEY", "root-secret-of-the-tests"


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
        created = [x for x in lines if "operation=CreateStateMachine" in x and 'resource="Audited"' in x]
        refused = [x for x in lines if "operation=DescribeStateMachine" in x
                   and 'outcome="InvalidSignatureException"' in x]
        if created and refused:
            break
        time.sleep(0.1)
    assert created and refused, audit_lines()[-5:]
    assert 'principal="root"' in created[0] and 'outcome="ok"' in created[0], created
    assert 'principal="-"' in refused[0], refused
