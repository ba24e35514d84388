/*
 * Admin console.  Commands are looked up in one {name, handler} table; SHOW
 * subcommands in another.  Results are built with pktbuf and queued on the
 * admin client's socket (admin output is never on the forwarding path).
 * Column names and order follow PgBouncer so that its tools keep working;
 * pgtenant adds a `tenant` column at the end where a row belongs to a tenant.
 */
#include "admin.h"

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "audit.h"
#include "client.h"
#include "config.h"
#include "janitor.h"
#include "log.h"
#include "loop.h"
#include "pktbuf.h"
#include "pool.h"
#include "ratelimit.h"
#include "prepare.h"
#include "sbuf.h"
#include "secretfile.h"
#include "stats.h"
#include "server.h"
#include "slab.h"
#include "tenant_registry.h"
#include "tls.h"
#include "tls.h"
#include "userlist.h"

#define PGT_VERSION_STR "pgtenant " PGT_VERSION

#define OID_TEXT 25
#define OID_INT4 23
#define OID_INT8 20
#define OID_NUMERIC 1700

struct admin_out {
	struct pktbuf b;
	int ncols;
};

bool admin_is_admin_db(const char *dbname)
{
	return strcmp(dbname, "pgtenant") == 0 || strcmp(dbname, "pgbouncer") == 0;
}

static bool admin_send(struct pgt_client *c, struct pktbuf *b)
{
	bool ok = sbuf_send_raw(&c->conn, b->data, b->len);
	pktbuf_free(b);
	if (!ok)
		client_close(c, "send failed");
	return ok;
}

static bool admin_error(struct pgt_client *c, const char *sqlstate, const char *msg)
{
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_error(&b, "ERROR", sqlstate, msg);
	pktbuf_ready(&b, 'I');
	return admin_send(c, &b);
}

static bool admin_done(struct pgt_client *c, struct pktbuf *b, const char *tag)
{
	pktbuf_complete(b, tag);
	pktbuf_ready(b, 'I');
	return admin_send(c, b);
}

bool admin_welcome(struct pgt_client *c)
{
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_auth(&b, 0, NULL, 0);
	pktbuf_param_status(&b, "server_version", PGT_VERSION "/pgtenant");
	pktbuf_param_status(&b, "client_encoding", "UTF8");
	pktbuf_param_status(&b, "server_encoding", "UTF8");
	pktbuf_param_status(&b, "standard_conforming_strings", "on");
	pktbuf_param_status(&b, "DateStyle", "ISO");
	pktbuf_param_status(&b, "TimeZone", "UTC");
	pktbuf_param_status(&b, "integer_datetimes", "on");
	pktbuf_start(&b, 'K');
	pktbuf_put_u32(&b, c->cancel_pid);
	pktbuf_put_u32(&b, c->cancel_key);
	pktbuf_finish(&b);
	pktbuf_ready(&b, 'I');
	client_log(c, PGT_LOG_INFO, "admin console login");
	return admin_send(c, &b);
}

/* ---- result helpers ---- */

static void cols(struct admin_out *o, int n, const char *const *names, const uint32_t *oids)
{
	pktbuf_init(&o->b);
	o->ncols = n;
	pktbuf_row_desc(&o->b, n, names, oids);
}

static void row(struct admin_out *o, const char *const *values)
{
	pktbuf_data_row(&o->b, o->ncols, values);
}

static const char *num(char *buf, size_t n, long long v)
{
	snprintf(buf, n, "%lld", v);
	return buf;
}
#define NUM(buf, v) num(buf, sizeof(buf), (long long)(v))

