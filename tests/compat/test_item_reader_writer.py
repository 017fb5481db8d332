"""DISTRIBUTED Map readers and writers against a real S3 server (moto, started by the
tests): ItemReader (JSON, JSONL, CSV, an S3 Inventory manifest, a listing), ResultWriter
(the export's files and the state's output), and AWS's errors for what cannot be read or
written. Everything goes through boto3."""
import csv
import gzip
import io
import json
import uuid

import pytest

from conftest import create, full_history, wait_status

PASS = {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}


def dmap(reader=None, writer=None, processor=PASS, **fields):
    state = {"Type": "Map", "End": True,
             "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                               **processor}}
    if reader:
        state["ItemReader"] = reader
    if writer:
        state["ResultWriter"] = writer
    state.update(fields)
    return {"StartAt": "M", "States": {"M": state}}


def get_object(input_type, key="$.key", **config):
    return {"Resource": "arn:aws:states:::s3:getObject",
            "ReaderConfig": {"InputType": input_type, **config},
            "Parameters": {"Bucket.$": "$.bucket", "Key.$": key}}


@pytest.fixture(scope="module")
def bucket(s3):
    name = f"items-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


def run(sfn, definition, input, name=None):
    arn = create(sfn, name or f"Rw{uuid.uuid4().hex[:10]}", definition)
    e = sfn.start_execution(stateMachineArn=arn, input=json.dumps(input))["executionArn"]
    return wait_status(sfn, e, timeout=90)


def output(d):
    assert d["status"] == "SUCCEEDED", d
    return json.loads(d["output"])


def test_json_array_and_items_pointer(sfn, s3, bucket):
    s3.put_object(Bucket=bucket, Key="plain.json", Body=json.dumps([{"n": 1}, {"n": 2}, {"n": 3}]))
    assert output(run(sfn, dmap(get_object("JSON")), {"bucket": bucket, "key": "plain.json"})) == [
        {"n": 1}, {"n": 2}, {"n": 3}]
    doc = {"meta": {"v": 1}, "data": {"rows": [10, 20.5, "x", [1]]}}
    s3.put_object(Bucket=bucket, Key="nested.json", Body=json.dumps(doc))
    d = run(sfn, dmap(get_object("JSON", ItemsPointer="/data/rows", MaxItems=3)),
            {"bucket": bucket, "key": "nested.json"})
    assert output(d) == [10, 20.5, "x"]


def test_jsonl_with_item_selector_and_batches(sfn, s3, bucket):
    lines = "\n".join(json.dumps({"sku": f"s{i}", "qty": i}) for i in range(7)) + "\n"
    s3.put_object(Bucket=bucket, Key="products.jsonl", Body=lines)
    d = run(sfn, dmap(get_object("JSONL"), ItemSelector={"sku.$": "$$.Map.Item.Value.sku"},
                      ItemBatcher={"MaxItemsPerBatch": 3}),
            {"bucket": bucket, "key": "products.jsonl"})
    assert output(d) == [
        {"Items": [{"sku": "s0"}, {"sku": "s1"}, {"sku": "s2"}]},
        {"Items": [{"sku": "s3"}, {"sku": "s4"}, {"sku": "s5"}]},
        {"Items": [{"sku": "s6"}]}]


def test_csv_first_row_and_given_headers(sfn, s3, bucket):
    s3.put_object(Bucket=bucket, Key="people.csv",
                  Body='id;name;note\n1;"Smith; J";"say ""hi"""\n2;short\n3;a;b;extra\n')
    d = run(sfn, dmap(get_object("CSV", CSVHeaderLocation="FIRST_ROW", CSVDelimiter="SEMICOLON")),
            {"bucket": bucket, "key": "people.csv"})
    assert output(d) == [
        {"id": "1", "name": "Smith; J", "note": 'say "hi"'},
        {"id": "2", "name": "short", "note": ""},
        {"id": "3", "name": "a", "note": "b"}]
    s3.put_object(Bucket=bucket, Key="rows.tsv", Body="1\t2\n3\t4\n")
    d = run(sfn, dmap(get_object("CSV", CSVHeaderLocation="GIVEN", CSVHeaders=["a", "b"], CSVDelimiter="TAB")),
            {"bucket": bucket, "key": "rows.tsv"})
    assert output(d) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]


