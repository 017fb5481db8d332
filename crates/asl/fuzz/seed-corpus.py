#!/usr/bin/env python3
"""Writes one fuzz seed per golden-corpus definition into corpus/parse_validate_run/."""
import glob, hashlib, json, os

here = os.path.dirname(os.path.abspath(__file__))
out = os.path.join(here, "corpus", "parse_validate_run")
os.makedirs(out, exist_ok=True)
n = 0
for f in sorted(glob.glob(os.path.join(here, "..", "tests", "golden", "*.json"))):
    for case in json.load(open(f)):
        seed = json.dumps(case["definition"]) + "\0" + json.dumps(case.get("input", {}))
        name = hashlib.sha1(seed.encode()).hexdigest()
        open(os.path.join(out, name), "w").write(seed)
        n += 1
print(f"{n} seeds in {out}")
