#!/bin/sh
# A short libFuzzer run for `meson test --suite fuzz-run`: BINARY CORPUS SECONDS.
# New inputs go to a scratch copy of the corpus, never into the repository.
set -eu
bin=$1 corpus=$2 secs=$3
name=$(basename "$bin")
scratch=$(mktemp -d "${TMPDIR:-/tmp}/pgt-$name-XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/corpus" "$scratch/crashes"
cp "$corpus"/* "$scratch/corpus/" 2>/dev/null || true
dict=$(dirname "$corpus")/../$name.dict
set -- -max_total_time="$secs" -artifact_prefix="$scratch/crashes/" -print_final_stats=1
[ -f "$dict" ] && set -- "$@" -dict="$dict"
if ! "$bin" "$@" "$scratch/corpus"; then
	echo "$name: crash; inputs:" >&2
	ls "$scratch/crashes" >&2
	for f in "$scratch"/crashes/*; do od -c "$f" | head -20 >&2; done
	exit 1
fi