def test_s3_inventory_manifest(sfn, s3, bucket):
    rows = [[bucket, f"photos/{i}.jpg", str(100 + i)] for i in range(5)]
    for part, chunk in enumerate([rows[:3], rows[3:]]):
        buf = io.StringIO()
        csv.writer(buf).writerows(chunk)
        s3.put_object(Bucket=bucket, Key=f"inventory/data/part{part}.csv.gz",
                      Body=gzip.compress(buf.getvalue().encode()))
    manifest = {"sourceBucket": bucket, "destinationBucket": f"arn:aws:s3:::{bucket}",
                "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size",
                "files": [{"key": f"inventory/data/part{p}.csv.gz", "size": 1, "MD5checksum": "x"}
                          for p in range(2)]}
    s3.put_object(Bucket=bucket, Key="inventory/manifest.json", Body=json.dumps(manifest))
    d = run(sfn, dmap(get_object("MANIFEST", MaxItems=4)), {"bucket": bucket, "key": "inventory/manifest.json"})
    assert output(d) == [{"Bucket": bucket, "Key": f"photos/{i}.jpg", "Size": str(100 + i)} for i in range(4)]


def test_list_objects_v2_with_a_prefix(sfn, s3, bucket):
    for k in ["logs/2024/b.txt", "logs/2024/a.txt", "logs/2025/c.txt", "logsx/d.txt"]:
        s3.put_object(Bucket=bucket, Key=k, Body=b"12345")
    reader = {"Resource": "arn:aws:states:::s3:listObjectsV2",
              "Parameters": {"Bucket.$": "$.bucket", "Prefix": "logs/2024/"}}
    items = output(run(sfn, dmap(reader), {"bucket": bucket}))
    assert [i["Key"] for i in items] == ["logs/2024/a.txt", "logs/2024/b.txt"]
    assert all(i["Size"] == 5 and isinstance(i["LastModified"], int) and i["Etag"] for i in items), items
    # A prefix that is not a whole folder is a plain string prefix, as in S3.
    reader["Parameters"]["Prefix"] = "logs"
    keys = [i["Key"] for i in output(run(sfn, dmap(reader), {"bucket": bucket}))]
    assert keys == ["logs/2024/a.txt", "logs/2024/b.txt", "logs/2025/c.txt", "logsx/d.txt"]


@pytest.mark.parametrize("key,body,cause", [
    ("missing.json", None, "does not exist"),
    ("object.json", json.dumps({"a": [1]}), "not a JSON array"),
    ("broken.json", "[1, 2", "not valid JSON"),
])
def test_reader_failures_are_item_reader_failed(sfn, s3, bucket, key, body, cause):
    if body is not None:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    d = run(sfn, dmap(get_object("JSON")), {"bucket": bucket, "key": key})
    assert d["status"] == "FAILED", d
    assert d["error"] == "States.ItemReaderFailed", d
    assert cause in d["cause"], d


def test_reader_failures_are_caught_and_name_the_bucket(sfn, s3, bucket):
    s3.put_object(Bucket=bucket, Key="dup.csv", Body="a,b,a\n1,2,3\n")
    definition = dmap(get_object("CSV", CSVHeaderLocation="FIRST_ROW"))
    m = definition["States"]["M"]
    del m["End"]
    m["Catch"] = [{"ErrorEquals": ["States.ItemReaderFailed"], "Next": "Caught"}]
    m["Next"] = "Done"
    definition["States"]["Done"] = {"Type": "Succeed"}
    definition["States"]["Caught"] = {"Type": "Pass", "End": True}
    out = output(run(sfn, definition, {"bucket": bucket, "key": "dup.csv"}))
    assert out["Error"] == "States.ItemReaderFailed" and "twice" in out["Cause"], out
    d = run(sfn, dmap(get_object("JSONL")), {"bucket": "no-such-bucket-here", "key": "x"})
    assert d["status"] == "FAILED" and d["error"] == "States.ItemReaderFailed", d


