/*
 * Prometheus endpoint (see metrics.h).  The body is built in an evbuffer and
 * handed to evhttp, which writes it without blocking the loop.
 */
#include "metrics.h"

#include <dirent.h>
#include <stddef.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "authquery.h"
#include "audit.h"
#include "awscreds.h"
#include "config.h"
#include "hosts.h"
#include "jwks.h"
#include "jwt.h"
#include "log.h"
#include "loop.h"
#include "pool.h"
#include "server.h"
#include "tenant_registry.h"
#include "tls.h"

uint64_t metrics_refusals[REFUSAL_COUNT];

static struct evhttp *http;
static usec_t start_time;

static const char *const refusal_names[REFUSAL_COUNT] = {
    "no_tenant",    "invalid_tenant", "unknown_tenant", "tenant_disabled",
    "tenant_quota", "auth_failed",    "jwt_invalid",    "wait_timeout",
    "tls",          "user_quota",
};

/* Label values may hold any byte: escape backslash, quote and newline. */
static void label(struct evbuffer *b, const char *v)
{
	for (const char *p = v; *p; p++) {
		if (*p == '\\' || *p == '"')
			evbuffer_add_printf(b, "\\%c", *p);
		else if (*p == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, p, 1);
	}
}

static void labels(struct evbuffer *b, const struct pgt_pool *p, const char *extra_k, const char *extra_v)
{
	evbuffer_add_printf(b, "{database=\"");
	label(b, p->dbname);
	evbuffer_add_printf(b, "\",user=\"");
	label(b, p->user);
	evbuffer_add_printf(b, "\",tenant=\"");
	label(b, p->tenant);
	evbuffer_add_printf(b, "\"");
	if (extra_k)
		evbuffer_add_printf(b, ",%s=\"%s\"", extra_k, extra_v);
	evbuffer_add_printf(b, "}");
}

static void tenant_rate_metrics(struct evbuffer *b);
static void host_metrics(struct evbuffer *b);
static void host_metrics(struct evbuffer *b);

static void header(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One series per pool of a counter in struct pgt_pool_stats (usec fields scaled to seconds). */
static void per_pool(struct evbuffer *b, const char *name, const char *help, size_t field, double scale)
{
	header(b, name, "counter", help);
	struct list *i;
	list_for_each (i, &pgt_pools) {
		const struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		if (p->internal)
			continue;
		uint64_t v = *(const uint64_t *)((const char *)&p->stats + field);
		evbuffer_add_printf(b, "%s", name);
		labels(b, p, NULL, NULL);
		if (scale == 1.0)
			evbuffer_add_printf(b, " %llu\n", (unsigned long long)v);
		else
			evbuffer_add_printf(b, " %.6f\n", (double)v * scale);
	}
}

/* One series per pool and state, from a function filling values[] in the order of states[]. */
static void by_state(struct evbuffer *b, const char *name, const char *help, const char *const *states, int n,
                     void (*values)(const struct pgt_pool *, int *))
{
	header(b, name, "gauge", help);
	struct list *i;
	list_for_each (i, &pgt_pools) {
		const struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		if (p->internal)
			continue;
		int v[8];
		values(p, v);
		for (int k = 0; k < n; k++) {
			evbuffer_add_printf(b, "%s", name);
			labels(b, p, "state", states[k]);
			evbuffer_add_printf(b, " %d\n", v[k]);
		}
	}
}

/* One series per pool of a value a function gives. */
static void per_pool_value(struct evbuffer *b, const char *name, const char *type, const char *help,
                           uint64_t (*value)(const struct pgt_pool *))
{
	header(b, name, type, help);
	struct list *i;
	list_for_each (i, &pgt_pools) {
		const struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		if (p->internal)
			continue;
		evbuffer_add_printf(b, "%s", name);
		labels(b, p, NULL, NULL);
		evbuffer_add_printf(b, " %llu\n", (unsigned long long)value(p));
	}
}

static uint64_t pinned_now(const struct pgt_pool *p)
{
	return (uint64_t)p->npinned;
}

static uint64_t pins_total(const struct pgt_pool *p)
{
	return p->stats_pins;
}

static const char *const client_states[] = {"active", "waiting", "login"};
static void client_values(const struct pgt_pool *p, int *v)
{
	v[0] = p->nactive;
	v[1] = p->nwaiting;
	v[2] = p->nwelcome;
}

static const char *const server_states[] = {"active", "idle", "used", "login"};
static void server_values(const struct pgt_pool *p, int *v)
{
	/* server lists are at most pool_size long: this stays O(pools) */
	v[0] = list_count(&p->active_servers);
	v[1] = list_count(&p->idle_servers);
	v[2] = list_count(&p->used_servers);
	v[3] = list_count(&p->login_servers);
}

static long rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, rss = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return rss * sysconf(_SC_PAGESIZE);
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		return 0;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3; /* ".", ".." and the directory's own descriptor */
}

