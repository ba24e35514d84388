#!/bin/sh
# Run one libFuzzer target for a while: contrib/fuzz.sh TARGET SECONDS [FLAGS...]
#   TARGET: startup client_msgs server_msgs scram config userlist jwt secretfile audit txn
#           (with or without the fuzz_ prefix)
# Configures build-fuzz with clang and -Dfuzzing=true if needed, builds it,
# and fuzzes from the seed corpus test/fuzz/corpus/fuzz_TARGET with its
# dictionary.  New inputs go to a scratch directory ($FUZZ_WORK, default
# /tmp/pgt-fuzz/fuzz_TARGET/corpus), never into the repository; crashes to
# $FUZZ_WORK/crashes.  One fuzzer at a time (no -jobs): the machine is shared.
# Extra FLAGS go to libFuzzer as they are; -close_fd_mask=2 silences a target
# that logs every rejected input (userlist, jwt), whose log otherwise grows by
# a megabyte a second.
set -eu
if [ $# -lt 2 ]; then
	echo "usage: $0 TARGET SECONDS [LIBFUZZER-FLAGS...]" >&2
	exit 2
fi
t=${1#fuzz_}
name=fuzz_$t
secs=$2
shift 2
extra="$*"
root=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
work=${FUZZ_WORK:-${TMPDIR:-/tmp}/pgt-fuzz/$name}
corpus=$root/test/fuzz/corpus/$name
dict=$root/test/fuzz/$name.dict
[ -d "$corpus" ] || { echo "no corpus $corpus: unknown target $t" >&2; exit 2; }

if [ ! -f "$build/build.ninja" ]; then
	CC=${CC:-clang} meson setup "$build" "$root" -Dfuzzing=true
fi
ninja -C "$build" "test/fuzz/$name"

mkdir -p "$work/corpus" "$work/crashes"
set -- -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$work/crashes/" -timeout=10 -rss_limit_mb=2048
[ -f "$dict" ] && set -- "$@" -dict="$dict"
# shellcheck disable=SC2086 # flags are words by design
[ -n "$extra" ] && set -- "$@" $extra
rc=0
"$build/test/fuzz/$name" "$@" "$work/corpus" "$corpus" || rc=$?
if ls "$work"/crashes/* >/dev/null 2>&1; then
	cat <<MSG

Crashes in $work/crashes.  For each:
  minimise:  $build/test/fuzz/$name -minimize_crash=1 -runs=100000 -exact_artifact_path=min CRASHFILE
  replay:    $build/test/fuzz/${name}_replay min   (or the gcc build's)
  then fix the bug, and keep the input as a regression test:
             cp min test/fuzz/corpus/$name/crash-<what-it-was>
  (every meson test replays the corpus), with a unit test in test/unit/.
MSG
fi
exit $rc
