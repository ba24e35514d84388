/*
 * Client state machine.
 *
 *   accept -> CL_LOGIN (startup packet, SSL/GSS refusals, cancel requests,
 *             authentication)
 *          -> CL_WELCOME (authenticated; the pool has no server parameters
 *             yet, a server login is under way)
 *          -> CL_ACTIVE (ready; in transaction mode holds a server only
 *             between the first message of a transaction and its
 *             ReadyForQuery 'I')
 *          <-> CL_WAITING (needs a server, none free: FIFO in the pool)
 *   or     -> CL_ADMIN (the admin console)
 *
 * Every refusal goes through client_fail() so that it is logged with the
 * client's identity and answered with an ErrorResponse.
 */
#include "client.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "addrstate.h"
#include "admin.h"
#include "audit.h"
#include "auth.h"
#include "metrics.h"
#include "config.h"
#include "janitor.h"
#include "jwt.h"
#include "log.h"
#include "loop.h"
#include "pktbuf.h"
#include "pool.h"
#include "prepare.h"
#include "session.h"
#include "proto.h"
#include "ratelimit.h"
#include "secretfile.h"
#include "server.h"
#include "slab.h"
#include "tenant.h"
#include "tenant_registry.h"
#include "tls.h"
/* What a client needs only until it is logged in; allocated at accept. */
struct client_login {
	struct auth_state auth;
	struct addr_state *addr;       /* per-address throttles; NULL for unix sockets */
	usec_t touch;                  /* last login message (the login list is in this order) */
	bool counted;                  /* in pgt.nlogin and addr->nlogin: not authenticated yet */
	const struct pgt_database *db; /* resolved at startup; re-resolved after auth */
};

/* logins in progress come and go by the thousand: their own pages */
static struct slab login_slab = SLAB_INIT(struct client_login);
const struct slab *const client_login_slab = &login_slab;

struct list pgt_all_clients = {&pgt_all_clients, &pgt_all_clients};
static struct list login_clients = {&login_clients, &login_clients};
static struct list admin_clients = {&admin_clients, &admin_clients};
static struct list dead_clients = {&dead_clients, &dead_clients};

static enum sbuf_verdict client_on_packet(struct pgt_conn *conn, struct pgt_pkt *pkt);
static void client_on_barrier(struct pgt_conn *conn);
static void client_on_close(struct pgt_conn *conn, const char *reason, bool protocol_error);
static struct pgt_conn *client_peer(struct pgt_conn *conn);
static void client_on_tls_ready(struct pgt_conn *conn);

static const struct conn_ops client_ops = {
    .on_packet = client_on_packet,
    .on_barrier = client_on_barrier,
    .on_close = client_on_close,
    .peer = client_peer,
    .on_connected = NULL,
    .on_tls_ready = client_on_tls_ready,
};

static void client_on_tls_ready(struct pgt_conn *conn)
{
	struct pgt_client *c = (struct pgt_client *)conn;
	if (log_enabled(PGT_LOG_DEBUG)) {
		char d[96];
		tls_describe(conn, d, sizeof(d));
		client_log(c, PGT_LOG_DEBUG, "TLS established: %s", d);
	}
}

/* The tenant a TLS server name names: the part before tenant_sni_suffix,
 * lower-cased (host names are case-insensitive); "" if none. */
static void sni_tenant(const struct pgt_client *c, char *out, size_t outlen)
{
	const char *sni = tls_server_name(&c->conn);
	const char *suffix = pgt.cfg->tenant_sni_suffix;
	out[0] = '\0';
	if (!sni || !suffix[0])
		return;
	size_t n = strlen(sni), sl = strlen(suffix);
	if (n <= sl || strcasecmp(sni + n - sl, suffix) != 0)
		return;
	n -= sl;
	if (n >= outlen)
		n = outlen - 1; /* longer than any id: the pattern refuses it */
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)sni[i]);
	out[n] = '\0';
}

/* client_tls_sslmode at startup: TLS required, client certificate
 * required and its CN checked.  Unix sockets are local: exempt. */
static bool check_tls(struct pgt_client *c, const char *user)
{
	int mode = pgt.cfg->client_tls_sslmode;
	if (mode < PGT_SSL_REQUIRE || c->conn.addr.sa.sa_family == AF_UNIX)
		return true;
	if (!c->conn.ssl) {
		metrics_refused(REFUSAL_TLS);
		client_fail(c, "28000",
		            "TLS required: client_tls_sslmode is %s; connect with sslmode=require",
		            config_sslmode_name(mode));
		return false;
	}
	if (mode < PGT_SSL_VERIFY_CA)
		return true;
	char cn[256];
	if (!tls_peer_cn(&c->conn, cn, sizeof(cn))) {
		metrics_refused(REFUSAL_TLS);
		client_fail(c, "28000", "connection requires a valid client certificate");
		return false;
	}
	if (mode == PGT_SSL_VERIFY_FULL && strcmp(cn, user) != 0) {
		metrics_refused(REFUSAL_TLS);
		client_fail(
		    c, "28000",
		    "certificate authentication failed for user \"%s\": the certificate's CN is \"%s\"", user,
		    cn);
		return false;
	}
	return true;
}

const char *client_state_name(const struct pgt_client *c)
{
	switch (c->state) {
	case CL_LOGIN:
	case CL_WELCOME:
		return "login";
	case CL_ACTIVE:
		return c->throttled ? "waiting" : "active";
	case CL_ADMIN:
		return "active";
	case CL_WAITING:
		return "waiting";
	default:
		return "dead";
	}
}

void client_log(const struct pgt_client *c, int level, const char *fmt, ...)
{
	if (!log_enabled(level) && level > PGT_LOG_ERROR)
		return;
	char prefix[512], addr[64];
	int port;
	sbuf_addr_str(&c->conn.addr, addr, sizeof(addr), &port);
	snprintf(prefix, sizeof(prefix), "C-%llu %s/%s@%s:%d%s%s: ", (unsigned long long)c->conn.id,
	         c->dbname ? c->dbname : "(nodb)", c->user ? c->user : "(nouser)", addr, port,
	         c->pool && c->pool->tenant[0] ? " tenant=" : "", c->pool ? c->pool->tenant : "");
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, prefix, fmt, ap);
	va_end(ap);
}

/* Silent this long, an unauthenticated connection may make room for a new one. */
#define LOGIN_EVICT_SILENCE USEC_PER_SEC

/* c authenticated or is going away: it no longer counts against the caps
 * on unauthenticated connections. */