static void render(struct evbuffer *b)
{
	by_state(b, "pgtenant_client_connections", "Client connections by state.", client_states, 3,
	         client_values);
	by_state(b, "pgtenant_server_connections", "Server connections by state.", server_states, 4,
	         server_values);
	per_pool(b, "pgtenant_transactions_total", "Transactions completed.",
	         offsetof(struct pgt_pool_stats, xact_count), 1.0);
	per_pool(b, "pgtenant_queries_total", "Queries (requests answered with ReadyForQuery).",
	         offsetof(struct pgt_pool_stats, query_count), 1.0);
	per_pool(b, "pgtenant_query_seconds_total", "Time spent executing queries.",
	         offsetof(struct pgt_pool_stats, query_time), 1e-6);
	per_pool(b, "pgtenant_server_assignments_total",
	         "Times a server connection was assigned to a client.",
	         offsetof(struct pgt_pool_stats, server_assignment_count), 1.0);
	per_pool(b, "pgtenant_parses_total", "Parse messages from clients.",
	         offsetof(struct pgt_pool_stats, client_parse_count), 1.0);
	per_pool(b, "pgtenant_server_parses_total",
	         "Parse messages sent to servers (fewer than clients' once prepared statements are shared).",
	         offsetof(struct pgt_pool_stats, server_parse_count), 1.0);
	per_pool(b, "pgtenant_binds_total", "Bind messages from clients.",
	         offsetof(struct pgt_pool_stats, bind_count), 1.0);
	per_pool(b, "pgtenant_received_bytes_total", "Bytes from clients to servers.",
	         offsetof(struct pgt_pool_stats, bytes_in), 1.0);
	per_pool(b, "pgtenant_sent_bytes_total", "Bytes from servers to clients.",
	         offsetof(struct pgt_pool_stats, bytes_out), 1.0);
	per_pool(b, "pgtenant_transaction_seconds_total", "Time spent in transactions.",
	         offsetof(struct pgt_pool_stats, xact_time), 1e-6);
	struct list *i;
	per_pool_value(
	    b, "pgtenant_clients_pinned", "gauge",
	    "Clients keeping their server connection between transactions (temporary tables, locks, ...).",
	    pinned_now);
	per_pool_value(b, "pgtenant_client_pins_total", "counter",
	               "Times a client was pinned to its server connection.", pins_total);
	header(b, "pgtenant_wait_seconds", "summary", "Time clients waited for a server connection.");
	list_for_each (i, &pgt_pools) {
		const struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		if (p->internal)
			continue;
		evbuffer_add_printf(b, "pgtenant_wait_seconds_sum");
		labels(b, p, NULL, NULL);
		evbuffer_add_printf(b, " %.6f\n", (double)p->stats.wait_time * 1e-6);
		evbuffer_add_printf(b, "pgtenant_wait_seconds_count");
		labels(b, p, NULL, NULL);
		evbuffer_add_printf(b, " %llu\n", (unsigned long long)p->stats.wait_count);
	}
	header(b, "pgtenant_refusals_total", "counter", "Connections refused, by reason.");
	for (int r = 0; r < REFUSAL_COUNT; r++)
		evbuffer_add_printf(b, "pgtenant_refusals_total{reason=\"%s\"} %llu\n", refusal_names[r],
		                    (unsigned long long)metrics_refusals[r]);
	header(b, "pgtenant_jwt_refusals_total", "counter",
	       "Tokens refused (in pgtenant_refusals_total{reason=\"jwt_invalid\"}), by reason.");
	for (int r = 1; r < JWT_REASON_COUNT; r++)
		evbuffer_add_printf(b, "pgtenant_jwt_refusals_total{jwt_reason=\"%s\"} %llu\n",
		                    jwt_reason_label((enum jwt_reason)r),
		                    (unsigned long long)jwt_refusals[r]);
	header(b, "pgtenant_jwks_fetches_total", "counter", "jwt_jwks_url fetched and loaded.");
	evbuffer_add_printf(b, "pgtenant_jwks_fetches_total %llu\n", (unsigned long long)jwks_fetches);
	header(b, "pgtenant_jwks_fetch_failures_total", "counter",
	       "jwt_jwks_url fetches that failed (the keys in use stay).");
	evbuffer_add_printf(b, "pgtenant_jwks_fetch_failures_total %llu\n",
	                    (unsigned long long)jwks_fetch_failures);
	header(b, "pgtenant_aws_credential_refreshes_total", "counter",
	       "AWS credentials (server_auth iam) fetched from the container endpoint or instance metadata.");
	evbuffer_add_printf(b, "pgtenant_aws_credential_refreshes_total %llu\n",
	                    (unsigned long long)awscreds_refreshes);
	header(b, "pgtenant_aws_credential_failures_total", "counter",
	       "AWS credential fetches that failed (credentials still valid stay in use).");
	evbuffer_add_printf(b, "pgtenant_aws_credential_failures_total %llu\n",
	                    (unsigned long long)awscreds_failures);
	header(b, "pgtenant_auth_query_lookups_total", "counter",
	       "auth_query lookups sent (answers cached for auth_query_cache_ttl).");
	evbuffer_add_printf(b, "pgtenant_auth_query_lookups_total %llu\n", (unsigned long long)authq_lookups);
	header(b, "pgtenant_auth_query_failures_total", "counter", "auth_query lookups that failed.");
	evbuffer_add_printf(b, "pgtenant_auth_query_failures_total %llu\n",
	                    (unsigned long long)authq_failures);
	header(b, "pgtenant_tls_handshakes_total", "counter",
	       "TLS handshakes completed, with clients and with servers.");
	for (int side = 0; side < 2; side++)
		evbuffer_add_printf(b, "pgtenant_tls_handshakes_total{side=\"%s\"} %llu\n",
		                    side == TLS_SIDE_CLIENT ? "client" : "server",
		                    (unsigned long long)tls_handshakes[side]);
	header(b, "pgtenant_tls_handshake_failures_total", "counter",
	       "TLS handshakes that failed or were abandoned.");
	for (int side = 0; side < 2; side++)
		evbuffer_add_printf(b, "pgtenant_tls_handshake_failures_total{side=\"%s\"} %llu\n",
		                    side == TLS_SIDE_CLIENT ? "client" : "server",
		                    (unsigned long long)tls_handshake_failures[side]);
	header(b, "pgtenant_database_server_connections", "gauge",
	       "Server connections per database entry, all pools.");
	list_for_each (i, &pgt_dbstates) {
		const struct pgt_dbstate *d = container_of(i, struct pgt_dbstate, node);
		evbuffer_add_printf(b, "pgtenant_database_server_connections{database=\"");
		label(b, d->name);
		evbuffer_add_printf(b, "\"} %d\n", d->nservers);
	}
	host_metrics(b);
	header(b, "pgtenant_audit_lines_total", "counter", "Lines written to the audit log.");
	evbuffer_add_printf(b, "pgtenant_audit_lines_total %llu\n", (unsigned long long)audit_lines);
	header(b, "pgtenant_audit_dropped_total", "counter",
	       "Audit log lines dropped: 1 MiB was waiting for a file that could not be written.");
	evbuffer_add_printf(b, "pgtenant_audit_dropped_total %llu\n", (unsigned long long)audit_dropped);
	header(b, "pgtenant_audit_errors_total", "counter",
	       "Failed attempts to open or write the audit log (each is retried a second later).");
	evbuffer_add_printf(b, "pgtenant_audit_errors_total %llu\n", (unsigned long long)audit_errors);
	tenant_rate_metrics(b);
	header(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
	evbuffer_add_printf(b, "process_resident_memory_bytes %ld\n", rss_bytes());
	header(b, "process_open_fds", "gauge", "Number of open file descriptors.");
	evbuffer_add_printf(b, "process_open_fds %d\n", open_fds());
	header(b, "process_start_time_seconds", "gauge", "Start time of the process since the epoch.");
	evbuffer_add_printf(b, "process_start_time_seconds %lld\n", (long long)(start_time / USEC_PER_SEC));
	header(b, "pgtenant_client_connections_all", "gauge",
	       "All client connections, admin console included.");
	evbuffer_add_printf(b, "pgtenant_client_connections_all %d\n", pgt.nclients);
}

/* Failovers per database entry, and server connections per address it
 * uses (a walk over the server connections per entry: a scrape is rare). */
static void host_metrics(struct evbuffer *b)
{
	struct list *i, *j;
	header(b, "pgtenant_failovers_total", "counter",
	       "Signs that a database entry's writer moved that pgtenant acted on (a lost connection, "
	       "a server changing role, a read-only error on a read-write entry).");
	list_for_each (i, &pgt_dbstates) {
		const struct pgt_dbstate *d = container_of(i, struct pgt_dbstate, node);
		evbuffer_add_printf(b, "pgtenant_failovers_total{database=\"");
		label(b, d->name);
		evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)d->hosts->failovers);
	}
	header(b, "pgtenant_server_host_connections", "gauge",
	       "Server connections per database entry and server address.");
	list_for_each (i, &pgt_dbstates) {
		const struct pgt_dbstate *d = container_of(i, struct pgt_dbstate, node);
		union pgt_addr addrs[HOSTS_MAX_CANDS];
		int counts[HOSTS_MAX_CANDS], n = 0;
		list_for_each (j, &pgt_all_servers) {
			const struct pgt_server *s = container_of(j, struct pgt_server, conn_all_node);
			if (s->pool->dbstate != d || s->state == SV_LOGIN)
				continue;
			int k = 0;
			while (k < n &&
			       !(hosts_addr_equal(&addrs[k], &s->conn.addr) ||
			         (addrs[k].sa.sa_family == AF_UNIX && s->conn.addr.sa.sa_family == AF_UNIX)))
				k++;
			if (k == n) {
				if (n == HOSTS_MAX_CANDS)
					continue;
				addrs[n] = s->conn.addr;
				counts[n++] = 0;
			}
			counts[k]++;
		}
		for (int k = 0; k < n; k++) {
			char t[64];
			hosts_addr_text(&addrs[k], t, sizeof(t));
			evbuffer_add_printf(b, "pgtenant_server_host_connections{database=\"");
			label(b, d->name);
			evbuffer_add_printf(b, "\",addr=\"%s\"} %d\n", t, counts[k]);
		}
	}
}