static void fmt_time(usec_t t, char *out, size_t n)
{
	time_t s = (time_t)(t / USEC_PER_SEC);
	struct tm tm;
	gmtime_r(&s, &tm);
	strftime(out, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* ---- SHOW ---- */

static bool show_help(struct pgt_client *c, const char *arg)
{
	(void)arg;
	struct pktbuf b;
	pktbuf_init(&b);
	static const char *lines[] = {
	    "SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|LISTS|USERS|MEM|STATE|VERSION",
	    "SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS",
	    "SHOW TENANTS|TENANT_STATS",
	    "SHOW TENANT <id>",
	    "RELOAD",
	    "PAUSE [<db>]",
	    "RESUME [<db>]",
	    "DISABLE <tenant>",
	    "ENABLE <tenant>",
	    "KILL <db>",
	    "KILL TENANT <tenant>",
	    "RECONNECT [<db>]",
	    "WAIT_CLOSE [<db>]",
	    "SET key = value",
	    "SHUTDOWN",
	};
	for (size_t i = 0; i < PGT_ARRAY_SIZE(lines); i++)
		pktbuf_notice(&b, "00000", lines[i]);
	return admin_done(c, &b, "SHOW");
}

static bool show_version(struct pgt_client *c, const char *arg)
{
	(void)arg;
	static const char *names[] = {"version"};
	struct admin_out o;
	cols(&o, 1, names, NULL);
	const char *v[] = {PGT_VERSION_STR};
	row(&o, v);
	return admin_done(c, &o.b, "SHOW");
}

static bool show_config(struct pgt_client *c, const char *arg)
{
	(void)arg;
	static const char *names[] = {"key", "value", "default", "changeable"};
	struct admin_out o;
	cols(&o, 4, names, NULL);
	for (int i = 0; i < config_key_count(); i++) {
		struct pgt_config_row r;
		config_key_row(pgt.cfg, i, &r);
		const char *v[] = {r.name, r.value, r.def, r.reloadable ? "yes" : "no"};
		row(&o, v);
	}
	return admin_done(c, &o.b, "SHOW");
}

static bool show_databases(struct pgt_client *c, const char *arg)
{
	(void)arg;
	static const char *names[] = {"name",
	                              "host",
	                              "port",
	                              "database",
	                              "force_user",
	                              "pool_size",
	                              "min_pool_size",
	                              "reserve_pool_size",
	                              "server_lifetime",
	                              "pool_mode",
	                              "load_balance_hosts",
	                              "max_connections",
	                              "current_connections",
	                              "max_client_connections",
	                              "current_client_connections",
	                              "paused",
	                              "disabled"};
	static const uint32_t oids[] = {OID_TEXT, OID_TEXT, OID_INT4, OID_TEXT, OID_TEXT, OID_INT4,
	                                OID_INT4, OID_INT4, OID_INT4, OID_TEXT, OID_INT4, OID_INT4,
	                                OID_INT4, OID_INT4, OID_INT4, OID_INT4, OID_INT4};
	struct admin_out o;
	const struct pgt_config *cfg = pgt.cfg;
	cols(&o, 17, names, oids);
	for (int i = 0; i < cfg->ndbs; i++) {
		const struct pgt_database *db = &cfg->dbs[i];
		char port[16], ps[16], mps[16], rp[16], sl[16], mc[16], cc[16], ccl[16];
		int cur = 0, clients = 0;
		bool paused = pgt_paused_all;
		struct list *it;
		list_for_each (it, &pgt_pools) {
			struct pgt_pool *p = container_of(it, struct pgt_pool, node);
			if (p->db != db)
				continue;
			cur += p->nservers;
			clients += pool_clients(p);
			paused = paused || p->dbstate->paused;
		}
		/* force_user: the password file's username wins over user= */
		const char *force_user = secretfile_db_user(cfg, db);
		const char *v[] = {db->name,
		                   db->host,
		                   NUM(port, db->port),
		                   db->dbname ? db->dbname : db->name,
		                   force_user,
		                   NUM(ps, config_db_pool_size(cfg, db)),
		                   NUM(mps, db->min_pool_size >= 0 ? db->min_pool_size : cfg->min_pool_size),
		                   NUM(rp, db->reserve_pool >= 0 ? db->reserve_pool : cfg->reserve_pool_size),
		                   NUM(sl, cfg->server_lifetime / USEC_PER_SEC),
		                   db->pool_mode >= 0 ? (db->pool_mode ? "transaction" : "session") : NULL,
		                   "0", /* addresses are tried in order (PgBouncer's "disable") */
		                   NUM(mc, config_db_max_connections(cfg, db)),
		                   NUM(cc, cur),
		                   "0",
		                   NUM(ccl, clients),
		                   paused ? "1" : "0",
		                   "0"};
		row(&o, v);
	}
	return admin_done(c, &o.b, "SHOW");
}

static bool show_pools(struct pgt_client *c, const char *arg)
{
	(void)arg;
	static const char *names[] = {"database",
	                              "user",
	                              "cl_active",
	                              "cl_waiting",
	                              "cl_active_cancel_req",
	                              "cl_waiting_cancel_req",
	                              "sv_active",
	                              "sv_active_cancel",
	                              "sv_being_canceled",
	                              "sv_idle",
	                              "sv_used",
	                              "sv_tested",
	                              "sv_login",
	                              "maxwait",
	                              "maxwait_us",
	                              "pool_mode",
	                              "load_balance_hosts",
	                              "tenant"};
	static const uint32_t oids[] = {OID_TEXT, OID_TEXT, OID_INT4, OID_INT4, OID_INT4, OID_INT4,
	                                OID_INT4, OID_INT4, OID_INT4, OID_INT4, OID_INT4, OID_INT4,
	                                OID_INT4, OID_INT4, OID_INT4, OID_TEXT, OID_INT4, OID_TEXT};
	struct admin_out o;
	cols(&o, 18, names, oids);
	usec_t now = loop_now();
	struct list *it;
	list_for_each (it, &pgt_pools) {
		struct pgt_pool *p = container_of(it, struct pgt_pool, node);
		char a[16], w[16], sa[16], si[16], su[16], sl[16], mw[16], mwu[16];
		usec_t maxwait = 0;
		struct list *f = list_first(&p->waiting_clients);
		if (f)
			maxwait = now - container_of(f, struct pgt_client, node)->wait_start;
		int mode = pool_mode(p);
		/* Tools key pools on (database, user) (pgbouncer_exporter fails a scrape
		 * on duplicate series): a tenant pool shows the tenant-qualified user
		 * that clients may log in as. */
		char user[256];
		if (p->tenant[0])
			snprintf(user, sizeof(user), "%s%s%s", p->user,
			         pgt.cfg->tenant_user_separator[0] ? pgt.cfg->tenant_user_separator : ".",
			         p->tenant);
		else
			snprintf(user, sizeof(user), "%s", p->user);
		const char *v[] = {p->dbname,
		                   user,
		                   NUM(a, p->nactive + p->nwelcome),
		                   NUM(w, p->nwaiting),
		                   "0",
		                   "0",
		                   NUM(sa, list_count(&p->active_servers)),
		                   "0",
		                   "0",
		                   NUM(si, list_count(&p->idle_servers)),
		                   NUM(su, list_count(&p->used_servers)),
		                   "0",
		                   NUM(sl, list_count(&p->login_servers)),
		                   NUM(mw, maxwait / USEC_PER_SEC),
		                   NUM(mwu, maxwait % USEC_PER_SEC),
		                   mode == PGT_POOL_SESSION ? "session" : "transaction",
		                   "0",
		                   p->tenant};
		row(&o, v);
	}
	return admin_done(c, &o.b, "SHOW");
}

static const char *const conn_cols[] = {
    "type",         "user",       "database",   "replication",      "state",
    "addr",         "port",       "local_addr", "local_port",       "connect_time",
    "request_time", "wait",       "wait_us",    "close_needed",     "ptr",
    "link",         "remote_pid", "tls",        "application_name", "prepared_statements",
    "id",           "tenant",     "pinned"};
static const uint32_t conn_oids[] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT,
                                     OID_INT4, OID_TEXT, OID_INT4, OID_TEXT, OID_TEXT, OID_INT4,
                                     OID_INT4, OID_INT4, OID_TEXT, OID_TEXT, OID_INT4, OID_TEXT,
                                     OID_TEXT, OID_INT4, OID_INT8, OID_TEXT, OID_TEXT};
#define CONN_NCOLS ((int)PGT_ARRAY_SIZE(conn_cols))

static void conn_row(struct admin_out *o, const struct pgt_conn *conn, const char *type, const char *user,
                     const char *db, const char *state, usec_t wait, bool close_needed, const void *ptr,
                     const void *link, uint32_t remote_pid, const char *app, const char *tenant,
                     uint32_t nprepared, const char *pinned, char replication)
{
	char addr[64], port[16], laddr[64] = "", lport[16] = "", ct[40], rt[40], w[16], wu[16], ptrs[32],
	                         links[32] = "", pid[16], id[24], nps[16];
	int p = 0;
	sbuf_addr_str(&conn->addr, addr, sizeof(addr), &p);
	NUM(port, p);
	union pgt_addr la;
	socklen_t len = sizeof(la);
	memset(&la, 0, sizeof(la));
	int lp = 0;
	if (conn->fd >= 0 && getsockname(conn->fd, &la.sa, &len) == 0)
		sbuf_addr_str(&la, laddr, sizeof(laddr), &lp);
	NUM(lport, lp);
	fmt_time(conn->connect_time, ct, sizeof(ct));
	fmt_time(conn->request_time, rt, sizeof(rt));
	snprintf(ptrs, sizeof(ptrs), "%p", ptr);
	if (link)
		snprintf(links, sizeof(links), "%p", link);
	char tls[96];
	tls_describe(conn, tls, sizeof(tls));
	const char *v[] = {type,
	                   user,
	                   db,
	                   replication == 'd'   ? "logical"
	                   : replication == 'p' ? "physical"
	                                        : "none",
	                   state,
	                   addr,
	                   port,
	                   laddr,
	                   lport,
	                   ct,
	                   rt,
	                   NUM(w, wait / USEC_PER_SEC),
	                   NUM(wu, wait % USEC_PER_SEC),
	                   close_needed ? "1" : "0",
	                   ptrs,
	                   links,
	                   NUM(pid, remote_pid),
	                   tls,
	                   app ? app : "",
	                   NUM(nps, nprepared), /* clients: by their names; servers: pgtenant's */
	                   NUM(id, conn->id),
	                   tenant,
	                   pinned ? pinned : ""}; /* why a client keeps its server (session.c) */
	row(o, v);
}

static bool show_clients(struct pgt_client *c, const char *arg)
{
	(void)arg;
	struct admin_out o;
	cols(&o, CONN_NCOLS, conn_cols, conn_oids);
	usec_t now = loop_now();
	struct list *it;
	list_for_each (it, &pgt_all_clients) {
		struct pgt_client *k = container_of(it, struct pgt_client, all_node);
		usec_t wait = k->state == CL_WAITING ? now - k->wait_start : 0;
		conn_row(&o, &k->conn, "C", k->user ? k->user : "", k->dbname ? k->dbname : "",
		         client_state_name(k), wait, false, k, k->server, k->server ? k->server->be_pid : 0,
		         vars_get(&k->vars, "application_name"), k->pool ? k->pool->tenant : "",
		         ps_client_count(k), k->pin, k->replication);
	}
	return admin_done(c, &o.b, "SHOW");
}

static bool show_servers(struct pgt_client *c, const char *arg)
{
	(void)arg;
	struct admin_out o;
	cols(&o, CONN_NCOLS, conn_cols, conn_oids);
	struct list *it;
	list_for_each (it, &pgt_all_servers) {
		struct pgt_server *s = container_of(it, struct pgt_server, conn_all_node);
		conn_row(&o, &s->conn, "S", s->pool->user, s->pool->dbname, server_state_name(s), 0,
		         s->close_needed, s, s->client, s->be_pid, vars_get(&s->vars, "application_name"),
		         s->pool->tenant, ps_server_count(s), s->client ? s->client->pin : NULL,
		         s->pool->replication);
	}
	return admin_done(c, &o.b, "SHOW");
}

static bool show_lists(struct pgt_client *c, const char *arg)
{
	(void)arg;
	static const char *names[] = {"list", "items"};
	static const uint32_t oids[] = {OID_TEXT, OID_INT4};
	struct admin_out o;
	cols(&o, 2, names, oids);
	int npools = list_count(&pgt_pools), nclients = list_count(&pgt_all_clients),
	    nservers = list_count(&pgt_all_servers), nlogin = list_count(client_login_list());
	char b1[16], b2[16], b3[16], b4[16], b5[16], b6[16];
	const char *rows[][2] = {
	    {"databases", NUM(b1, pgt.cfg->ndbs)},
	    {"users", NUM(b2, pgt.cfg->users ? pgt.cfg->users->n : 0)},
	    {"pools", NUM(b3, npools)},
	    {"free_clients", "0"},
	    {"used_clients", NUM(b4, nclients)},
	    {"login_clients", NUM(b5, nlogin)},
	    {"free_servers", "0"},
	    {"used_servers", NUM(b6, nservers)},
	    {"dns_names", "0"},
	    {"dns_zones", "0"},
	    {"dns_queries", "0"},
	    {"dns_pending", "0"},
	};
	for (size_t i = 0; i < PGT_ARRAY_SIZE(rows); i++)
		row(&o, rows[i]);
	return admin_done(c, &o.b, "SHOW");
}

static bool show_state(struct pgt_client *c, const char *arg)
{
	(void)arg;
	static const char *names[] = {"key", "value"};
	struct admin_out o;
	cols(&o, 2, names, NULL);
	const char *rows[][2] = {{"active", pgt_paused_all ? "no" : "yes"},
	                         {"paused", pgt_paused_all ? "yes" : "no"},
	                         {"suspended", "no"}};
	for (size_t i = 0; i < PGT_ARRAY_SIZE(rows); i++)
		row(&o, rows[i]);
	return admin_done(c, &o.b, "SHOW");
}

/* One SHOW USERS row: PgBouncer's columns, the [users] settings (NULL
 * where the entry does not set them), the caps in force (0 = none) and the
 * user's counts. */
static void user_row(struct admin_out *o, const char *name)
{
	const struct pgt_user_conf *uc = config_find_user(pgt.cfg, name);
	const struct pgt_user_state *u = user_state_find(name);
	char ps[16], rs[16], mu[16], cur[16], mc[16], ccl[16];
	static const char *const modes[] = {"session", "transaction"};
	const char *v[] = {
	    name,
	    uc && uc->pool_size >= 0 ? NUM(ps, uc->pool_size) : NULL,
	    uc && uc->reserve_pool >= 0 ? NUM(rs, uc->reserve_pool) : NULL,
	    uc && uc->pool_mode >= 0 ? modes[uc->pool_mode] : NULL,
	    NUM(mu, user_max_connections(uc)),
	    NUM(cur, u ? u->nservers : 0),
	    NUM(mc, uc && uc->max_user_client_connections > 0 ? uc->max_user_client_connections : 0),
	    NUM(ccl, u ? u->nclients : 0)};
	row(o, v);
}

/* Is name in the table of auth_file's names below? */
static bool in_names(const uint32_t *seen, uint32_t cap, const struct pgt_userlist *ul, const char *name)
{
	for (uint32_t j = (uint32_t)util_hash_str(name) & (cap - 1); seen[j]; j = (j + 1) & (cap - 1))
		if (strcmp(ul->users[seen[j] - 1].name, name) == 0)
			return true;
	return false;
}

/* auth_file's users, then the other [users] entries, then the other users
 * that have clients or server connections now (as PgBouncer lists every
 * user it knows). */
static bool show_users(struct pgt_client *c, const char *arg)
{
	(void)arg;
	static const char *names[] = {"name",
	                              "pool_size",
	                              "reserve_pool_size",
	                              "pool_mode",
	                              "max_user_connections",
	                              "current_connections",
	                              "max_user_client_connections",
	                              "current_client_connections"};
	static const uint32_t oids[] = {OID_TEXT, OID_INT4, OID_INT4, OID_TEXT,
	                                OID_INT4, OID_INT4, OID_INT4, OID_INT4};
	const struct pgt_config *cfg = pgt.cfg;
	struct admin_out o;
	cols(&o, 8, names, oids);
	const struct pgt_userlist *ul = cfg->users;
	int n = ul ? ul->n : 0;
	/* auth_file's names, hashed for this command (userlist_find is a scan) */
	uint32_t cap = 16;
	while (cap < (uint32_t)n * 2)
		cap *= 2;
	uint32_t *seen = xcalloc(cap, sizeof(*seen));
	for (int i = 0; i < n; i++) {
		uint32_t j = (uint32_t)util_hash_str(ul->users[i].name) & (cap - 1);
		while (seen[j])
			j = (j + 1) & (cap - 1);
		seen[j] = (uint32_t)i + 1;
		user_row(&o, ul->users[i].name);
	}
	for (int i = 0; i < cfg->nuser_confs; i++)
		if (!in_names(seen, cap, ul, cfg->user_confs[i].name))
			user_row(&o, cfg->user_confs[i].name);
	struct list *it;
	list_for_each (it, &pgt_user_states) {
		const char *name = container_of(it, struct pgt_user_state, node)->name;
		if (!config_find_user(cfg, name) && !in_names(seen, cap, ul, name))
			user_row(&o, name);
	}
	free(seen);
	return admin_done(c, &o.b, "SHOW");
}

/* Memory of the hot objects: I/O buffers come from a free list. */
static bool show_mem(struct pgt_client *c, const char *arg)
{
	(void)arg;
	static const char *names[] = {"name", "size", "used", "free", "memtotal"};
	static const uint32_t oids[] = {OID_TEXT, OID_INT4, OID_INT4, OID_INT4, OID_INT4};
	struct admin_out o;
	cols(&o, 5, names, oids);
	int bused, bfree;
	uint32_t bsize;
	sbuf_mem_stats(&bused, &bfree, &bsize);
	int ncl = list_count(&pgt_all_clients), nsv = list_count(&pgt_all_servers),
	    npools = list_count(&pgt_pools);
	uint64_t nstmts, stmt_bytes;
	ps_mem_stats(&nstmts, &stmt_bytes);
	struct {
		const char *name;
		size_t size;
		int used, free;
	} r[] = {{"iobuf", bsize, bused, bfree},
	         {"client", sizeof(struct pgt_client), ncl, 0},
	         {"server", sizeof(struct pgt_server), nsv, 0},
	         {"pool", sizeof(struct pgt_pool), npools, 0},
	         {"login", client_login_slab->objsize, client_login_slab->nused,
	          (int)(client_login_slab->npages * (65536 / client_login_slab->objsize)) -
	              client_login_slab->nused},
	         /* statement texts kept for transaction mode, shared by all clients */
	         {"prepared_statement", nstmts ? (size_t)(stmt_bytes / nstmts) : 0, (int)nstmts, 0}};
	for (size_t i = 0; i < PGT_ARRAY_SIZE(r); i++) {
		char s1[16], s2[16], s3[16], s4[24];
		const char *v[] = {r[i].name, NUM(s1, r[i].size), NUM(s2, r[i].used), NUM(s3, r[i].free),
		                   NUM(s4, (long long)r[i].size * (r[i].used + r[i].free))};
		row(&o, v);
	}
	return admin_done(c, &o.b, "SHOW");
}

/* ---- statistics ---- */

/* The counters SHOW STATS reports, in PgBouncer's column order. */
static const size_t stat_fields[] = {
    offsetof(struct pgt_pool_stats, server_assignment_count),
    offsetof(struct pgt_pool_stats, xact_count),
    offsetof(struct pgt_pool_stats, query_count),
    offsetof(struct pgt_pool_stats, bytes_in),
    offsetof(struct pgt_pool_stats, bytes_out),
    offsetof(struct pgt_pool_stats, xact_time),
    offsetof(struct pgt_pool_stats, query_time),
    offsetof(struct pgt_pool_stats, wait_time),
    offsetof(struct pgt_pool_stats, client_parse_count),
    offsetof(struct pgt_pool_stats, server_parse_count),
    offsetof(struct pgt_pool_stats, bind_count),
};
#define NSTAT ((int)PGT_ARRAY_SIZE(stat_fields))

static const char *const stats_total_cols[NSTAT] = {"total_server_assignment_count",
                                                    "total_xact_count",
                                                    "total_query_count",
                                                    "total_received",
                                                    "total_sent",
                                                    "total_xact_time",
                                                    "total_query_time",
                                                    "total_wait_time",
                                                    "total_client_parse_count",
                                                    "total_server_parse_count",
                                                    "total_bind_count"};
static const char *const stats_avg_cols[NSTAT] = {"avg_server_assignment_count",
                                                  "avg_xact_count",
                                                  "avg_query_count",
                                                  "avg_recv",
                                                  "avg_sent",
                                                  "avg_xact_time",
                                                  "avg_query_time",
                                                  "avg_wait_time",
                                                  "avg_client_parse_count",
                                                  "avg_server_parse_count",
                                                  "avg_bind_count"};
/* SHOW STATS_TOTALS and STATS_AVERAGES drop the prefixes, except (as in
 * PgBouncer) on the averages of the three prepared-statement counters. */
#define NSTAT_PREFIXED 3
static const char *const stats_totals_cols[NSTAT] = {"server_assignment_count",
                                                     "xact_count",
                                                     "query_count",
                                                     "bytes_received",
                                                     "bytes_sent",
                                                     "xact_time",
                                                     "query_time",
                                                     "wait_time",
                                                     "client_parse_count",
                                                     "server_parse_count",
                                                     "bind_count"};
/* SHOW TOTALS names rows after PgBouncer's struct fields. */
static const char *const totals_rows[NSTAT] = {"server_assignment_count",
                                               "xact_count",
                                               "query_count",
                                               "client_bytes",
                                               "server_bytes",
                                               "xact_time",
                                               "query_time",
                                               "wait_time",
                                               "ps_client_parse_count",
                                               "ps_server_parse_count",
                                               "ps_bind_count"};

static uint64_t stat_get(const struct pgt_pool_stats *st, int i)
{
	return *(const uint64_t *)((const char *)st + stat_fields[i]);
}

struct stats_group {
	const char *dbname, *tenant;
	struct pgt_pool_stats cur, newer, older;
};

static int pool_cmp_db(const void *a, const void *b)
{
	const struct pgt_pool *p = *(struct pgt_pool *const *)a, *q = *(struct pgt_pool *const *)b;
	return strcmp(p->dbname, q->dbname);
}

static int pool_cmp_db_tenant(const void *a, const void *b)
{
	const struct pgt_pool *p = *(struct pgt_pool *const *)a, *q = *(struct pgt_pool *const *)b;
	int r = strcmp(p->dbname, q->dbname);
	return r ? r : strcmp(p->tenant, q->tenant);
}

/* Pools summed per database (by_tenant: per database and tenant, tenant
 * pools only), sorted by name.  O(pools log pools).  Caller frees. */
static int stats_groups(struct stats_group **out, bool by_tenant)
{
	int n = 0, cap = list_count(&pgt_pools);
	struct pgt_pool **v = xcalloc((size_t)cap + 1, sizeof(*v));
	struct list *it;
	list_for_each (it, &pgt_pools) {
		struct pgt_pool *p = container_of(it, struct pgt_pool, node);
		if (!p->internal && (!by_tenant || p->tenant[0]))
			v[n++] = p;
	}
	qsort(v, (size_t)n, sizeof(*v), by_tenant ? pool_cmp_db_tenant : pool_cmp_db);
	struct stats_group *g = xcalloc((size_t)n + 1, sizeof(*g));
	int ng = 0;
	for (int i = 0; i < n; i++) {
		const struct pgt_pool *p = v[i];
		if (ng == 0 || strcmp(g[ng - 1].dbname, p->dbname) != 0 ||
		    (by_tenant && strcmp(g[ng - 1].tenant, p->tenant) != 0)) {
			g[ng].dbname = p->dbname;
			g[ng].tenant = p->tenant;
			ng++;
		}
		stats_add(&g[ng - 1].cur, &p->stats);
		stats_add(&g[ng - 1].newer, &p->newer_stats);
		stats_add(&g[ng - 1].older, &p->older_stats);
	}
	free(v);
	*out = g;
	return ng;
}

enum stats_view { VIEW_STATS, VIEW_TOTALS, VIEW_AVERAGES, VIEW_TENANTS };

/* SHOW STATS / STATS_TOTALS / STATS_AVERAGES (per database) and
 * SHOW TENANT_STATS (per database and tenant): totals since start, averages
 * over the last stats_period (rates per second, times per event, usec). */
static bool show_stats_view(struct pgt_client *c, enum stats_view view)
{
	const char *names[2 + 2 * NSTAT];
	uint32_t oids[2 + 2 * NSTAT];
	int nkeys = view == VIEW_TENANTS ? 2 : 1, n = 0;
	names[n] = "database";
	oids[n++] = OID_TEXT;
	if (view == VIEW_TENANTS) {
		names[n] = "tenant";
		oids[n++] = OID_TEXT;
	}
	bool totals = view != VIEW_AVERAGES, avgs = view != VIEW_TOTALS;
	for (int i = 0; totals && i < NSTAT; i++) {
		names[n] = view == VIEW_TOTALS ? stats_totals_cols[i] : stats_total_cols[i];
		oids[n++] = OID_NUMERIC;
	}
	for (int i = 0; avgs && i < NSTAT; i++) {
		names[n] = view == VIEW_AVERAGES && i < NSTAT - NSTAT_PREFIXED ? stats_totals_cols[i]
		                                                               : stats_avg_cols[i];
		oids[n++] = OID_NUMERIC;
	}
	struct admin_out o;
	cols(&o, n, names, oids);
	struct stats_group *g;
	int ng = stats_groups(&g, view == VIEW_TENANTS);
	for (int k = 0; k < ng; k++) {
		struct pgt_pool_stats avg;
		stats_average(&avg, &g[k].newer, &g[k].older);
		char buf[2 * NSTAT][24];
		const char *v[2 + 2 * NSTAT];
		int m = 0;
		v[m++] = g[k].dbname;
		if (nkeys == 2)
			v[m++] = g[k].tenant;
		for (int i = 0; totals && i < NSTAT; i++, m++)
			v[m] = NUM(buf[m - nkeys], stat_get(&g[k].cur, i));
		for (int i = 0; avgs && i < NSTAT; i++, m++)
			v[m] = NUM(buf[m - nkeys], stat_get(&avg, i));
		row(&o, v);
	}
	free(g);
	return admin_done(c, &o.b, "SHOW");
}

/* The SHOW handlers of the four views. */
#define STATS_VIEW_CMD(fn, view)                                                                             \
	static bool fn(struct pgt_client *c, const char *arg)                                                \
	{                                                                                                    \
		(void)arg;                                                                                   \
		return show_stats_view(c, view);                                                             \
	}
STATS_VIEW_CMD(show_stats, VIEW_STATS)
STATS_VIEW_CMD(show_stats_totals, VIEW_TOTALS)
STATS_VIEW_CMD(show_stats_averages, VIEW_AVERAGES)
STATS_VIEW_CMD(show_tenant_stats, VIEW_TENANTS)

/* SHOW TOTALS: SHOW STATS summed over all databases, one row per figure. */
static bool show_totals(struct pgt_client *c, const char *arg)
{
	(void)arg;
	static const char *names[] = {"name", "value"};
	static const uint32_t oids[] = {OID_TEXT, OID_NUMERIC};
	struct admin_out o;
	cols(&o, 2, names, oids);
	struct pgt_pool_stats cur = {0}, newer = {0}, older = {0}, avg;
	stats_sum(&cur, &newer, &older);
	stats_average(&avg, &newer, &older);
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < NSTAT; i++) {
			char name[64], val[24];
			snprintf(name, sizeof(name), "%s_%s", pass ? "avg" : "total", totals_rows[i]);
			const char *v[] = {name, NUM(val, stat_get(pass ? &avg : &cur, i))};
			row(&o, v);
		}
	}
	return admin_done(c, &o.b, "SHOW");
}

