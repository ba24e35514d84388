#!/usr/bin/env bash
# Install what building, testing and benchmarking pgtenant needs, from
# Debian's (or Ubuntu's) packages.  Idempotent: installs only what is missing.
set -euo pipefail
pkgs=(gcc meson ninja-build pkg-config libevent-dev libssl-dev libinih-dev libpq-dev
      postgresql postgresql-client pgbouncer python3 python3-psycopg python3-asyncpg python3-pytest
      procps util-linux)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -q
# the postgresql package's own cluster is not used; do not let it start one
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
