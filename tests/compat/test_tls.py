"""TLS on the AWS API, with certificates made by `trellisctl certs`: boto3 and the AWS CLI
verify the node against the CA and sign with SigV4 as usual; a rotated certificate is
served to new connections without a restart; a plaintext request gets no answer."""
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config

from conftest import Node, create, trellisctl_bin, wait_status

KEY, SECRET = "AKTLSROOT", "tls-root-secret"


def ctl(*args):
    r = subprocess.run([trellisctl_bin(), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def pki(workdir):
    d = os.path.join(workdir, "pki")
    ctl("certs", "ca", "--dir", d)
    ctl("certs", "node", "first", "--san", "127.0.0.1", "--san", "localhost", "--dir", d)
    ctl("certs", "node", "second", "--san", "127.0.0.1", "--dir", d)
    return d


@pytest.fixture(scope="module")
def tls_node(functions, workdir, pki):
    # The node reads its own copies, so the test can rotate them.
    served = os.path.join(workdir, "served")
    os.makedirs(served)
    for f in ("first.pem", "first-key.pem"):
        shutil.copy(os.path.join(pki, f), os.path.join(served, f.replace("first", "node")))
    env = {"TRELLIS_ROOT_ACCESS_KEY_ID": KEY, "TRELLIS_ROOT_SECRET_ACCESS_KEY": SECRET,
           "TRELLIS__TLS__CERT_FILE": os.path.join(served, "node.pem"),
           "TRELLIS__TLS__KEY_FILE": os.path.join(served, "node-key.pem")}
    n = Node(functions, os.path.join(workdir, "tls"), env=env, ca=os.path.join(pki, "ca.pem")).start()
    n.served = served
    yield n
    n.stop()


def served_name(node):
    """The common name of the certificate the node serves a new connection."""
    ctx = ssl.create_default_context(cafile=node.ca)
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            subject = dict(x[0] for x in t.getpeercert()["subject"])
            return subject["commonName"]


def test_boto3_and_the_cli_verify_the_node_and_sign(tls_node):
    sfn = boto3.client("stepfunctions", endpoint_url=tls_node.endpoint, region_name="us-east-1",
                       aws_access_key_id=KEY, aws_secret_access_key=SECRET, verify=tls_node.ca,
                       config=Config(retries={"max_attempts": 1}))
    arn = create(sfn, "OverTls", {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    e = sfn.start_execution(stateMachineArn=arn, input='{"tls": true}')["executionArn"]
    assert wait_status(sfn, e)["status"] == "SUCCEEDED"
    aws = os.path.join(os.path.dirname(os.path.realpath(sys.executable)), "aws")
    env = dict(os.environ, AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID=KEY,
               AWS_SECRET_ACCESS_KEY=SECRET, AWS_CA_BUNDLE=tls_node.ca)
    r = subprocess.run([aws, "stepfunctions", "list-state-machines", "--endpoint-url", tls_node.endpoint],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "OverTls" in r.stdout, r.stderr
    # A client that does not trust the CA refuses the node.
    with pytest.raises(Exception) as err:
        urllib.request.urlopen(f"{tls_node.endpoint}/healthz", timeout=5,
                               context=ssl.create_default_context())
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value), err.value


def test_plaintext_gets_no_answer(tls_node):
    with socket.create_connection(("127.0.0.1", tls_node.http_port), timeout=15) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(15)
        try:
            reply = s.recv(4096)
        except (ConnectionResetError, socket.timeout):
            reply = b""
    assert b"200 OK" not in reply and b"ok" not in reply.split(b"\r\n\r\n")[-1], reply


def test_a_rotated_certificate_is_served_without_a_restart(tls_node, pki):
    assert served_name(tls_node) == "first"
    pid = tls_node.proc.pid
    # As cert-manager does: new files in place (key first, then the certificate).
    shutil.copy(os.path.join(pki, "second-key.pem"), os.path.join(tls_node.served, "node-key.pem"))
    shutil.copy(os.path.join(pki, "second.pem"), os.path.join(tls_node.served, "node.pem"))
    deadline = time.time() + 20
    name = None
    while time.time() < deadline:
        name = served_name(tls_node)
        if name == "second":
            break
        time.sleep(0.2)
    assert name == "second"
    assert tls_node.proc.pid == pid and tls_node.proc.poll() is None
