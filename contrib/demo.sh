#!/usr/bin/env bash
# Install what is missing, build, start a throwaway PostgreSQL with two demo
# tenants and pgtenant in front of it, and show queries going through.
#   contrib/demo.sh            keeps pgtenant running until Ctrl-C
#   contrib/demo.sh --no-wait  shows the demo and cleans up
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
"$ROOT/contrib/deps.sh"
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
WORK=$(mktemp -d /tmp/pgtenant-demo-XXXXXX)
chmod 755 "$WORK"
RUN=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$WORK"; RUN=(runuser -u postgres --); fi
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(free_port)
PORT=6432
/usr/bin/python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && PORT=$(free_port)

cleanup() {
	[ -n "${PGT_PID:-}" ] && kill "$PGT_PID" 2>/dev/null || true
	"${RUN[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1 || true
	rm -rf "$WORK"
}
trap cleanup EXIT

echo "== starting a throwaway PostgreSQL on 127.0.0.1:$PGPORT ($WORK)"
"${RUN[@]}" "$PG_BIN/initdb" -D "$WORK/data" -U postgres --auth=trust >/dev/null
cat >> "$WORK/data/postgresql.conf" <<CONF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
CONF
"${RUN[@]}" "$PG_BIN/pg_ctl" -D "$WORK/data" -l "$WORK/postgres.log" -w start >/dev/null
PSQL=(psql -X -q -h "$WORK" -p "$PGPORT" -U postgres)
"${PSQL[@]}" -c "CREATE USER app PASSWORD 'apppass'" -c "CREATE DATABASE appdb OWNER app"
"${PSQL[@]}" -U app appdb <<'SQL'
CREATE SCHEMA tenant_acme;   CREATE TABLE tenant_acme.orders(id int, item text);
CREATE SCHEMA tenant_globex; CREATE TABLE tenant_globex.orders(id int, item text);
INSERT INTO tenant_acme.orders VALUES (1, 'acme: anvil'), (2, 'acme: rocket skates');
INSERT INTO tenant_globex.orders VALUES (1, 'globex: doomsday device');
SQL

cat > "$WORK/pgtenant.ini" <<INI
[databases]
appdb = host=127.0.0.1 port=$PGPORT dbname=appdb user=app password=apppass
[pgtenant]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = userlist.txt
admin_users = admin
pool_mode = transaction
default_pool_size = 5
logfile = $WORK/pgtenant.log
tenant_required = yes
tenant_setting = app.tenant_id
[tenants]
acme = pool_size=2
globex = pool_size=2
INI
printf '"app" "apppass"\n"admin" "adminpass"\n' > "$WORK/userlist.txt"
"$ROOT/build/pgtenant" "$WORK/pgtenant.ini" &
PGT_PID=$!
sleep 0.5

export PGPASSWORD=apppass
Q=(psql -X -h 127.0.0.1 -p "$PORT" -U app appdb)
echo
echo "== a query through pgtenant (127.0.0.1:$PORT, transaction pooling, SCRAM)"
psql -X -h 127.0.0.1 -p "$PORT" -U app.acme appdb -c "SELECT current_user, current_database(), inet_server_port() AS postgres_port"
echo "== the same SQL, two tenants: psql -U app.acme and psql -U app.globex"
psql -X -h 127.0.0.1 -p "$PORT" -U app.acme appdb -c "SELECT current_user, current_setting('app.tenant_id') AS tenant, * FROM orders ORDER BY id"
psql -X -h 127.0.0.1 -p "$PORT" -U app.globex appdb -c "SELECT current_user, current_setting('app.tenant_id') AS tenant, * FROM orders ORDER BY id"
echo "== the tenant can also come from options: PGOPTIONS='-c tenant=acme'"
PGOPTIONS='-c tenant=acme' "${Q[@]}" -c "SELECT count(*) AS acme_orders FROM orders"
echo "== no tenant, or an unknown one, is refused"
"${Q[@]}" -c "SELECT 1" || true
psql -X -h 127.0.0.1 -p "$PORT" -U app.nosuch appdb -c "SELECT 1" || true
echo "== the admin console: SHOW TENANTS"
PGPASSWORD=adminpass psql -X -h 127.0.0.1 -p "$PORT" -U admin pgtenant -c "SHOW TENANTS"

if [ "${1:-}" = "--no-wait" ]; then exit 0; fi
echo "pgtenant is listening on 127.0.0.1:$PORT (user app, password apppass; admin: admin/adminpass)."
echo "Press Ctrl-C to stop and remove everything."
wait "$PGT_PID"
