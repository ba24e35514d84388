#!/usr/bin/env bash
# Install what building, testing and benchmarking pgtenant needs, from
# Debian's (or Ubuntu's) packages.  Idempotent: installs only what is missing.
# The driver tests (test/integration/test_drivers.py) also need pgjdbc, a Java
# runtime, Node.js and npm; the npm packages themselves (pg, postgres) are
# installed by that test into a cache outside the work tree.
set -euo pipefail
pkgs=(gcc meson ninja-build pkg-config libevent-dev libssl-dev libinih-dev libidn-dev libjansson-dev libpq-dev
      postgresql postgresql-client pgbouncer python3 python3-psycopg python3-asyncpg python3-pytest
      procps util-linux libpostgresql-jdbc-java openssl dnsmasq-base python3-botocore python3-yaml gcovr)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Java, Node.js and npm may come from elsewhere (another JDK, NodeSource's
# nodejs, which bundles npm and conflicts with Debian's npm): only a missing
# command asks for Debian's package.
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing: ${missing[*]}"
$SUDO apt-get update -q
# the postgresql package's own cluster is not used; do not let it start one
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