/* The transaction rate limit, per tenant that has one or was ever held
 * back by one (a forgotten tenant's series go with it). */
static void tenant_rate_metrics(struct evbuffer *b)
{
	static const struct {
		const char *name, *type, *help;
	} m[] = {
	    {"pgtenant_throttled_total", "counter",
	     "Transactions that waited behind their tenant's xact_rate."},
	    {"pgtenant_throttle_wait_seconds_total", "counter",
	     "Time transactions waited behind their tenant's xact_rate."},
	    {"pgtenant_clients_throttled", "gauge", "Clients waiting behind their tenant's xact_rate now."},
	    {"pgtenant_xact_rate", "gauge", "The tenant's transaction rate limit (per second)."},
	};
	for (size_t k = 0; k < PGT_ARRAY_SIZE(m); k++) {
		header(b, m[k].name, m[k].type, m[k].help);
		struct list *i;
		list_for_each (i, &pgt_tenant_states) {
			const struct pgt_tenant_state *t = container_of(i, struct pgt_tenant_state, node);
			if (!t->xrate && !t->throttled_total)
				continue;
			evbuffer_add_printf(b, "%s{tenant=\"", m[k].name);
			label(b, t->id);
			if (k == 0)
				evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)t->throttled_total);
			else if (k == 1)
				evbuffer_add_printf(b, "\"} %.6f\n", (double)t->throttle_wait * 1e-6);
			else
				evbuffer_add_printf(b, "\"} %d\n", k == 2 ? t->nthrottled : t->xrate);
		}
	}
}

