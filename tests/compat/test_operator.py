"""An operator's first minutes: what a node prints at start, its log format, a second node on
a data directory in use, and trellisctl pointed at the wrong port."""

import json
import os
import subprocess

from conftest import Node, free_port, trellis_bin, trellisctl_bin


def log_of(node):
    node.log.flush()
    with open(node.log.name, errors="replace") as f:
        return f.read()


def test_start_banner_plain_logs_and_a_directory_in_use(functions, workdir):
    data = os.path.join(workdir, "operator")
    node = Node(functions, data).start()
    try:
        log = log_of(node)
        # A file gets no colour codes, and the start is a few lines, not one per shard.
        assert "\x1b[" not in log
        info = [line for line in log.splitlines() if " INFO " in line]
        assert len(info) < 10, "\n".join(info)
        for part in (f"data      {os.path.realpath(data)} (8 shards)",
                     f"--endpoint-url {node.endpoint} list-state-machines",
                     f"trellisctl --endpoint {node.grpc_endpoint} cluster status",
                     "stop      Ctrl-C or SIGTERM"):
            assert part in log, part

        # A second node on the same directory stops at once with one line, before it
        # binds a port or says it listens.
        ports = [free_port() for _ in range(3)]
        r = subprocess.run([trellis_bin(), "dev", "--data-dir", data,
                            "--http-addr", f"127.0.0.1:{ports[0]}", "--grpc-addr", f"127.0.0.1:{ports[1]}",
                            "--peer-addr", f"127.0.0.1:{ports[2]}"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert "is in use by another process" in lines[0] and data in lines[0], lines[0]
        # The first node is unharmed.
        assert node.client().list_state_machines()["stateMachines"] == []
    finally:
        node.stop()


def test_json_logs(functions, workdir):
    node = Node(functions, os.path.join(workdir, "json-logs"),
                env={"TRELLIS__NODE__LOG_FORMAT": "json"}).start()
    try:
        node.client().list_state_machines()
    finally:
        node.stop()
    events = [json.loads(line) for line in log_of(node).splitlines() if line.startswith("{")]
    assert any(e["fields"]["message"] == "bootstrapping a new cluster" and e["level"] == "INFO"
               and e["fields"]["node_id"] == 1 for e in events), events
    # Only the node's own lines for people (banner) are not JSON.
    others = [line for line in log_of(node).splitlines()
              if line and not line.startswith("{") and not line.startswith(("trellis: ", "  "))]
    assert others == []


def test_trellisctl_on_the_wrong_port_says_so(node):
    http = node.endpoint
    r = subprocess.run([trellisctl_bin(), "--endpoint", http, "cluster", "status"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1, r.stderr
    assert "answers HTTP but not gRPC" in r.stderr and "7300" in r.stderr, r.stderr
    nobody = f"http://127.0.0.1:{free_port()}"
    r = subprocess.run([trellisctl_bin(), "--endpoint", nobody, "cluster", "status"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1, r.stderr
    assert "is a node running there?" in r.stderr, r.stderr


def test_a_compacted_copy_serves_the_same_executions(functions, workdir):
    data = os.path.join(workdir, "to-compact")
    node = Node(functions, data).start()
    try:
        sfn = node.client()
        from conftest import create, wait_status
        arn = create(sfn, "Compacted", {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
        runs = [sfn.start_execution(stateMachineArn=arn, name=f"c{i}", input=json.dumps({"i": i}))["executionArn"]
                for i in range(20)]
        for r in runs:
            assert wait_status(sfn, r)["status"] == "SUCCEEDED"
        # Compacting a running node's directory is refused.
        busy = subprocess.run([trellis_bin(), "compact", "--data-dir", data, "--into", data + ".new"],
                              capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2 and "in use by another process" in busy.stderr, busy
    finally:
        node.stop()
    r = subprocess.run([trellis_bin(), "compact", "--data-dir", data, "--into", data + ".new"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r
    assert r.stdout.startswith(f"compacted {data} ("), r.stdout
    copy = Node(functions, data + ".new").start()
    try:
        sfn = copy.client()
        for i, run in enumerate(runs):
            d = sfn.describe_execution(executionArn=run)
            assert d["status"] == "SUCCEEDED" and json.loads(d["output"]) == {"i": i}
        events = sfn.get_execution_history(executionArn=runs[0])["events"]
        assert events[-1]["type"] == "ExecutionSucceeded"
        # It goes on running executions.
        more = sfn.start_execution(stateMachineArn=arn, name="after", input="{}")["executionArn"]
        assert wait_status(sfn, more)["status"] == "SUCCEEDED"
    finally:
        copy.stop()


def ctl(node, *args):
    return subprocess.run([trellisctl_bin(), "--endpoint", node.grpc_endpoint, *args],
                          capture_output=True, text=True, timeout=120)


def test_trellisctl_takes_machine_names(node):
    from conftest import create, wait_status
    sfn = node.client()
    arn = create(sfn, "ByName", {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}})
    r = ctl(node, "exec", "start", "ByName", "--name", "n1", "--input", '{"a": 1}')
    assert r.returncode == 0, r
    run = r.stdout.strip().splitlines()[0]
    assert run == arn.replace(":stateMachine:", ":execution:") + ":n1", r.stdout
    assert wait_status(sfn, run)["status"] == "SUCCEEDED"
    r = ctl(node, "--json", "sm", "describe", "ByName")
    assert r.returncode == 0 and json.loads(r.stdout)["stateMachineArn"] == arn, r
    r = ctl(node, "--json", "exec", "list", "ByName")
    assert r.returncode == 0 and [e["name"] for e in json.loads(r.stdout)] == ["n1"], r
    # The machine's own retention, by name; `default` goes back to the cluster's.
    r = ctl(node, "sm", "retention", "ByName", "30d")
    assert r.returncode == 0 and r.stdout.strip() == f"{arn}: 30days", r
    r = ctl(node, "--json", "sm", "retention", "ByName")
    assert json.loads(r.stdout) == {"stateMachineArn": arn, "retentionSeconds": 30 * 86400}
    r = ctl(node, "sm", "retention", "ByName", "default")
    assert r.returncode == 0 and "the cluster's retention" in r.stdout, r
    r = ctl(node, "sm", "retention", "ByName", "soon")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "'soon' is not a retention period" in r.stderr, r
    # An unknown name is one line, not a stack of errors.
    r = ctl(node, "exec", "start", "NoSuchMachine")
    assert r.returncode == 1 and r.stderr.strip() == \
        "trellisctl: no state machine is named 'NoSuchMachine' (give its name or ARN)", r


def test_bench_cleans_up_after_itself(node):
    sfn = node.client()
    before = {m["name"] for m in sfn.list_state_machines()["stateMachines"]}
    r = ctl(node, "--json", "bench", "--executions", "30", "--concurrency", "4", "--cleanup")
    assert r.returncode == 0, r
    report = json.loads(r.stdout)
    assert report["executions"] == 30 and report["machine"].startswith("trellisctl-bench-standard-")
    # No progress bar is drawn into a pipe.
    assert r.stderr == "", r.stderr
    after = {m["name"] for m in sfn.list_state_machines()["stateMachines"]}
    assert after == before
    # Without --cleanup the machine stays, for a look at its executions.
    r = ctl(node, "--json", "bench", "--executions", "5", "--concurrency", "2")
    assert r.returncode == 0, r
    kept = json.loads(r.stdout)["machine"]
    assert kept in {m["name"] for m in sfn.list_state_machines()["stateMachines"]}


def test_bench_times_the_activity_round_trip(node):
    sfn = node.client()
    machines = {m["name"] for m in sfn.list_state_machines()["stateMachines"]}
    activities = {a["name"] for a in sfn.list_activities()["activities"]}
    r = ctl(node, "--json", "bench", "--activity", "--executions", "12", "--concurrency", "3",
            "--cleanup")
    assert r.returncode == 0, r
    report = json.loads(r.stdout)
    assert report["roundTrips"] == 12 and report["machine"].startswith("trellisctl-bench-activity-")
    steps = report["latencyMs"]
    assert list(steps) == ["start", "hand-out", "answer", "end seen", "round trip"]
    assert all(0 < s["p50"] <= s["p99"] for s in steps.values()), steps
    # Each execution went through its activity task and SUCCEEDED (the bench checks each).
    assert {m["name"] for m in sfn.list_state_machines()["stateMachines"]} == machines
    assert {a["name"] for a in sfn.list_activities()["activities"]} == activities
    r = ctl(node, "bench", "--activity", "--express")
    assert r.returncode != 0 and "--activity times its own machine" in r.stderr, r


def test_placement_commands_tell_the_truth_while_paused(node):
    try:
        assert ctl(node, "placement", "pause").returncode == 0
        r = ctl(node, "shards", "rebalance")
        assert r.returncode == 1, r
        assert r.stderr.strip() == ("trellisctl: placement is paused: nothing was started and nothing "
                                    "moves until `trellisctl placement resume`"), r.stderr
        r = ctl(node, "--json", "shards", "rebalance")
        assert r.returncode == 1 and "placement is paused" in r.stderr, r
        # A leader placed by hand stays while paused, and the command does not warn.
        r = ctl(node, "shards", "transfer-leader", "0", "--to", "1")
        assert r.returncode == 0 and r.stdout.strip() == "node 1 leads shard 0", r
    finally:
        assert ctl(node, "placement", "resume").returncode == 0
    r = ctl(node, "shards", "rebalance")
    assert r.returncode == 0 and r.stdout.strip() == "balanced: nothing to do", r
    r = ctl(node, "shards", "transfer-leader", "0", "--to", "1")
    assert r.returncode == 0 and "may move it again" in r.stdout, r


def test_describe_is_for_people_and_json_stays_raw(node):
    from conftest import create, wait_status
    sfn = node.client()
    arn = create(sfn, "Readable", {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": {"ok": 1}, "End": True}}})
    run = sfn.start_execution(stateMachineArn=arn, name="r1", input='{"x": 1}')["executionArn"]
    assert wait_status(sfn, run)["status"] == "SUCCEEDED"
    r = ctl(node, "exec", "describe", run)
    assert r.returncode == 0, r
    lines = dict(line.split(None, 1) for line in r.stdout.strip().splitlines())
    assert lines["execution"] == run and lines["machine"] == arn and lines["status"] == "SUCCEEDED"
    import re
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines["started"]), lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(after \d+\.\d{3} s\)", lines["stopped"]), lines
    assert json.loads(lines["input"]) == {"x": 1} and json.loads(lines["output"]) == {"ok": 1}
    assert "error" not in lines
    raw = json.loads(ctl(node, "--json", "exec", "describe", run).stdout)
    assert isinstance(raw["startDate"], int) and raw["status"] == "SUCCEEDED"
    r = ctl(node, "sm", "describe", "Readable")
    head = r.stdout.split("\ndefinition\n")[0]
    fields = dict(line.split(None, 1) for line in head.splitlines())
    assert fields["arn"] == arn and fields["type"] == "STANDARD" and fields["retention"] == "the cluster's"
    assert json.loads(r.stdout.split("\ndefinition\n")[1])["StartAt"] == "P"


def test_drain_wait_reports_what_is_left(functions, workdir):
    # A lone node cannot give its shards to anyone: the wait ends with what is left.
    lone = Node(functions, os.path.join(workdir, "lone")).start()
    try:
        r = ctl(lone, "nodes", "drain", "1", "--wait", "--wait-seconds", "2")
        assert r.returncode == 1, r
        assert r.stderr.strip() == ("trellisctl: node 1: drain not done after 2 s: leads 8 shards, "
                                    "holds 8 replicas, leads the meta group"), r.stderr
    finally:
        lone.stop()


def test_rebalance_wait_on_a_balanced_node(node):
    r = ctl(node, "shards", "rebalance", "--wait", "--wait-seconds", "10")
    assert r.returncode == 0 and r.stdout.strip() == "balanced: nothing to do" and r.stderr == "", r
    r = ctl(node, "--json", "shards", "rebalance", "--wait")
    assert json.loads(r.stdout) == {"steps": [], "placementPaused": False, "moving": []}


def test_maprun_describe_is_for_people(node):
    from conftest import create, wait_status
    import re
    sfn = node.client()
    arn = create(sfn, "ReadableMap", {"StartAt": "M", "States": {"M": {
        "Type": "Map", "End": True, "MaxConcurrency": 2,
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                          "StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}}}})
    run = sfn.start_execution(stateMachineArn=arn, input="[1, 2, 3]")["executionArn"]
    assert wait_status(sfn, run)["status"] == "SUCCEEDED"
    map_run = sfn.list_map_runs(executionArn=run)["mapRuns"][0]["mapRunArn"]
    r = ctl(node, "maprun", "describe", map_run)
    assert r.returncode == 0, r
    lines = dict(line.split(None, 1) for line in r.stdout.strip().splitlines()
                 if not line.startswith("map run"))
    assert r.stdout.startswith(f"map run      {map_run}\n"), r.stdout
    assert lines["execution"] == run and lines["status"] == "SUCCEEDED", lines
    assert lines["concurrency"] == "2" and lines["tolerated"] == "none", lines
    assert lines["items"] == "3/3 succeeded" and lines["children"] == "3/3 succeeded", lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(after \d+\.\d{3} s\)", lines["stopped"]), lines
    assert "redriven" not in lines
    raw = json.loads(ctl(node, "--json", "maprun", "describe", map_run).stdout)
    assert raw["mapRunArn"] == map_run and isinstance(raw["startDate"], int)
    assert raw["itemCounts"]["succeeded"] == 3