/* ---- tenants ---- */

static const char *const tenant_cols[] = {
    "id", "database", "pool_size", "max_client_conn", "cl_active", "cl_waiting", "sv_active", "sv_idle",
    "total_xact_count", "total_query_count", "total_wait_time", "avg_wait_time", "disabled",
    /* after SPEC's thirteen: the transaction rate limit (ratelimit.h) */
    "xact_rate", "xact_tokens", "cl_throttled", "total_throttled_count", "total_throttle_time"};
static const uint32_t tenant_oids[] = {OID_TEXT, OID_TEXT, OID_INT4, OID_INT4, OID_INT4, OID_INT4,
                                       OID_INT4, OID_INT4, OID_INT8, OID_INT8, OID_INT8, OID_INT8,
                                       OID_INT4, OID_INT4, OID_INT8, OID_INT4, OID_INT8, OID_INT8};
#define TENANT_COLS ((int)PGT_ARRAY_SIZE(tenant_cols))
_Static_assert(PGT_ARRAY_SIZE(tenant_cols) == PGT_ARRAY_SIZE(tenant_oids), "one type per column");

static void tenant_row(struct admin_out *o, const char *id)
{
	const struct pgt_config *cfg = pgt.cfg;
	const struct pgt_tenant_conf *tc = config_find_tenant(cfg, id);
	int cl_active = 0, cl_waiting = 0, sv_active = 0, sv_idle = 0;
	uint64_t xacts = 0, queries = 0, wait = 0, waits = 0;
	const char *database = tc && tc->database ? tc->database : NULL;
	/* the tenant's own pools, not every pool: SHOW TENANTS stays linear in
	 * the number of tenants */
	const struct pgt_tenant_state *t = tenant_state_find(id);
	struct list *it;
	for (it = t ? t->pools.next : NULL; t && it != &t->pools; it = it->next) {
		struct pgt_pool *p = container_of(it, struct pgt_pool, tenant_node);
		if (!database)
			database = p->dbname;
		cl_active += p->nactive + p->nwelcome;
		cl_waiting += p->nwaiting;
		sv_active += list_count(&p->active_servers);
		sv_idle += list_count(&p->idle_servers);
		xacts += p->stats.xact_count;
		queries += p->stats.query_count;
		wait += p->stats.wait_time;
		waits += p->stats.wait_count;
	}
	char ps[16], mc[16], ca[16], cw[16], sa[16], si[16], tx[24], tq[24], tw[24], aw[24];
	char xr[16], xt[24], ct[16], tt[24], tw2[24];
	const char *v[] = {
	    id,
	    database ? database : "",
	    NUM(ps, tc && tc->pool_size >= 0 ? tc->pool_size : cfg->tenant_pool_size),
	    NUM(mc, tc && tc->max_client_conn >= 0 ? tc->max_client_conn : cfg->tenant_max_client_conn),
	    NUM(ca, cl_active),
	    NUM(cw, cl_waiting),
	    NUM(sa, sv_active),
	    NUM(si, sv_idle),
	    NUM(tx, xacts),
	    NUM(tq, queries),
	    NUM(tw, wait),
	    NUM(aw, waits ? wait / waits : 0),
	    tc && tc->disabled ? "1" : "0",
	    NUM(xr, t ? t->xrate : 0),
	    NUM(xt, t ? rate_tokens(t) : 0),
	    NUM(ct, t ? t->nthrottled : 0),
	    NUM(tt, t ? t->throttled_total : 0),
	    NUM(tw2, t ? t->throttle_wait : 0)};
	row(o, v);
}

