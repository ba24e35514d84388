#!/usr/bin/python3
"""Print 'N passed, N failed[, N skipped]' for one or more meson test runs
(build directories; .ci/run passes the plain and the sanitizer build): TAP
lines of the unit tests and the JUnit reports of the pytest files, with any
meson test that failed without a report counted as one failure."""
import glob
import json
import os
import sys
import xml.etree.ElementTree as ET

passed = failed = skipped = 0


def count(builddir):
    global passed, failed, skipped
    log = os.path.join(builddir, "meson-logs", "testlog.json")
    reports = {os.path.basename(p)[:-4]: p for p in glob.glob(os.path.join(builddir, "test", "integration", "*.xml"))}
    if not os.path.exists(log):
        failed += 1
        return
    with open(log) as f:
        for line in f:
            t = json.loads(line)
            name, result = t["name"].split(" / ")[-1], t["result"]
            if name in reports:
                root = ET.parse(reports[name]).getroot()
                this_failed = 0
                for suite in (root.iter("testsuite")):
                    n = int(suite.get("tests", 0))
                    f_ = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
                    s = int(suite.get("skipped", 0))
                    passed += n - f_ - s
                    failed += f_
                    this_failed += f_
                    skipped += s
                if result not in ("OK", "SKIP") and this_failed == 0:
                    failed += 1  # e.g. pgtenant crashed at teardown after the report was written
                continue
            oks = [l for l in t.get("stdout", "").splitlines() if l.startswith(("ok ", "not ok "))]
            if oks:
                passed += sum(1 for l in oks if l.startswith("ok "))
                failed += sum(1 for l in oks if l.startswith("not ok "))
                if result not in ("OK", "SKIP") and not any(l.startswith("not ok ") for l in oks):
                    failed += 1
            elif result == "SKIP":
                skipped += 1
            elif result == "OK":
                passed += 1
            else:
                failed += 1


for d in (sys.argv[1:] or ["build"]):
    count(d)
line = "%d passed, %d failed" % (passed, failed)
if skipped:
    line += ", %d skipped" % skipped
print(line)