FAIL_ODD = {"StartAt": "C", "States": {
    "C": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericEquals": 3, "Next": "F"}], "Default": "S"},
    "F": {"Type": "Fail", "Error": "Odd", "Cause": "three"},
    "S": {"Type": "Pass", "Result": "ok", "ResultPath": "$.r", "End": True}}}


def test_result_writer_exports_manifest_and_files(sfn, s3, bucket):
    s3.put_object(Bucket=bucket, Key="five.json", Body=json.dumps([{"n": i} for i in range(5)]))
    writer = {"Resource": "arn:aws:states:::s3:putObject", "Parameters": {"Bucket": bucket, "Prefix": "exports/run"}}
    d = run(sfn, dmap(get_object("JSON"), writer, processor=FAIL_ODD, ToleratedFailureCount=1, Label="Export"),
            {"bucket": bucket, "key": "five.json"})
    out = output(d)
    run_arn = out["MapRunArn"]
    run_id = run_arn.rsplit(":", 1)[1]
    assert ":mapRun:" in run_arn and "/Export:" in run_arn, run_arn
    assert out["ResultWriterDetails"] == {"Bucket": bucket, "Key": f"exports/run/{run_id}/manifest.json"}
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=out["ResultWriterDetails"]["Key"])["Body"].read())
    assert manifest["DestinationBucket"] == bucket and manifest["MapRunArn"] == run_arn
    files = manifest["ResultFiles"]
    assert files["PENDING"] == [] and len(files["SUCCEEDED"]) == 1 and len(files["FAILED"]) == 1, files
    ok_file = files["SUCCEEDED"][0]
    body = s3.get_object(Bucket=bucket, Key=ok_file["Key"])["Body"].read()
    assert ok_file["Key"] == f"exports/run/{run_id}/SUCCEEDED_0.json" and ok_file["Size"] == len(body)
    succeeded = json.loads(body)
    assert [json.loads(r["Input"]) for r in succeeded] == [{"n": i} for i in (0, 1, 2, 4)]
    assert [json.loads(r["Output"]) for r in succeeded] == [{"n": i, "r": "ok"} for i in (0, 1, 2, 4)]
    assert all(r["Status"] == "SUCCEEDED" for r in succeeded)
    # The records name the child executions the Map Run lists.
    children = {c["executionArn"] for c in sfn.list_executions(mapRunArn=run_arn)["executions"]}
    assert {r["ExecutionArn"] for r in succeeded} <= children and len(children) == 5
    failed = json.loads(s3.get_object(Bucket=bucket, Key=files["FAILED"][0]["Key"])["Body"].read())
    assert [(r["Status"], r["Error"], r["Cause"], json.loads(r["Input"])) for r in failed] == [
        ("FAILED", "Odd", "three", {"n": 3})]
    described = sfn.describe_map_run(mapRunArn=run_arn)
    assert described["status"] == "SUCCEEDED"
    assert described["itemCounts"]["succeeded"] == 4 and described["itemCounts"]["failed"] == 1
    events = [e["type"] for e in full_history(sfn, d["executionArn"])]
    assert events[-4:] == ["MapRunSucceeded", "MapStateSucceeded", "MapStateExited", "ExecutionSucceeded"]