/* Configured tenants first, in file order, then tenants only seen at run time. */
static bool show_tenants(struct pgt_client *c, const char *arg)
{
	(void)arg;
	struct admin_out o;
	cols(&o, TENANT_COLS, tenant_cols, tenant_oids);
	for (int i = 0; i < pgt.cfg->ntenants; i++)
		tenant_row(&o, pgt.cfg->tenants[i].id);
	struct list *it;
	list_for_each (it, &pgt_tenant_states) {
		struct pgt_tenant_state *t = container_of(it, struct pgt_tenant_state, node);
		if (!config_find_tenant(pgt.cfg, t->id))
			tenant_row(&o, t->id);
	}
	return admin_done(c, &o.b, "SHOW");
}

static bool show_tenant(struct pgt_client *c, const char *arg)
{
	if (!*arg)
		return admin_error(c, "42601", "SHOW TENANT needs a tenant id");
	if (!config_find_tenant(pgt.cfg, arg) && !tenant_state_find(arg)) {
		char msg[160];
		snprintf(msg, sizeof(msg), "no such tenant: %.100s", arg);
		return admin_error(c, "42704", msg);
	}
	struct admin_out o;
	cols(&o, TENANT_COLS, tenant_cols, tenant_oids);
	tenant_row(&o, arg);
	return admin_done(c, &o.b, "SHOW");
}