static void login_uncount(struct pgt_client *c)
{
	struct client_login *l = c->login;
	if (!l || !l->counted)
		return;
	l->counted = false;
	pgt.nlogin--;
	if (l->addr)
		l->addr->nlogin--;
	addr_state_put(l->addr);
	l->addr = NULL;
}

struct addr_state *client_login_addr(const struct pgt_client *c)
{
	return c->login ? c->login->addr : NULL;
}

/*
 * Over max_login_clients (addr == NULL) or over an address's share of it:
 * close the unauthenticated connection (of that address) that has been
 * silent longest, if it has been silent a while.  Silent sockets thus cannot
 * hold the places of clients that really log in, while a burst of real
 * logins (all of them talking) is never cut short or refused.  Returns
 * false if nothing could be closed.
 */
bool client_evict_silent_login(const struct addr_state *addr)
{
	usec_t now = loop_now();
	struct list *i;
	list_for_each (i, &login_clients) {
		struct pgt_client *o = container_of(i, struct pgt_client, node);
		if (!o->login || !o->login->counted || (addr && o->login->addr != addr))
			continue;
		/* the list is in order of last activity: o is the quietest one */
		if (now - o->login->touch < LOGIN_EVICT_SILENCE)
			return false;
		client_fail(o, "08P01", "login too slow: closed to make room for another connection (%s)",
		            addr ? "per-address share of max_login_clients" : "max_login_clients");
		return true;
	}
	return false;
}

void client_accept(int fd, const union pgt_addr *addr)
{
	struct pgt_client *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	janitor_wake(); /* client_login_timeout */
	sbuf_init(&c->conn, fd, CONN_CLIENT, &client_ops);
	c->conn.addr = *addr;
	c->conn.startup_mode = true;
	c->conn.tls_peek = addr->sa.sa_family != AF_UNIX && tls_client_available();
	c->state = CL_LOGIN;
	struct client_login *l = c->login = slab_alloc(&login_slab);
	if (!l) {
		free(c);
		close(fd);
		return;
	}
	l->touch = loop_now();
	l->addr = addr_state_get(addr);
	l->counted = true;
	pgt.nlogin++;
	if (l->addr)
		l->addr->nlogin++;
	list_append(&login_clients, &c->node);
	list_append(&pgt_all_clients, &c->all_node);
	pgt.nclients++;
	client_log(c, PGT_LOG_DEBUG, "new connection");
	int cap = config_max_login_clients(pgt.cfg);
	if (pgt.nlogin > cap)
		client_evict_silent_login(NULL);
	if (l->addr && l->addr->nlogin > PGT_MAX(1, cap / 2))
		client_evict_silent_login(l->addr);
	sbuf_update_events(&c->conn);
}

/* Per-state client counts of the pool, so that metrics never walk lists. */
static int *pool_counter(struct pgt_client *c, enum client_state st)
{
	if (!c->pool)
		return NULL;
	switch (st) {
	case CL_ACTIVE:
		return &c->pool->nactive;
	case CL_WAITING:
		return &c->pool->nwaiting;
	case CL_WELCOME:
		return &c->pool->nwelcome;
	default:
		return NULL;
	}
}

void client_set_state(struct pgt_client *c, enum client_state st, struct list *lst)
{
	int *old = pool_counter(c, c->state), *new = pool_counter(c, st);
	if (old)
		(*old)--;
	if (new)
		(*new)++;
	list_del(&c->node);
	c->state = st;
	list_append(lst, &c->node);
	if ((st == CL_WAITING || st == CL_WELCOME) && c->pool)
		pool_note_waiting(c->pool);
}

void client_shutdown(void)
{
	/* secrets of logins in progress are wiped; they live in slab pages,
	 * which leak checkers do not scan either */
	struct list *i;
	list_for_each (i, &pgt_all_clients) {
		struct pgt_client *c = container_of(i, struct pgt_client, all_node);
		if (c->login)
			auth_clear(&c->login->auth);
		if (c->logged_in && audit_enabled)
			audit_disconnect(c, "pgtenant shut down"); /* its connection ends with the process */
	}
}

void client_close(struct pgt_client *c, const char *reason)
{
	if (c->state == CL_DEAD)
		return;
	if (reason)
		client_log(c, PGT_LOG_INFO, "closing because: %s", reason);
	else
		client_log(c, PGT_LOG_DEBUG, "closing");
	if (c->logged_in && audit_enabled)
		audit_disconnect(c, reason);
	struct pgt_server *s = c->server;
	int *counter = pool_counter(c, c->state);
	if (counter)
		(*counter)--;
	c->state = CL_DEAD;
	list_del(&c->node);
	list_del(&c->all_node);
	list_append(&dead_clients, &c->node);
	pgt.nclients--;
	session_unpin(c);
	login_uncount(c);
	rate_forget_client(c); /* before its tenant is let go */
	if (c->tstate) {
		tenant_state_client_gone(c->tstate);
		c->tstate = NULL;
	}
	if (c->user_counted) {
		struct pgt_user_state *u = user_state_find(c->user);
		c->user_counted = false;
		u->nclients--;
		user_state_release(u);
	}
	registry_forget_client(c);
	if (c->last_server) {
		if (c->last_server->affine == c)
			c->last_server->affine = NULL;
		c->last_server = NULL;
	}
	if (s) {
		/* what was parsed for the server goes out (a Terminate may follow
		 * the last messages in the same read), so that the server's
		 * bookkeeping matches what it really got */
		sbuf_flush_parsed(&c->conn);
		s = c->server; /* the flush may have lost the server */
	}
	bool client_clean = c->conn.pkt_remain == 0 && c->conn.send_pos == c->conn.parse_pos;
	sbuf_close(&c->conn);
	if (s) {
		c->server = NULL;
		s->client = NULL;
		if (!client_clean)
			s->cut = true; /* a message reached the server in part: it cannot go on */
		server_release(s);
	}
	if (c->login)
		auth_clear(&c->login->auth);
}