def test_writer_config_jsonl_compact(sfn, s3, bucket):
    writer = {"Resource": "arn:aws:states:::s3:putObject",
              "Parameters": {"Bucket": bucket, "Prefix": "compact"},
              "WriterConfig": {"Transformation": "COMPACT", "OutputType": "JSONL"}}
    definition = dmap(None, writer, ItemsPath="$.items")
    out = output(run(sfn, definition, {"items": [1, {"a": 2}, [3]]}))
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=out["ResultWriterDetails"]["Key"])["Body"].read())
    key = manifest["ResultFiles"]["SUCCEEDED"][0]["Key"]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode() == '1\n{"a":2}\n[3]\n'


def test_writer_failure_is_result_writer_failed(sfn):
    writer = {"Resource": "arn:aws:states:::s3:putObject",
              "Parameters": {"Bucket": "no-such-bucket-for-results", "Prefix": "x"}}
    d = run(sfn, dmap(None, writer, ItemsPath="$.items"), {"items": [1, 2]})
    assert d["status"] == "FAILED" and d["error"] == "States.ResultWriterFailed", d
    events = [e["type"] for e in full_history(sfn, d["executionArn"])]
    assert "MapRunFailed" in events and events[-1] == "ExecutionFailed", events


@pytest.mark.parametrize("kind", ["JSONL", "CSV", "JSON"])
def test_items_are_read_page_by_page(sfn, s3, bucket, kind):
    # A window of one child of 7 items reads pages of 100 items: the carry between pages
    # and the cursor (a byte offset, the CSV header, an item count) must all hold.
    n = 250
    if kind == "JSONL":
        body, reader = "".join(json.dumps({"i": i}) + "\n" for i in range(n)), get_object("JSONL")
    elif kind == "CSV":
        body = "i,sq\n" + "".join(f'{i},"{i * i}"\n' for i in range(n))
        reader = get_object("CSV", CSVHeaderLocation="FIRST_ROW")
    else:
        body, reader = json.dumps({"rows": [{"i": i} for i in range(n)]}), get_object("JSON", ItemsPointer="/rows")
    s3.put_object(Bucket=bucket, Key=f"paged.{kind}", Body=body)
    d = run(sfn, dmap(reader, MaxConcurrency=1, ItemBatcher={"MaxItemsPerBatch": 7},
                      ItemSelector={"i.$": "$$.Map.Item.Value.i", "at.$": "$$.Map.Item.Index"}),
            {"bucket": bucket, "key": f"paged.{kind}"})
    batches = output(d)
    assert [len(b["Items"]) for b in batches] == [7] * 35 + [5]
    flat = [x for b in batches for x in b["Items"]]
    value = (lambda i: str(i)) if kind == "CSV" else (lambda i: i)
    assert flat == [{"i": value(i), "at": i} for i in range(n)]


def test_a_listing_is_read_page_by_page(sfn, s3, bucket):
    for i in range(130):
        s3.put_object(Bucket=bucket, Key=f"many/{i:04d}", Body=b"x")
    reader = {"Resource": "arn:aws:states:::s3:listObjectsV2", "ReaderConfig": {"MaxItems": 120},
              "Parameters": {"Bucket.$": "$.bucket", "Prefix": "many/"}}
    d = run(sfn, dmap(reader, MaxConcurrency=1, ItemSelector={"k.$": "$$.Map.Item.Value.Key"}), {"bucket": bucket})
    assert output(d) == [{"k": f"many/{i:04d}"} for i in range(120)]


