"""Backup to S3 and restore from it, as an operator runs them: `trellisctl backup --to
s3://…` against a node, `trellis restore --from s3://…` into a new data directory, and the
node started on it (S3 is moto's, on 127.0.0.1)."""

import json
import os
import subprocess

from conftest import Node, create, free_port, full_history, trellis_bin, trellisctl_bin, wait_status


def described(sfn, arn):
    d = sfn.describe_execution(executionArn=arn)
    d.pop("ResponseMetadata")
    return d


def test_backup_to_s3_and_restore_from_it(functions, workdir, s3server, s3):
    s3.create_bucket(Bucket="trellis-backups")
    env = {**os.environ, **s3server.env(), "AWS_REGION": "us-east-1"}
    node = Node(functions, os.path.join(workdir, "backup-source"), env=s3server.env()).start()
    try:
        sfn = node.client()
        arn = create(sfn, "bk-orders", {
            "StartAt": "Choose", "States": {
                "Choose": {"Type": "Choice", "Choices": [
                    {"Variable": "$.wait", "BooleanEquals": True, "Next": "Long"}],
                    "Default": "Done"},
                "Long": {"Type": "Wait", "Seconds": 3600, "Next": "Done"},
                "Done": {"Type": "Pass", "Result": {"ok": True}, "End": True}}})
        done = [sfn.start_execution(stateMachineArn=arn, name=f"done-{i}",
                                    input=json.dumps({"wait": False}))["executionArn"] for i in range(3)]
        for e in done:
            assert wait_status(sfn, e)["status"] == "SUCCEEDED"
        waiting = sfn.start_execution(stateMachineArn=arn, name="waiting",
                                      input=json.dumps({"wait": True}))["executionArn"]
        wait_status(sfn, waiting, done=("RUNNING",))
        before = {e: (described(sfn, e), full_history(sfn, e)) for e in done + [waiting]}

        ctl = [trellisctl_bin(), "--endpoint", node.grpc_endpoint]
        # Streamed to S3 as it arrives: no local copy, so a temporary directory that cannot be
        # made (under a file) does not matter.
        blocker = os.path.join(workdir, "backup-not-a-dir")
        open(blocker, "w").close()
        r = subprocess.run(ctl + ["backup", "--to", "s3://trellis-backups/daily/1"],
                           capture_output=True, text=True, timeout=120,
                           env={**env, "TMPDIR": os.path.join(blocker, "tmp")})
        assert r.returncode == 0, r
        assert "backed up the meta group and 8 shards" in r.stdout, r.stdout
        assert "to s3://trellis-backups/daily/1" in r.stdout, r.stdout
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="trellis-backups")["Contents"]}
        assert keys == {"daily/1/manifest.json"} | {f"daily/1/group-{g}.snap" for g in range(9)}, keys

        # Never over another backup: one line, non-zero.
        r = subprocess.run(ctl + ["backup", "--to", "s3://trellis-backups/daily/1"],
                           capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode != 0 and "is not empty" in r.stderr, r
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        # Changed after the backup: not in it.
        sfn.stop_execution(executionArn=waiting)
    finally:
        node.stop()

    restored = Node(functions, os.path.join(workdir, "backup-restored"), env=s3server.env())
    args = [trellis_bin(), "restore", "--from", "s3://trellis-backups/daily/1",
            "--node-id", "1", "--data-dir", restored.data_dir,
            "--peer-addr", f"127.0.0.1:{restored.peer_port}"]
    # A prefix with no backup says so.
    r = subprocess.run([trellis_bin(), "restore", "--from", "s3://trellis-backups/nothing",
                        "--data-dir", os.path.join(workdir, "backup-none"),
                        "--peer-addr", f"127.0.0.1:{free_port()}"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 2 and "no manifest.json (not a complete backup)" in r.stderr, r
    r = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r
    assert "restored 8 shards and the meta group" in r.stdout, r.stdout
    restored.start()
    try:
        sfn = restored.client()
        for e, (d, h) in before.items():
            assert described(sfn, e) == d
            assert full_history(sfn, e) == h
        assert before[waiting][0]["status"] == "RUNNING"
        # The waiting one is live on the restored node: it can be stopped there.
        sfn.stop_execution(executionArn=waiting)
        assert wait_status(sfn, waiting)["status"] == "ABORTED"
    finally:
        restored.stop()