void client_fail(struct pgt_client *c, const char *sqlstate, const char *fmt, ...)
{
	if (c->state == CL_DEAD)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	client_log(c, PGT_LOG_INFO, "closing because: %s (%s)", msg, sqlstate);
	if (audit_enabled)
		audit_fail(c, sqlstate, msg);
	c->logged_in = false; /* one event per end: not a second one from client_close */
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_error(&b, "FATAL", sqlstate, msg);
	/* best effort: the client may be gone already.  Not in the middle of a
	 * server message either (a large DataRow or CopyData half forwarded):
	 * the client would read the error as that message's data; it only
	 * sees the connection close then, as from PgBouncer. */
	if (!c->conn.dead && !c->conn.outq && !(c->server && sbuf_mid_message(&c->server->conn))) {
		ssize_t w = c->conn.ssl ? tls_send(&c->conn, b.data, b.len)
		                        : send(c->conn.fd, b.data, b.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0)
			c->conn.bytes_out += (uint64_t)w;
		/* close() with unread input makes the kernel send RST, and an RST can
		 * destroy our error message in the client's receive queue: read what
		 * is pending (bounded) so the close is an orderly FIN */
		uint8_t junk[4096];
		for (int i = 0; i < 16; i++)
			if (recv(c->conn.fd, junk, sizeof(junk), MSG_DONTWAIT) <= 0)
				break;
	}
	pktbuf_free(&b);
	client_close(c, NULL);
}

bool client_send_error(struct pgt_client *c, const char *sqlstate, const char *msg)
{
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_error(&b, "ERROR", sqlstate, msg);
	bool ok = sbuf_send_raw(&c->conn, b.data, b.len);
	pktbuf_free(&b);
	return ok;
}

const struct client_sync *client_sync_build(struct pgt_client *c, const struct pgt_vars *base)
{
	if (!c->sync)
		c->sync = xcalloc(2, sizeof(*c->sync));
	struct client_sync *cs = &c->sync[base->n > 0];
	struct pktbuf b;
	pktbuf_init(&b);
	free(cs->msg);
	cs->msg = NULL;
	cs->len = 0;
	/* a shared pool's connection gets the tenant's pin first */
	int sets =
	    vars_build_sync(c->pool->shared ? &c->pool->pin : NULL, &c->vars, &c->pool->welcome, base, &b);
	if (sets) {
		cs->msg = xmalloc(b.len);
		memcpy(cs->msg, b.data, b.len);
		cs->len = (uint32_t)b.len;
	}
	cs->sets = (uint16_t)sets;
	pktbuf_free(&b);
	cs->valid = true;
	cs->hash = c->vars.hash;
	cs->base = base->hash ^ c->pool->pin.hash;
	return cs;
}

void client_server_lost(struct pgt_client *c, const char *reason, bool told)
{
	if (told) {
		/* the client has the server's own FATAL (pg_terminate_backend,
		 * shutdown): then EOF, as from PostgreSQL, not a second error */
		sbuf_flush_parsed(&c->conn);
		client_close(c, reason);
		return;
	}
	client_fail(c, "08006", "server connection failed: %s", reason);
}

void client_free_dead(void)
{
	struct list *i, *tmp;
	list_for_each_safe (i, tmp, &dead_clients) {
		struct pgt_client *c = container_of(i, struct pgt_client, node);
		list_del(&c->node);
		if (c->login) {
			auth_clear(&c->login->auth);
			slab_free(&login_slab, c->login);
		}
		vars_free(&c->vars);
		ps_client_free(c);
		session_client_free(c);
		if (c->sync) {
			free(c->sync[0].msg);
			free(c->sync[1].msg);
			free(c->sync);
		}
		free(c->user);
		free(c->server_user);
		free(c->dbname);
		free(c->tenant);
		free(c->admin_pending);
		free(c->audit_jwt);
		free(c);
	}
}

/* ---- login ---- */

static bool send_negotiate(struct pgt_client *c, const struct proto_startup *st)
{
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_start(&b, 'v');
	pktbuf_put_u32(&b, 0); /* newest minor version we support: 3.0 */
	uint32_t n = 0;
	for (int i = 0; i < st->nparams; i++)
		if (strncmp(st->params[i].name, "_pq_.", 5) == 0)
			n++;
	pktbuf_put_u32(&b, n);
	for (int i = 0; i < st->nparams; i++)
		if (strncmp(st->params[i].name, "_pq_.", 5) == 0)
			pktbuf_put_str(&b, st->params[i].name);
	pktbuf_finish(&b);
	bool ok = sbuf_send_raw(&c->conn, b.data, b.len);
	pktbuf_free(&b);
	return ok;
}

static void handle_cancel(struct pgt_client *self, uint32_t pid, uint32_t key)
{
	struct list *i;
	list_for_each (i, &pgt_all_clients) {
		struct pgt_client *c = container_of(i, struct pgt_client, all_node);
		if (c == self || c->cancel_pid != pid || !util_secure_eq(&c->cancel_key, &key, 4))
			continue;
		if (c->server) {
			client_log(c, PGT_LOG_INFO, "cancel request forwarded to S-%llu",
			           (unsigned long long)c->server->conn.id);
			server_cancel(c->server);
		} else {
			client_log(c, PGT_LOG_DEBUG, "cancel request, but no server is linked");
		}
		return;
	}
	log_debug("cancel request for unknown key");
}

/* Find the tenant before authentication: only the format is checked here,
 * so that an unauthenticated client cannot probe which tenants exist. */
static void refuse_no_tenant(struct pgt_client *c)
{
	const struct pgt_config *cfg = pgt.cfg;
	metrics_refused(REFUSAL_NO_TENANT);
	client_fail(c, "08004", "no tenant given: connect as user%stenant, or pass -c %s=<tenant> in options",
	            cfg->tenant_user_separator, cfg->tenant_parameter);
}

/* Can a token name the tenant of this user's login (jwt in tenant_sources,
 * and JWT authentication globally, for some database or for the user)? */
static bool jwt_names_tenants(const struct pgt_config *cfg, const char *user)
{
	if (!util_list_contains(cfg->tenant_sources, "jwt"))
		return false;
	if (cfg->auth_type == PGT_AUTH_JWT)
		return true;
	const struct pgt_user_conf *uc = config_find_user(cfg, user);
	if (uc && uc->auth_type == PGT_AUTH_JWT)
		return true;
	for (int i = 0; i < cfg->ndbs; i++)
		if (cfg->dbs[i].auth_type == PGT_AUTH_JWT)
			return true;
	return false;
}

int client_auth_type(const struct pgt_client *c)
{
	const struct pgt_config *cfg = pgt.cfg;
	const struct pgt_database *db = c->login ? c->login->db : NULL;
	/* the user's [users] entry is more specific than the database entry */
	const struct pgt_user_conf *uc = config_find_user(cfg, c->user);
	int t = uc && uc->auth_type >= 0   ? uc->auth_type
	        : db && db->auth_type >= 0 ? db->auth_type
	                                   : cfg->auth_type;
	/* the admin console's users are in auth_file, never behind a token */
	if (t == PGT_AUTH_JWT && !db)
		t = PGT_AUTH_SCRAM;
	return t;
}