struct admin_cmd {
	const char *name;
	bool (*fn)(struct pgt_client *c, const char *arg);
	bool control; /* admin_users only */
};

static const struct admin_cmd show_cmds[] = {
    {"help", show_help, false},
    {"version", show_version, false},
    {"config", show_config, false},
    {"databases", show_databases, false},
    {"pools", show_pools, false},
    {"clients", show_clients, false},
    {"servers", show_servers, false},
    {"lists", show_lists, false},
    {"tenants", show_tenants, false},
    {"tenant", show_tenant, false},
    {"state", show_state, false},
    {"users", show_users, false},
    {"mem", show_mem, false},
    {"stats", show_stats, false},
    {"stats_totals", show_stats_totals, false},
    {"stats_averages", show_stats_averages, false},
    {"totals", show_totals, false},
    {"tenant_stats", show_tenant_stats, false},
};

static bool cmd_show(struct pgt_client *c, const char *arg)
{
	char what[64];
	size_t n = 0;
	while (arg[n] && !isspace((unsigned char)arg[n]) && n + 1 < sizeof(what)) {
		what[n] = arg[n];
		n++;
	}
	what[n] = '\0';
	const char *rest = arg + n;
	while (isspace((unsigned char)*rest))
		rest++;
	for (size_t i = 0; i < PGT_ARRAY_SIZE(show_cmds); i++)
		if (strcasecmp(what, show_cmds[i].name) == 0)
			return show_cmds[i].fn(c, rest);
	char msg[128];
	snprintf(msg, sizeof(msg), "unknown SHOW item \"%s\", use SHOW HELP", what);
	return admin_error(c, "42601", msg);
}

