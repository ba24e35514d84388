#!/usr/bin/env bash
# Install what is missing, build, and run the whole test suite (unit tests and
# integration tests against a PostgreSQL the suite starts itself).
#   contrib/test.sh             debug-optimized build in build/
#   contrib/test.sh --sanitize  AddressSanitizer + UBSan build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
"$PWD/contrib/deps.sh"
builddir=build
opts=()
if [ "${1:-}" = "--sanitize" ]; then
	builddir=build-asan
	opts=(-Db_sanitize=address,undefined -Db_lundef=false)
	export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
if [ -d "$builddir" ]; then
	meson setup --reconfigure "$builddir" "${opts[@]}" >/dev/null
else
	meson setup "$builddir" "${opts[@]}" >/dev/null
fi
ninja -C "$builddir"
rm -f "$builddir"/test/integration/*.xml
meson test -C "$builddir" --print-errorlogs "${@:2}"