int client_jwt_identity(struct pgt_client *c, const struct jwt_result *r, enum jwt_reason *why, char *text,
                        size_t textlen)
{
	const struct pgt_config *cfg = pgt.cfg;
	bool jwt_source = util_list_contains(cfg->tenant_sources, "jwt") && cfg->jwt_tenant_claim[0];
	if (jwt_source && !r->has_tenant) {
		/* a token that should name the tenant and does not: the tenant the
		 * client asked for elsewhere would rest on nothing the issuer said */
		*why = JWT_MISSING_TENANT;
		snprintf(text, textlen, "missing tenant claim %s", cfg->jwt_tenant_claim);
		return 1;
	}
	if (r->has_tenant) {
		struct tenant_request req = {.jwt = r->tenant};
		struct tenant_result res;
		tenant_identify(cfg, &req, &res);
		if (res.status == TENANT_INVALID) {
			metrics_refused(REFUSAL_INVALID_TENANT);
			client_fail(c, "08004",
			            "invalid tenant id (from jwt): it must match tenant_id_pattern %s",
			            cfg->tenant_id_pattern);
			return -1;
		}
		if (res.status == TENANT_FOUND) {
			if (c->tenant && strcmp(c->tenant, res.id) != 0) {
				metrics_refused(REFUSAL_INVALID_TENANT);
				client_fail(c, "08004",
				            "conflicting tenant: the startup packet names \"%s\" but jwt "
				            "names \"%s\"",
				            c->tenant, res.id);
				return -1;
			}
			if (!c->tenant) {
				c->tenant = xstrdup(res.id);
				c->tenant_source = audit_source_code(res.source);
			}
		}
	}
	if (!c->tenant && cfg->tenant_required) {
		if (util_list_contains(cfg->tenant_sources, "jwt")) {
			*why = JWT_MISSING_TENANT;
			snprintf(text, textlen, "missing tenant claim %s", cfg->jwt_tenant_claim);
			return 1;
		}
		refuse_no_tenant(c);
		return -1;
	}
	const struct pgt_tenant_conf *tc = c->tenant ? config_find_tenant(cfg, c->tenant) : NULL;
	if (tc && tc->jwt_issuer && strcmp(tc->jwt_issuer, r->iss) != 0) {
		/* whoever runs another tenant's issuer cannot mint tokens for this one */
		*why = JWT_ISSUER_NOT_ALLOWED;
		snprintf(text, textlen, "issuer not allowed for tenant %s", c->tenant);
		return 1;
	}
	if (cfg->jwt_user_claim[0] && (!r->has_user || strcmp(r->user, c->user) != 0)) {
		*why = JWT_USER_MISMATCH;
		snprintf(text, textlen, "user does not match the token's %s", cfg->jwt_user_claim);
		return 1;
	}
	if (cfg->jwt_enforce_expiry && r->exp > 0) {
		int64_t until = r->exp + cfg->jwt_leeway / USEC_PER_SEC;
		c->jwt_expiry = until > 0 && until < UINT32_MAX ? (uint32_t)until : UINT32_MAX;
	}
	if (cfg->jwt_user_map[0]) {
		char mapped[64];
		const char *v = r->has_user ? r->user : r->sub;
		if (jwt_map_user(cfg->jwt_user_map, v, mapped, sizeof(mapped))) {
			if (!config_role_name_valid(mapped)) {
				client_fail(c, "28000", "jwt_user_map gives an invalid role name");
				return -1;
			}
			free(c->server_user);
			c->server_user = xstrdup(mapped);
		}
	}
	if (audit_enabled)
		audit_note_jwt(c, r->iss, r->sub);
	return 0;
}

static bool identify_tenant(struct pgt_client *c, const struct proto_startup *st)
{
	const struct pgt_config *cfg = pgt.cfg;
	char option[TENANT_ID_MAX + 1] = "";
	const char *opt = vars_get(&c->vars, cfg->tenant_parameter);
	bool have_option = opt != NULL;
	if (opt) {
		/* -c tenant=X is for pgtenant, not for the server */
		snprintf(option, sizeof(option), "%s", strlen(opt) < sizeof(option) ? opt : "\x01too long");
		vars_del(&c->vars, cfg->tenant_parameter);
	}
	char sni[TENANT_ID_MAX + 1];
	sni_tenant(c, sni, sizeof(sni));
	struct tenant_request req = {proto_startup_get(st, cfg->tenant_parameter),
	                             have_option ? option : NULL, c->user, sni[0] ? sni : NULL, NULL};
	struct tenant_result res;
	tenant_identify(cfg, &req, &res);
	switch (res.status) {
	case TENANT_INVALID:
		metrics_refused(REFUSAL_INVALID_TENANT);
		client_fail(c, "08004", "invalid tenant id (from %s): it must match tenant_id_pattern %s",
		            res.bad_source, cfg->tenant_id_pattern);
		return false;
	case TENANT_CONFLICT:
		metrics_refused(REFUSAL_INVALID_TENANT);
		client_fail(c, "08004", "conflicting tenant: %s names \"%s\" but %s names \"%s\"", res.source,
		            res.id, res.other_source, res.other);
		return false;
	case TENANT_NONE:
		/* a token may name it: decided once the database (and so the
		 * authentication) is known, or after the token */
		if (cfg->tenant_required && !jwt_names_tenants(cfg, c->user)) {
			refuse_no_tenant(c);
			return false;
		}
		return true;
	case TENANT_FOUND:
		c->tenant = xstrdup(res.id);
		c->tenant_source = audit_source_code(res.source);
		c->user[res.user_len] = '\0';
		if (!c->user[0]) {
			client_fail(c, "08P01",
			            "protocol violation: empty user name before the tenant suffix");
			return false;
		}
		return true;
	}
	return true;
}