static bool cmd_reload(struct pgt_client *c, const char *arg)
{
	(void)arg;
	bool ok = loop_reload();
	if (audit_enabled)
		audit_reload(c, ok);
	if (!ok)
		return admin_error(
		    c, "F0000",
		    "reload failed: the config has errors (see the log); the old config stays in force");
	struct pktbuf b;
	pktbuf_init(&b);
	return admin_done(c, &b, "RELOAD");
}

static bool cmd_shutdown(struct pgt_client *c, const char *arg)
{
	(void)arg;
	client_log(c, PGT_LOG_INFO, "SHUTDOWN requested from the admin console");
	loop_shutdown(true);
	struct pktbuf b;
	pktbuf_init(&b);
	return admin_done(c, &b, "SHUTDOWN");
}

/* ---- control ---- */

struct admin_pending {
	const char *tag; /* "PAUSE" or "WAIT_CLOSE" */
	char db[128];    /* "" = all databases */
};

static bool db_matches(const struct pgt_pool *p, const char *db)
{
	return !*db || strcmp(p->dbname, db) == 0 || strcmp(p->dbstate->name, db) == 0;
}

static bool known_db(struct pgt_client *c, const char *db)
{
	if (!*db || config_find_db(pgt.cfg, db))
		return true;
	char msg[200];
	snprintf(msg, sizeof(msg), "no such database: %.100s", db);
	admin_error(c, "3D000", msg);
	return false;
}

