#!/usr/bin/env bash
# Install what is missing, build, and run the whole test suite (unit tests and
# integration tests against a PostgreSQL the suite starts itself).
#   contrib/test.sh                        debug-optimized build in build/
#   contrib/test.sh --sanitize             AddressSanitizer + UBSan build in build-asan/
#   contrib/test.sh --coverage             gcov build in build-cov/, then a line and
#                                          branch coverage report of src/ (gcovr)
#   contrib/test.sh --sanitize --coverage  both in one build (build-asan-cov/): what
#                                          .ci/run's second pass does
# Anything after the options goes to `meson test` (test names, --suite ...).
set -euo pipefail
cd "$(dirname "$0")/.."
"$PWD/contrib/deps.sh"
sanitize=0
coverage=0
while [ $# -gt 0 ]; do
	case "$1" in
	--sanitize) sanitize=1 ;;
	--coverage) coverage=1 ;;
	*) break ;;
	esac
	shift
done
builddir=build
opts=()
if [ $sanitize = 1 ]; then
	builddir=build-asan
	opts+=(-Db_sanitize=address,undefined -Db_lundef=false)
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
if [ $coverage = 1 ]; then
	builddir=${builddir/build-asan/build-asan-cov}
	[ "$builddir" = build ] && builddir=build-cov
	opts+=(-Db_coverage=true)
fi
if [ -d "$builddir" ]; then
	meson setup --reconfigure "$builddir" "${opts[@]}" >/dev/null
else
	meson setup "$builddir" "${opts[@]}" >/dev/null
fi
ninja -C "$builddir"
rm -f "$builddir"/test/integration/*.xml
if [ $coverage = 1 ]; then
	find "$builddir" -name '*.gcda' -delete
fi
rc=0
meson test -C "$builddir" --print-errorlogs "$@" || rc=$?
if [ $coverage = 1 ]; then
	# lines and branches of src/ only (not the tests, not the fuzz drivers);
	# branches the compiler adds for exceptions and the like are left out
	mkdir -p "$builddir/coverage"
	gcovr --root . --object-directory "$builddir" --filter 'src/' \
		--exclude-throw-branches --exclude-unreachable-branches \
		--txt "$builddir/coverage/coverage.txt" --html-details "$builddir/coverage/index.html" \
		--json-summary "$builddir/coverage/summary.json" --print-summary 2>/dev/null |
		sed 's/^/coverage: /'
	echo "coverage report: $builddir/coverage/index.html"
fi
exit $rc