static bool handle_startup(struct pgt_client *c, const struct proto_startup *st)
{
	const struct pgt_config *cfg = pgt.cfg;
	const char *reason = NULL;
	c->conn.startup_mode = false;
	const char *user = proto_startup_get(st, "user");
	const char *db = proto_startup_get(st, "database");
	if (!user || !*user) {
		client_fail(c, "08P01", "protocol violation: no user name in startup packet");
		return false;
	}
	c->user = xstrdup(user);
	if (!check_tls(c, user))
		return false;
	if ((st->code & 0xffff) != 0 || proto_startup_get(st, "_pq_.") != NULL) {
		if (!send_negotiate(c, st)) {
			client_close(c, "send failed");
			return false;
		}
	} else {
		for (int i = 0; i < st->nparams; i++) {
			if (strncmp(st->params[i].name, "_pq_.", 5) == 0) {
				if (!send_negotiate(c, st)) {
					client_close(c, "send failed");
					return false;
				}
				break;
			}
		}
	}
	if (pgt.shutting_down) {
		client_fail(c, "57P03", "pgtenant is shutting down");
		return false;
	}
	bool admin = admin_is_admin_db(db && *db ? db : user);
	for (int i = 0; i < st->nparams; i++) {
		const char *k = st->params[i].name, *v = st->params[i].value;
		if (strcmp(k, "user") == 0 || strcmp(k, "database") == 0 || strncmp(k, "_pq_.", 5) == 0)
			continue;
		if (strcmp(k, "replication") == 0 && !admin) {
			/* passed through in session mode, on a connection of its own
			 * (PostgreSQL's spellings of a boolean, or "database") */
			bool on = false;
			if (strcmp(v, "database") == 0) {
				c->replication = 'd';
			} else if (util_parse_bool(v, &on)) {
				c->replication = on ? 'p' : 0;
			} else {
				client_fail(c, "22023", "invalid value for parameter \"replication\": \"%s\"",
				            v);
				return false;
			}
			continue;
		}
		if (admin || util_list_contains(cfg->ignore_startup_parameters, k) ||
		    strcmp(k, cfg->tenant_parameter) == 0)
			continue;
		if (strcmp(k, "options") == 0) {
			struct vars_watch watch = {cfg->tenant_parameter, false, ""};
			if (!vars_parse_options(v, &c->vars, &watch, &reason)) {
				if (watch.conflict) {
					metrics_refused(REFUSAL_INVALID_TENANT);
					client_fail(c, "08004",
					            "conflicting tenant: options names \"%s\" and \"%s\"",
					            vars_get(&c->vars, cfg->tenant_parameter), watch.other);
					return false;
				}
				client_fail(c, "08P01", "unsupported startup parameter in options: %s",
				            reason);
				return false;
			}
			continue;
		}
		if (!vars_valid_name(k)) {
			client_fail(c, "08P01", "unsupported startup parameter: %s", k);
			return false;
		}
		vars_set(&c->vars, k, v);
	}
	/* the encoding under PostgreSQL's own name, whatever the client's
	 * spelling ("utf8", "Unicode", "euc-jp"): it is what the server reports
	 * in ParameterStatus, and what a server connection's value is compared
	 * with before a SET is sent */
	const char *enc = vars_get(&c->vars, "client_encoding");
	const char *enc_name = enc ? vars_encoding_name(enc) : NULL;
	if (enc_name)
		vars_set(&c->vars, "client_encoding", enc_name);
	if (!admin && !identify_tenant(c, st))
		return false;
	/* PostgreSQL's default database is the user name (without the tenant suffix) */
	c->dbname = xstrdup(db && *db ? db : c->user);
	if (!admin) {
		c->login->db = config_find_db(cfg, c->dbname);
		if (!c->login->db) {
			client_fail(c, "3D000", "no such database: %s", c->dbname);
			return false;
		}
		if (!c->tenant && cfg->tenant_required && client_auth_type(c) != PGT_AUTH_JWT) {
			refuse_no_tenant(c);
			return false;
		}
	}
	if (!util_random(&c->cancel_pid, 4) || !util_random(&c->cancel_key, 4)) {
		client_fail(c, "58000", "could not generate a cancel key");
		return false;
	}
	return auth_start(c, &c->login->auth);
}

static void send_welcome(struct pgt_client *c);

/* c is in (a welcome or the admin console's answer went out): from now on
 * its end is audited as a disconnect. */
static void logged_in(struct pgt_client *c)
{
	c->logged_in = true;
	if (audit_enabled)
		audit_login(c);
}

/* The method of the exchange a password message continues, for the audit
 * log; the message that completes it decides. */
static void note_auth_method(struct pgt_client *c, enum auth_step step)
{
	switch (step) {
	case AUTH_MD5_WAIT:
		c->auth_method = AUDIT_AUTH_MD5;
		break;
	case AUTH_SCRAM_INIT_WAIT:
	case AUTH_SCRAM_FINAL_WAIT:
		c->auth_method = AUDIT_AUTH_SCRAM;
		break;
	case AUTH_JWT_WAIT:
		c->auth_method = AUDIT_AUTH_JWT;
		break;
	default:
		break;
	}
}

void client_welcome(struct pgt_client *c)
{
	struct pgt_pool *pool = c->pool;
	if (pool_mode(pool) == PGT_POOL_SESSION && !pool->internal) {
		/* session mode: the client's server connection first, so that
		 * BackendKeyData carries its backend's real pid (pg_backend_pid(),
		 * NOTIFY sender pids and pg_terminate_backend agree with it; a
		 * cancel still goes through pgtenant's own key) */
		c->welcome_pending = true;
		client_set_state(c, CL_ACTIVE, &pool->active_clients);
		pool_assign(pool, c); /* client_linked() sends the welcome */
		return;
	}
	send_welcome(c);
}

static void send_welcome(struct pgt_client *c)
{
	struct pgt_pool *pool = c->pool;
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_auth(&b, 0, NULL, 0);
	for (int i = 0; i < pool->welcome.n; i++) {
		const char *k = pool->welcome.v[i].key;
		const char *v = vars_get(&c->vars, k);
		pktbuf_param_status(&b, k, v ? v : pool->welcome.v[i].value);
	}
	pktbuf_start(&b, 'K');
	pktbuf_put_u32(&b, c->cancel_pid);
	pktbuf_put_u32(&b, c->cancel_key);
	pktbuf_finish(&b);
	pktbuf_ready(&b, 'I');
	if (c->state != CL_ACTIVE)
		client_set_state(c, CL_ACTIVE, &pool->active_clients);
	bool ok = sbuf_send_raw(&c->conn, b.data, b.len);
	pktbuf_free(&b);
	if (!ok) {
		client_close(c, "send failed");
		return;
	}
	client_log(c, PGT_LOG_DEBUG, "login ok");
	logged_in(c);
	if (c->conn.hold)
		sbuf_resume(&c->conn);
}

static bool login_continue(struct pgt_client *c);

/* A startup parameter or -c option of a tenant client that would set what
 * the tenant's connections are pinned to; NULL if none. */