static bool done_tag(struct pgt_client *c, const char *tag)
{
	struct pktbuf b;
	pktbuf_init(&b);
	return admin_done(c, &b, tag);
}

/* Is the condition of a pending PAUSE / WAIT_CLOSE met? */
static bool pending_met(const struct admin_pending *w)
{
	struct list *i;
	list_for_each (i, &pgt_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		if (p->internal || !db_matches(p, w->db))
			continue;
		if (strcmp(w->tag, "PAUSE") == 0 &&
		    (!list_empty(&p->active_servers) || !list_empty(&p->used_servers)))
			return false;
		if (strcmp(w->tag, "WAIT_CLOSE") == 0) {
			struct list *j;
			list_for_each (j, &p->active_servers)
				if (container_of(j, struct pgt_server, node)->close_needed)
					return false;
			list_for_each (j, &p->used_servers)
				if (container_of(j, struct pgt_server, node)->close_needed)
					return false;
		}
	}
	return true;
}

bool admin_check_pending(void)
{
	struct list *i, *tmp;
	bool left = false;
	list_for_each_safe (i, tmp, client_admin_list()) {
		struct pgt_client *c = container_of(i, struct pgt_client, node);
		struct admin_pending *w = c->admin_pending;
		if (!w)
			continue;
		if (!pending_met(w)) {
			left = true;
			continue;
		}
		c->admin_pending = NULL;
		bool ok = done_tag(c, w->tag);
		free(w);
		if (ok && c->conn.hold)
			sbuf_resume(&c->conn);
	}
	return left;
}

static bool defer(struct pgt_client *c, const char *tag, const char *db)
{
	struct admin_pending *w = xcalloc(1, sizeof(*w));
	w->tag = tag;
	snprintf(w->db, sizeof(w->db), "%s", db);
	if (pending_met(w)) {
		free(w);
		return done_tag(c, tag);
	}
	c->admin_pending = w; /* answered by the janitor when met */
	janitor_wake();
	return true;
}

static void set_paused(const char *db, bool paused)
{
	if (!*db) {
		pgt_paused_all = paused;
	} else {
		struct list *i;
		list_for_each (i, &pgt_pools) {
			struct pgt_pool *p = container_of(i, struct pgt_pool, node);
			if (db_matches(p, db))
				p->dbstate->paused = paused;
		}
	}
}

static bool cmd_pause(struct pgt_client *c, const char *arg)
{
	if (!known_db(c, arg))
		return true;
	set_paused(arg, true);
	client_log(c, PGT_LOG_INFO, "PAUSE %s", *arg ? arg : "(all)");
	return defer(c, "PAUSE", arg);
}

static bool cmd_resume(struct pgt_client *c, const char *arg)
{
	if (!known_db(c, arg))
		return true;
	if (*arg) {
		set_paused(arg, false);
	} else {
		pgt_paused_all = false;
		struct list *i;
		list_for_each (i, &pgt_pools)
			container_of(i, struct pgt_pool, node)->dbstate->paused = false;
	}
	struct list *i;
	list_for_each (i, &pgt_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		if (db_matches(p, arg))
			pool_kick(p);
	}
	client_log(c, PGT_LOG_INFO, "RESUME %s", *arg ? arg : "(all)");
	return done_tag(c, "RESUME");
}

static bool cmd_reconnect(struct pgt_client *c, const char *arg)
{
	if (!known_db(c, arg))
		return true;
	struct list *i;
	list_for_each (i, &pgt_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		if (p->internal || !db_matches(p, arg))
			continue;
		p->generation++; /* servers in use close when released, idle ones now */
		struct list *j, *jt;
		list_for_each (j, &p->active_servers)
			container_of(j, struct pgt_server, node)->close_needed = true;
		list_for_each_safe (j, jt, &p->idle_servers)
			server_close(container_of(j, struct pgt_server, node), "RECONNECT");
	}
	return done_tag(c, "RECONNECT");
}

static bool cmd_wait_close(struct pgt_client *c, const char *arg)
{
	if (!known_db(c, arg))
		return true;
	return defer(c, "WAIT_CLOSE", arg);
}

