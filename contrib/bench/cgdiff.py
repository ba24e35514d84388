#!/usr/bin/python3
"""
Function-level difference of user-space instructions per transaction
between two builds, from the callgrind output files that
`bench.py --callgrind --callgrind-keep DIR` keeps (NAME-LOAD-PROTOCOL-200.out
and NAME-LOAD-PROTOCOL-1200.out: 8 clients x 200 and x 1200 transactions).

  contrib/bench/cgdiff.py DIR before pgtenant select simple
  contrib/bench/cgdiff.py DIR pgtenant pgtenant select extended --b-protocol prepared

For each side, a function's cost per transaction is (cost in the long run -
cost in the short run) / 8000, which cancels startup, logins and shutdown
as bench.py's totals do.  Prints the totals, then the functions whose self
cost and whose inclusive cost (callgrind_annotate --inclusive=yes) changed
most.  Functions are matched by source file name and function name (or
object and address for code without symbols), so two builds from different
source trees compare.  Inclusive costs of the functions on the recursive
forwarding path (conn_event_cb, sbuf_pump, the packet handlers, which pump
the other side's connection) count nested calls more than once, as
callgrind_annotate does: read the self costs first.
"""
import argparse
import os
import re
import subprocess

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*?)(?:\s+\[(.*)\])?$")


def costs(path, inclusive):
    out = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100",
                          "--inclusive=" + ("yes" if inclusive else "no"), path],
                         capture_output=True, text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if not m or m.group(2) == "PROGRAM TOTALS":
            continue
        fn, obj = m.group(2), os.path.basename(m.group(3) or "")
        if obj.startswith("pgtenant"):
            obj = "pgtenant"  # the binary under any name
        f, _, func = fn.rpartition(":")
        key = "%s:%s" % (os.path.basename(f), func) if f != "???" else "%s:%s" % (obj, func)
        res[key] = res.get(key, 0) + int(m.group(1).replace(",", ""))
    return res


def total(path):
    with open(path) as f:
        m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    return int(m.group(1))


def per_xact(d, name, load, protocol, inclusive, xacts):
    short, long_ = ["%s/%s-%s-%s-%d.out" % (d, name, load, protocol, n) for n in (200, 1200)]
    a, b = costs(short, inclusive), costs(long_, inclusive)
    return dict((k, (b.get(k, 0) - a.get(k, 0)) / float(xacts)) for k in set(a) | set(b)), \
        (total(long_) - total(short)) / float(xacts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("a", help="the 'before' name (bench.py's: before, pgtenant, pgbouncer, pgb-VERSION)")
    ap.add_argument("b", help="the 'after' name")
    ap.add_argument("load", choices=("select", "tpcb"))
    ap.add_argument("protocol", choices=("simple", "extended", "prepared"))
    ap.add_argument("--b-protocol", help="compare with another protocol of b (default: the same)")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--xacts", type=int, default=8 * 1000, help="transactions between the two runs")
    args = ap.parse_args()
    bproto = args.b_protocol or args.protocol
    print("instructions per transaction, %s %s -> %s %s (%s)" % (args.a, args.protocol, args.b, bproto, args.load))
    for inclusive in (False, True):
        a, ta = per_xact(args.dir, args.a, args.load, args.protocol, inclusive, args.xacts)
        b, tb = per_xact(args.dir, args.b, args.load, bproto, inclusive, args.xacts)
        if not inclusive:
            print("total: %.0f -> %.0f (%+.0f, %+.1f%%)" % (ta, tb, tb - ta, (tb - ta) * 100.0 / ta))
        diff = sorted(((b.get(k, 0) - a.get(k, 0), k) for k in set(a) | set(b)), key=lambda x: -abs(x[0]))
        print("\n%s cost, top %d changes:" % ("inclusive" if inclusive else "self", args.top))
        print("%10s %10s %10s  %s" % (args.a, args.b, "diff", "function"))
        for dv, k in diff[:args.top]:
            if abs(dv) < 0.5:
                break
            print("%10.1f %10.1f %+10.1f  %s" % (a.get(k, 0), b.get(k, 0), dv, k))


if __name__ == "__main__":
    main()