static const char *pinned_parameter(const struct pgt_client *c, const struct pgt_tenant_conf *tc)
{
	const struct pgt_config *cfg = pgt.cfg;
	const char *pins[] = {"search_path", cfg->tenant_setting[0] ? cfg->tenant_setting : NULL,
	                      tc && tc->statement_timeout ? "statement_timeout" : NULL};
	for (int i = 0; i < c->vars.n; i++)
		for (size_t j = 0; j < PGT_ARRAY_SIZE(pins); j++)
			if (pins[j] && strcasecmp(c->vars.v[i].key, pins[j]) == 0)
				return pins[j];
	return NULL;
}

void client_registry_done(struct pgt_client *c)
{
	if (c->state == CL_LOGIN)
		login_continue(c);
}

static bool login_done(struct pgt_client *c);

const struct pgt_database *client_login_db(const struct pgt_client *c)
{
	return c->login ? c->login->db : NULL;
}

void client_config_changed(void)
{
	struct list *i, *tmp;
	list_for_each_safe (i, tmp, &login_clients) {
		struct pgt_client *c = container_of(i, struct pgt_client, node);
		if (!c->login || !c->login->db || c->conn.dead)
			continue;
		c->login->db = config_find_db(pgt.cfg, c->dbname);
		if (!c->login->db)
			client_fail(c, "3D000", "no such database: %s", c->dbname);
	}
}

void client_auth_resumed(struct pgt_client *c)
{
	if (c->login && c->login->auth.step == AUTH_DONE && !c->conn.dead)
		login_done(c);
}

/* max_user_client_connections, PgBouncer's: every authenticated client of
 * the login user counts (its state is found by name again at close); the
 * one beyond the cap is refused, but admin_users on the admin console are
 * let in over it, so that a DBA can always look. */
static bool user_admit(struct pgt_client *c)
{
	const struct pgt_config *cfg = pgt.cfg;
	struct pgt_user_state *u = user_state_hold(c->user);
	u->nclients++;
	c->user_counted = true;
	const struct pgt_user_conf *uc = config_find_user(cfg, c->user);
	int max = uc && uc->max_user_client_connections > 0 ? uc->max_user_client_connections : 0;
	if (max == 0 || u->nclients <= max ||
	    (admin_is_admin_db(c->dbname) && util_list_contains(cfg->admin_users, c->user)))
		return true;
	metrics_refused(REFUSAL_USER_QUOTA);
	client_fail(c, "53300", "client connections exceeded (max_user_client_connections)");
	return false;
}

static bool login_done(struct pgt_client *c)
{
	login_uncount(c);
	auth_clear(&c->login->auth);
	slab_free(&login_slab, c->login);
	c->login = NULL;
	/* only authenticated clients count against max_client_conn, so that
	 * connections that never log in cannot lock out those that do */
	if (pgt.nclients - pgt.nlogin > pgt.cfg->max_client_conn) {
		client_fail(c, "53300", "no more connections allowed (max_client_conn)");
		return false;
	}
	if (!user_admit(c))
		return false;
	if (admin_is_admin_db(c->dbname)) {
		/* membership is told only to a client that proved who it is */
		const struct pgt_config *cfg = pgt.cfg;
		c->is_admin_user = util_list_contains(cfg->admin_users, c->user);
		if (!c->is_admin_user && !util_list_contains(cfg->stats_users, c->user)) {
			client_fail(c, "28000", "not allowed to connect to the admin console");
			return false;
		}
		client_set_state(c, CL_ADMIN, &admin_clients);
		if (!admin_welcome(c))
			return false;
		logged_in(c);
		return true;
	}
	return login_continue(c);
}

/* After authentication (and after the tenant registry answered, if asked). */
static bool login_continue(struct pgt_client *c)
{
	const struct pgt_config *cfg = pgt.cfg;
	const struct pgt_database *db;
	/* tenant checks come after authentication, so that they reveal nothing
	 * to a client that does not know a password */
	const struct pgt_tenant_conf *tc = NULL;
	const char *dbname = c->dbname;
	if (c->tenant) {
		tc = config_find_tenant(cfg, c->tenant);
		/* a tenant's run-time state exists once it is admitted (or asked
		 * about): a refused id leaves nothing behind */
		struct pgt_tenant_state *ts = tenant_state_find(c->tenant);
		if (!tc && cfg->tenant_query[0] && !(ts && registry_fresh(ts)) && !c->registry_asked) {
			db = config_find_db(cfg, dbname);
			if (!db) {
				client_fail(c, "3D000", "no such database: %s", dbname);
				return false;
			}
			c->registry_asked = true;
			const char *forced = secretfile_db_user(cfg, db);
			registry_request(c, tenant_state_get(c->tenant), dbname, db,
			                 forced ? forced : c->user);
			return !c->conn.dead;
		}
		bool from_registry = !tc && ts && ts->reg_known && ts->reg_found;
		if (!tc && !from_registry && cfg->unknown_tenant == PGT_UNKNOWN_REJECT) {
			metrics_refused(REFUSAL_UNKNOWN_TENANT);
			client_fail(c, "08004", "unknown tenant \"%s\"", c->tenant);
			return false;
		}
		if ((tc && tc->disabled) || (from_registry && !ts->reg_active) ||
		    (ts && ts->admin_disabled)) {
			metrics_refused(REFUSAL_TENANT_DISABLED);
			client_fail(c, "08004", "tenant disabled: \"%s\"", c->tenant);
			return false;
		}
		const char *pinned = pinned_parameter(c, tc);
		if (pinned) {
			metrics_refused(REFUSAL_INVALID_TENANT);
			client_fail(c, "08004",
			            "cannot override %s: it is pinned for tenant \"%s\" (remove it from the "
			            "startup parameters and options)",
			            pinned, c->tenant);
			return false;
		}
		int max = cfg->tenant_max_client_conn;
		if (tc && tc->max_client_conn >= 0)
			max = tc->max_client_conn;
		else if (from_registry && ts->reg_max_client_conn >= 0)
			max = ts->reg_max_client_conn;
		if ((ts ? ts->nclients : 0) >= max) {
			metrics_refused(REFUSAL_TENANT_QUOTA);
			client_fail(c, "53300", "too many connections for tenant \"%s\" (max_client_conn %d)",
			            c->tenant, max);
			return false;
		}
		ts = tenant_state_get(c->tenant);
		tenant_state_client_added(ts);
		c->tstate = ts;
		if (tc && tc->database)
			dbname = tc->database; /* the tenant's dedicated backend */
	}
	/* the config may have been reloaded during authentication */
	db = config_find_db(cfg, dbname);
	if (!db) {
		client_fail(c, "3D000", "no such database: %s", dbname);
		return false;
	}
	/* the server role: the tenant's own (tenant_server_user, server_user=),
	 * else the entry's user (its password file's username, else user=),
	 * else the client's */
	const char *server_user = secretfile_db_user(cfg, db);
	if (!server_user)
		server_user = c->server_user ? c->server_user : c->user;
	char role[128];
	bool tenant_role = false;
	if (c->tenant && ((tc && tc->server_user) || cfg->tenant_server_user[0])) {
		if (tc && tc->server_user)
			snprintf(role, sizeof(role), "%s", tc->server_user);
		else
			snprintf(role, sizeof(role), cfg->tenant_server_user, c->tenant);
		if (!config_role_name_valid(role)) {
			client_fail(
			    c, "08006",
			    "server connection failed: role name \"%s\" is not valid (at most 63 bytes)",
			    role);
			return false;
		}
		server_user = role;
		tenant_role = true;
	}
	struct pgt_pool *pool = pool_get(dbname, db, server_user, c->tenant ? c->tenant : "", c->replication);
	pool->tenant_role = tenant_role;
	c->pool = pool;
	if (pool->welcome_ready) {
		client_welcome(c);
		return !c->conn.dead;
	}
	if (pool_in_backoff(pool) && pool->nservers == 0) {
		client_fail(c, "08006", "server connection failed: %s", pool->last_error);
		return false;
	}
	client_set_state(c, CL_WELCOME, &pool->welcome_clients);
	c->wait_start = loop_now();
	pool_maybe_launch(pool);
	return !c->conn.dead;
}