/* Drop clients and servers of the pools that match. */
static int kill_pools(bool (*match)(const struct pgt_pool *, const char *), const char *arg, const char *why)
{
	int n = 0;
	struct list *i;
	list_for_each (i, &pgt_pools) {
		struct pgt_pool *p = container_of(i, struct pgt_pool, node);
		if (p->internal || !match(p, arg))
			continue;
		struct list *lists[] = {&p->welcome_clients, &p->active_clients, &p->waiting_clients};
		for (size_t k = 0; k < PGT_ARRAY_SIZE(lists); k++) {
			struct list *j, *jt;
			list_for_each_safe (j, jt, lists[k]) {
				client_fail(container_of(j, struct pgt_client, node), "08P01", "%s", why);
				n++;
			}
		}
		struct list *slists[] = {&p->idle_servers, &p->active_servers, &p->used_servers,
		                         &p->login_servers};
		for (size_t k = 0; k < PGT_ARRAY_SIZE(slists); k++) {
			struct list *j, *jt;
			list_for_each_safe (j, jt, slists[k])
				server_close(container_of(j, struct pgt_server, node), why);
		}
	}
	return n;
}

static bool tenant_matches(const struct pgt_pool *p, const char *id)
{
	return strcmp(p->tenant, id) == 0;
}

static bool db_name_matches(const struct pgt_pool *p, const char *db)
{
	return *db && db_matches(p, db);
}

static bool cmd_kill(struct pgt_client *c, const char *arg)
{
	if (strncasecmp(arg, "tenant", 6) == 0 && (arg[6] == ' ' || arg[6] == '\t')) {
		const char *id = arg + 7;
		while (isspace((unsigned char)*id))
			id++;
		if (!*id)
			return admin_error(c, "42601", "KILL TENANT needs a tenant id");
		int n = kill_pools(tenant_matches, id, "killed by the admin console (KILL TENANT)");
		client_log(c, PGT_LOG_INFO, "KILL TENANT %s: %d clients", id, n);
		return done_tag(c, "KILL");
	}
	if (!*arg)
		return admin_error(c, "42601", "KILL needs a database name (or TENANT <id>)");
	if (!known_db(c, arg))
		return true;
	kill_pools(db_name_matches, arg, "killed by the admin console (KILL)");
	return done_tag(c, "KILL");
}

static bool cmd_tenant_flag(struct pgt_client *c, const char *arg, bool disable)
{
	if (!*arg || !config_tenant_id_valid(pgt.cfg, arg))
		return admin_error(c, "42601",
		                   disable ? "DISABLE needs a valid tenant id"
		                           : "ENABLE needs a valid tenant id");
	struct pgt_tenant_state *t = tenant_state_get(arg);
	t->admin_disabled = disable;
	tenant_state_recheck(t);
	client_log(c, PGT_LOG_INFO, "%s tenant %s", disable ? "DISABLE" : "ENABLE", arg);
	return done_tag(c, disable ? "DISABLE" : "ENABLE");
}

static bool cmd_disable(struct pgt_client *c, const char *arg)
{
	return cmd_tenant_flag(c, arg, true);
}

static bool cmd_enable(struct pgt_client *c, const char *arg)
{
	return cmd_tenant_flag(c, arg, false);
}

/* SET key = value | SET key TO value; value may be single-quoted */
static bool cmd_set(struct pgt_client *c, const char *arg)
{
	char key[64], value[512];
	const char *p = arg;
	size_t n = 0;
	while (*p && (isalnum((unsigned char)*p) || *p == '_') && n + 1 < sizeof(key))
		key[n++] = *p++;
	key[n] = '\0';
	while (isspace((unsigned char)*p))
		p++;
	if (*p == '=')
		p++;
	else if (strncasecmp(p, "to", 2) == 0 && isspace((unsigned char)p[2]))
		p += 2;
	else
		return admin_error(c, "42601", "syntax: SET key = value");
	while (isspace((unsigned char)*p))
		p++;
	n = 0;
	if (*p == '\'') {
		for (p++; *p && n + 1 < sizeof(value); p++) {
			if (*p == '\'' && p[1] == '\'')
				p++;
			else if (*p == '\'')
				break;
			value[n++] = *p;
		}
	} else {
		while (*p && n + 1 < sizeof(value))
			value[n++] = *p++;
	}
	value[n] = '\0';
	char err[512];
	if (!config_set_key(pgt.cfg, key, util_trim(value), err, sizeof(err)))
		return admin_error(c, "22023", err);
	if (strcasecmp(key, "audit_log") == 0)
		audit_configure(pgt.cfg->audit_log);
	client_log(c, PGT_LOG_INFO, "SET %s = %s", key, value);
	return done_tag(c, "SET");
}

static const struct admin_cmd cmds[] = {
    {"show", cmd_show, false},
    {"reload", cmd_reload, true},
    {"shutdown", cmd_shutdown, true},
    {"pause", cmd_pause, true},
    {"resume", cmd_resume, true},
    {"reconnect", cmd_reconnect, true},
    {"wait_close", cmd_wait_close, true},
    {"kill", cmd_kill, true},
    {"disable", cmd_disable, true},
    {"enable", cmd_enable, true},
    {"set", cmd_set, true},
};

bool admin_query(struct pgt_client *c, const char *sql)
{
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s", sql);
	char *q = util_trim(buf);
	size_t n = strlen(q);
	while (n > 0 && (q[n - 1] == ';' || isspace((unsigned char)q[n - 1])))
		q[--n] = '\0';
	if (n == 0) {
		struct pktbuf b;
		pktbuf_init(&b);
		pktbuf_start(&b, 'I'); /* EmptyQueryResponse */
		pktbuf_finish(&b);
		pktbuf_ready(&b, 'I');
		return admin_send(c, &b);
	}
	char *word = q;
	while (*q && !isspace((unsigned char)*q))
		q++;
	if (*q)
		*q++ = '\0';
	while (isspace((unsigned char)*q))
		q++;
	for (size_t i = 0; i < PGT_ARRAY_SIZE(cmds); i++) {
		if (strcasecmp(word, cmds[i].name) != 0)
			continue;
		if (cmds[i].control && !c->is_admin_user) {
			if (audit_enabled)
				audit_admin(c, word, q, "42501", "admin access needed");
			return admin_error(c, "42501",
			                   "admin access needed (this user is in stats_users only)");
		}
		if (cmds[i].control && audit_enabled)
			audit_admin(c, word, q, NULL, NULL);
		client_log(c, PGT_LOG_DEBUG, "admin command: %s %s", word, q);
		return cmds[i].fn(c, q);
	}
	char msg[1200];
	snprintf(msg, sizeof(msg), "invalid command '%s', use SHOW HELP;", sql);
	return admin_error(c, "42601", msg);
}