def test_a_long_run_writes_its_results_in_chunks(sfn, s3, bucket):
    # 2,500 children: their records are written 1,000 at a time while the run goes on, and
    # the manifest lists every file; each item's result is in exactly one of them.
    n = 2500
    s3.put_object(Bucket=bucket, Key="long.jsonl", Body="".join(f"{i}\n" for i in range(n)))
    writer = {"Resource": "arn:aws:states:::s3:putObject", "Parameters": {"Bucket": bucket, "Prefix": "long"},
              "WriterConfig": {"Transformation": "COMPACT", "OutputType": "JSONL"}}
    d = run(sfn, dmap(get_object("JSONL"), writer, MaxConcurrency=200,
                      processor={"StartAt": "P", "States": {"P": {"Type": "Pass", "Parameters": {"n.$": "$"},
                                                                  "End": True}}}),
            {"bucket": bucket, "key": "long.jsonl"})
    out = output(d)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=out["ResultWriterDetails"]["Key"])["Body"].read())
    files = manifest["ResultFiles"]["SUCCEEDED"]
    assert len(files) >= 3 and manifest["ResultFiles"]["FAILED"] == [], manifest
    seen = []
    for f in files:
        body = s3.get_object(Bucket=bucket, Key=f["Key"])["Body"].read()
        assert len(body) == f["Size"]
        seen += [json.loads(line)["n"] for line in body.decode().splitlines()]
    assert sorted(seen) == list(range(n))


def test_redriving_a_map_run_that_reads_and_exports_reruns_only_what_did_not_succeed(sfn, s3, bucket):
    # One child at a time: "a" succeeds, "b" fails (its first call), "c" and "d" never start.
    s3.put_object(Bucket=bucket, Key="redrive.jsonl", Body="".join(json.dumps(i) + "\n" for i in "abcd"))
    processor = {"StartAt": "Which", "States": {
        "Which": {"Type": "Choice", "Choices": [
            {"Variable": "$", "StringEquals": "b", "Next": "Call"}], "Default": "Keep"},
        "Keep": {"Type": "Pass", "End": True},
        "Call": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                 "Parameters": {"FunctionName": "flaky", "Payload": {"key": "redrive-reader-b"}},
                 "OutputPath": "$.Payload", "End": True}}}
    writer = {"Resource": "arn:aws:states:::s3:putObject", "Parameters": {"Bucket": bucket, "Prefix": "redriven"}}
    arn = create(sfn, f"Rw{uuid.uuid4().hex[:10]}",
                 dmap(get_object("JSONL"), writer, processor=processor, MaxConcurrency=1))
    e = sfn.start_execution(stateMachineArn=arn, input=json.dumps({"bucket": bucket, "key": "redrive.jsonl"}))[
        "executionArn"]
    d = wait_status(sfn, e, timeout=90)
    assert d["status"] == "FAILED" and d["error"] == "States.ExceedToleratedFailureThreshold", d
    run_arn = next(ev for ev in full_history(sfn, e) if ev["type"] == "MapRunStarted")[
        "mapRunStartedEventDetails"]["mapRunArn"]
    sfn.redrive_execution(executionArn=e)
    out = output(wait_status(sfn, e, timeout=90))
    # The same Map Run, redriven: its children are the four items' (a's not run again).
    assert out["MapRunArn"] == run_arn
    m = sfn.describe_map_run(mapRunArn=run_arn)
    assert m["status"] == "SUCCEEDED" and m["redriveCount"] == 1, m
    assert (m["executionCounts"]["succeeded"], m["executionCounts"]["total"]) == (4, 4), m
    children = sfn.list_executions(mapRunArn=run_arn)["executions"]
    assert len(children) == 4 and all(c["status"] == "SUCCEEDED" for c in children), children
    # The manifest lists the files of both attempts: each item's success is in exactly one
    # SUCCEEDED file; b's first failure stays in the first attempt's FAILED file.
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=out["ResultWriterDetails"]["Key"])["Body"].read())
    outputs = []
    for f in manifest["ResultFiles"]["SUCCEEDED"]:
        for r in json.loads(s3.get_object(Bucket=bucket, Key=f["Key"])["Body"].read()):
            outputs.append(json.loads(r["Output"]))
    assert sorted(outputs, key=json.dumps) == sorted(["a", {"ok": "redrive-reader-b"}, "c", "d"], key=json.dumps)
    failed = [json.loads(r["Input"]) for f in manifest["ResultFiles"]["FAILED"]
              for r in json.loads(s3.get_object(Bucket=bucket, Key=f["Key"])["Body"].read())]
    assert failed == ["b"], failed