static enum sbuf_verdict login_packet(struct pgt_client *c, struct pgt_pkt *pkt)
{
	if (c->login && c->login->counted) {
		/* keep the login list in order of activity (see client_evict_silent_login) */
		c->login->touch = loop_now();
		list_del(&c->node);
		list_append(&login_clients, &c->node);
	}
	if (!pkt->full) {
		if (pkt->type == 'p' && c->login && c->login->auth.step == AUTH_JWT_WAIT) {
			/* a token may be larger than the I/O buffer, up to its limit */
			if (pkt->total > JWT_MAX_TOKEN + 6) {
				if (!auth_jwt_too_large(c, &c->login->auth))
					return SB_GONE;
				return SB_SKIP;
			}
			pkt->grow = true;
		}
		return SB_NEED_FULL;
	}
	if (c->conn.startup_mode) {
		struct proto_startup st;
		const char *reason;
		if (!proto_parse_startup(pkt->data, pkt->total, &st, &reason)) {
			if (st.code == PROTO_CANCEL_CODE) {
				/* PostgreSQL answers no cancel request, not even a bad one */
				client_close(c, reason);
				return SB_GONE;
			}
			client_fail(c, "08P01", "protocol violation: %s", reason);
			return SB_GONE;
		}
		if (st.code == PROTO_SSL_CODE || st.code == PROTO_GSSENC_CODE) {
			if (c->conn.ssl) {
				client_fail(c, "08P01",
				            "protocol violation: SSLRequest inside a TLS session");
				return SB_GONE;
			}
			bool tls = st.code == PROTO_SSL_CODE && tls_client_available() &&
			           c->conn.addr.sa.sa_family != AF_UNIX;
			if (tls && pkt->avail > pkt->total) {
				/* whatever follows must be our handshake, not bytes a man in
				 * the middle slipped in before it (CVE-2021-23214) */
				client_fail(c, "08P01", "received unencrypted data after SSL request");
				return SB_GONE;
			}
			/* GSS encryption is not offered: 'N', and the client reads on */
			if (!sbuf_send_raw(&c->conn, tls ? "S" : "N", 1) || (tls && c->conn.outq)) {
				client_close(c, "send failed");
				return SB_GONE;
			}
			if (tls && !tls_accept(&c->conn, false)) {
				client_close(c, "cannot start TLS");
				return SB_GONE;
			}
			return SB_SKIP;
		}
		if (st.code == PROTO_CANCEL_CODE) {
			handle_cancel(c, st.cancel_pid, st.cancel_key);
			client_close(c, NULL);
			return SB_GONE;
		}
		if (st.code >> 16 != 3) {
			client_fail(c, "08P01", "protocol violation: unsupported protocol version %u.%u",
			            st.code >> 16, st.code & 0xffff);
			return SB_GONE;
		}
		if (!handle_startup(c, &st))
			return SB_GONE;
		/* trust: authenticated without an exchange */
		if (c->login->auth.step == AUTH_DONE) {
			c->auth_method = AUDIT_AUTH_TRUST;
			if (!login_done(c))
				return SB_GONE;
		}
		return c->conn.dead ? SB_GONE : SB_SKIP;
	}
	if (pkt->type == 'X') {
		client_close(c, NULL);
		return SB_GONE;
	}
	if (pkt->type != 'p' || !c->login || c->login->auth.step == AUTH_NONE) {
		client_fail(c, "08P01", "protocol violation: unexpected message type '%c' during login",
		            pkt->type >= 32 && pkt->type < 127 ? pkt->type : '?');
		return SB_GONE;
	}
	note_auth_method(c, c->login->auth.step);
	if (!auth_message(c, &c->login->auth, pkt->data + 5, pkt->total - 5))
		return SB_GONE;
	if (c->login->auth.step == AUTH_DONE && !login_done(c))
		return SB_GONE;
	return c->conn.dead ? SB_GONE : SB_SKIP;
}

/* ---- logged in ---- */