static void on_request(struct evhttp_request *req, void *arg)
{
	(void)arg;
	const char *uri = evhttp_request_get_uri(req);
	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET || !uri ||
	    (strcmp(uri, "/metrics") != 0 && strncmp(uri, "/metrics?", 9) != 0)) {
		evhttp_send_error(req, HTTP_NOTFOUND, "only GET /metrics is served here");
		return;
	}
	struct evbuffer *b = evbuffer_new();
	if (!b) {
		evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
		return;
	}
	render(b);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", b);
	evbuffer_free(b);
}

bool metrics_start(const char *listen)
{
	start_time = util_now();
	if (!listen || !*listen)
		return true;
	char host[256];
	const char *colon = strrchr(listen, ':');
	long port;
	if (!colon || (size_t)(colon - listen) >= sizeof(host) ||
	    !util_parse_int(colon + 1, 1, 65535, &port)) {
		log_error("metrics_listen \"%s\": expected address:port", listen);
		return false;
	}
	memcpy(host, listen, (size_t)(colon - listen));
	host[colon - listen] = '\0';
	/* [::1]:9127 */
	char *h = host;
	if (h[0] == '[' && h[strlen(h) - 1] == ']') {
		h[strlen(h) - 1] = '\0';
		h++;
	}
	http = evhttp_new(pgt.base);
	if (!http || evhttp_bind_socket(http, *h ? h : "0.0.0.0", (uint16_t)port) != 0) {
		log_error("could not listen for metrics on %s", listen);
		return false;
	}
	evhttp_set_gencb(http, on_request, NULL);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET);
	log_info("serving Prometheus metrics on http://%s/metrics", listen);
	return true;
}

void metrics_stop(void)
{
	if (http)
		evhttp_free(http);
	http = NULL;
}