static enum sbuf_verdict active_packet(struct pgt_client *c, struct pgt_pkt *pkt)
{
	if (pkt->type == 'X') {
		client_close(c, NULL);
		return SB_GONE;
	}
	struct pgt_server *s = c->server;
	const struct pgt_tenant_state *t = c->tstate;
	if (__builtin_expect(c->jwt_expiry != 0, 0) && rate_boundary(c, s) &&
	    (uint64_t)time(NULL) > c->jwt_expiry) {
		/* its token ran out: no new transaction on it */
		jwt_refusals[JWT_EXPIRED]++;
		metrics_refused(REFUSAL_JWT_INVALID);
		client_fail(c, "28P01", "invalid token: expired");
		return SB_GONE;
	}
	if (__builtin_expect(t && t->xrate, 0) && rate_boundary(c, s) && !rate_admit(c))
		return c->conn.dead ? SB_GONE : SB_HOLD; /* queued behind its tenant's xact_rate */
	if (!s) {
		s = pool_assign(c->pool, c);
		if (c->conn.dead)
			return SB_GONE;
		if (!s)
			return SB_HOLD;
	}
	if (s->need_setup) {
		server_begin(s, c); /* the reset and c's parameters go out in front of this message */
		if (c->conn.dead)
			return SB_GONE;
	}
	if (s->reset_fence || s->checking) {
		/* nothing past the client's first Sync until the reset is
		 * confirmed; nothing of its next transaction until the session
		 * state check (session.c) decides whether it keeps this connection
		 * or gets a fresh link */
		s->client_held = true;
		return SB_HOLD;
	}
	struct pgt_pool_stats *st = &c->pool->stats;
	enum sbuf_verdict v = SB_FORWARD;
	if (s->ps_on) {
		/* transaction mode: named statements live in pgtenant (prepare.c) */
		v = ps_client_packet(c, s, pkt);
		if (v == SB_NEED_FULL || v == SB_HOLD || v == SB_GONE)
			return v;
		if (c->conn.dead)
			return SB_GONE;
	} else if (pkt->type == 'P') {
		st->client_parse_count++;
		st->server_parse_count++; /* every Parse is forwarded as is */
	} else if (pkt->type == 'B') {
		st->bind_count++;
	}
	if (s->session_track && (pkt->type == 'Q' || pkt->type == 'P')) {
		/* words no CommandComplete tag shows (session.c); a text too long
		 * to see whole may hold anything */
		if (pkt->full) {
			s->hint |= session_text_hint(pkt->data + 5, pkt->total - 5, s);
			const uint8_t *q = pkt->data + 5, *end = pkt->data + pkt->total;
			if (pkt->type == 'P' && (q = memchr(q, 0, (size_t)(end - q))) != NULL)
				q++;
			if (q && end - q > 4 && (q[0] | 0x20) == 's' && (q[2] | 0x20) == 't')
				session_note_set(s, q, (size_t)(end - q));
		} else
			s->hint |= SESSION_HINT_SET | SESSION_HINT_PIN;
	}
	switch (pkt->type) {
	case 'P':
	case 'B':
		s->sent_since_rfq = true;
		break;
	case 'Q':
	case 'S':
	case 'F':
		if (v == SB_SKIP && pkt->type != 'S' && s->ps_on && ps_server_skipping(s))
			break; /* ignored by the server until the Sync: no answer */
		s->expect_rfq++;
		s->sent_since_rfq = false;
		if (s->query_start == 0)
			s->query_start = loop_now();
		if (s->reset_pending)
			s->reset_fence = true;
		break;
	case 'd':
		break; /* COPY data belongs to the Query (or Execute) that started the COPY */
	case 'c':
	case 'f':
		s->copy_in = false; /* CopyDone/CopyFail: the COPY no longer waits for data */
		break;
	default:
		s->sent_since_rfq = true;
		break;
	}
	st->bytes_in += pkt->total;
	return v;
}

static enum sbuf_verdict client_on_packet(struct pgt_conn *conn, struct pgt_pkt *pkt)
{
	struct pgt_client *c = (struct pgt_client *)conn;
	/* max_packet_size: judged on the header alone, so a message above it
	 * is refused before any of it is buffered (startup packets have their
	 * own cap, PROTO_MAX_STARTUP) */
	if (__builtin_expect(pkt->total > (uint32_t)pgt.cfg->max_packet_size, 0) && !conn->startup_mode) {
		client_fail(c, "08P01",
		            "protocol violation: message of %u bytes exceeds max_packet_size (%d)",
		            pkt->total, pgt.cfg->max_packet_size);
		return SB_GONE;
	}
	switch (c->state) {
	case CL_LOGIN:
		return login_packet(c, pkt);
	case CL_ACTIVE:
		return active_packet(c, pkt);
	case CL_WELCOME:
	case CL_WAITING:
		return SB_HOLD;
	case CL_ADMIN:
		if (pkt->type == 'X') {
			client_close(c, NULL);
			return SB_GONE;
		}
		if (pkt->type != 'Q') {
			client_fail(
			    c, "08P01",
			    "protocol violation: the admin console supports only the simple query protocol");
			return SB_GONE;
		}
		if (c->admin_pending)
			return SB_HOLD; /* answer the previous command first */
		if (c->conn.outq)
			return sbuf_hold_until_sent(&c->conn); /* a client that does not read stops here */
		if (!pkt->full)
			return SB_NEED_FULL;
		if (pkt->total < 6 || pkt->data[pkt->total - 1] != '\0') {
			client_fail(c, "08P01", "protocol violation: malformed query message");
			return SB_GONE;
		}
		return admin_query(c, (const char *)pkt->data + 5) ? SB_SKIP : SB_GONE;
	default:
		return SB_GONE;
	}
}

void client_linked(struct pgt_client *c, struct pgt_server *s)
{
	usec_t now = loop_now();
	if (c->state == CL_WAITING) {
		c->pool->stats.wait_time += (uint64_t)(now - c->wait_start);
		c->pool->stats.wait_count++;
		client_set_state(c, CL_ACTIVE, &c->pool->active_clients);
	}
	c->pool->stats.server_assignment_count++;
	c->xact_start = now;
	if (c->welcome_pending) {
		c->welcome_pending = false;
		c->cancel_pid = s->be_pid;
		send_welcome(c);
		if (c->conn.dead)
			return;
	}
	if (c->conn.hold)
		sbuf_resume(&c->conn);
}

static void client_on_barrier(struct pgt_conn *conn)
{
	(void)conn;
}

static void client_on_close(struct pgt_conn *conn, const char *reason, bool protocol_error)
{
	struct pgt_client *c = (struct pgt_client *)conn;
	struct proto_hdr hdr;
	if (protocol_error && c->state == CL_LOGIN && conn->startup_mode && conn->buf &&
	    proto_parse_startup_header(conn->buf->data + conn->parse_pos, conn->recv_pos - conn->parse_pos,
	                               &hdr) == PROTO_BAD) {
		/* bytes that cannot start a startup packet (a Terminate, a port
		 * scanner's probe, a lying length): PostgreSQL closes without an
		 * answer, and so does pgtenant */
		client_close(c,
		             "protocol violation: invalid startup packet length (closed without an answer, "
		             "as PostgreSQL does)");
		return;
	}
	if (protocol_error)
		client_fail(c, "08P01", "protocol violation: %s", reason);
	else
		client_close(c, reason ? reason
		                       : (c->state == CL_LOGIN ? "client disconnected during login" : NULL));
}

static struct pgt_conn *client_peer(struct pgt_conn *conn)
{
	struct pgt_client *c = (struct pgt_client *)conn;
	return c->server ? &c->server->conn : NULL;
}

struct list *client_login_list(void)
{
	return &login_clients;
}
struct list *client_admin_list(void)
{
	return &admin_clients;
}
