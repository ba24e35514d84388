/*
 * Server connection state machine, and the model of how a server
 * connection is handed from one client (and tenant) to the next.
 *
 *   server_launch -> SV_LOGIN (resolve, connect, startup, authentication,
 *                    ParameterStatus, BackendKeyData, ReadyForQuery)
 *                 -> SV_IDLE <-> SV_ACTIVE (linked to one client)
 *                 -> SV_USED (no client, pgtenant still busy with it:
 *                    session-mode server_reset_query, or draining what a
 *                    vanished client left running) -> SV_IDLE, or closed
 *
 * Hand-over model.  A connection of a dedicated pool belongs to that pool
 * (database entry, server role, tenant) for its whole life, and is opened
 * with the pool's pin in its startup options (search_path, tenant_setting,
 * a tenant's statement_timeout), so that the server's own reset values are
 * the pin.  A connection of a shared pool (tenant_pool_mode = shared) is
 * opened with an empty search_path and tenant setting and belongs to the
 * reservoir of its database entry and role; it is lent to one tenant's pool
 * for one link at a time (pool.c), and the pin is the first thing of the
 * linked client's parameter Query below, so the same invariant holds with
 * "a fresh connection of the tenant" read as "a fresh shared connection
 * plus the tenant's pin".  One that served another tenant last gets DISCARD
 * ALL, never the keeping reset (`moved`).  Within the pool the invariant
 * is: every link (a transaction in transaction mode, a session in session
 * mode) starts on a connection in the state of a freshly opened connection
 * of the pool, plus the linked client's own session parameters (and
 * prepared statements: pgtenant's, and a returning client's own, see
 * affinity below).  Nothing here looks at
 * query text, so no function, DO block, Unicode-escaped name or statement
 * prepared earlier can get around it.
 *
 *  - `dirty`: a client's bytes were forwarded since the connection was
 *    opened or last reset.  A dirty connection gets the reset in front of
 *    the next client's first message: Parse/Bind/Execute of DISCARD ALL on
 *    the unnamed statement, without Sync, and a Close of that statement.  DISCARD ALL is the one statement
 *    that resets everything a session holds (session authorization and
 *    role, every setting back to its startup value, i.e. the pin, temporary
 *    objects, prepared statements, cursors, LISTEN registrations, advisory
 *    locks, sequence caches).  It may not run inside a transaction block,
 *    so the server commits it as soon as it completes (PostgreSQL since the
 *    August 2022 minor releases: 13.8, 14.5, 15): no Sync is needed, it
 *    causes no ReadyForQuery and no flush, and its four answers ('1', '2',
 *    'C', '3') arrive with the client's results.  Older servers get a simple
 *    Query instead, and the client waits for its ReadyForQuery.
 *  - If the reset fails (a cancel, or a timeout the previous client set),
 *    the server ignores everything up to the next Sync, i.e. the client's
 *    first batch, and the connection is closed with an error to the client.
 *    So that nothing the client sends after that Sync can run on an unclean
 *    connection, its later messages are held (`reset_fence`) until the
 *    reset's CommandComplete arrives; a client that waits for each answer
 *    (all but pipelining ones) never notices.
 *  - The client's session parameters (its startup parameters, and reported
 *    ones it SET itself) follow the reset as one simple Query whose text is
 *    built once per client (client.c): after a reset the connection is
 *    always at the pool's defaults.  Only parameters that can be SET are
 *    replayed (varcache.c).  Its answer is swallowed (own_rfq).
 *  - Reset, parameters and the client's first message leave in one
 *    sendmsg() (sbuf's prefix): no extra round trip, no extra syscall.
 *  - The server's answers are consumed in the order they come: the reset's,
 *    pgtenant's own queries', then the client's.
 *  - Statements pgtenant itself keeps prepared on a connection (clients'
 *    named statements in transaction mode, prepare.c) do not survive DISCARD
 *    ALL.  When a pool's transactions use enough of them (PS_KEEP_USES) the
 *    reset is instead DISCARD ALL's pieces in a BEGIN/COMMIT of their own,
 *    deallocating every statement not prepared by pgtenant through the
 *    protocol (keep_reset); otherwise DISCARD ALL, and prepare.c
 *    forgets them and prepares again what the next client binds.  The
 *    reset, its expected answers and the decision are all here (reset_msg,
 *    keep_reset, server_begin).
 *  - Affinity: a transaction-mode connection remembers the client of its
 *    last link (`affine`, and the client its `last_server`).  The client's
 *    next transaction gets that connection back if it is idle (pool.c),
 *    and if nobody has linked to it since (`keep_state`), every statement
 *    on it is pgtenant's or that client's own: the reset then keeps them
 *    all, whatever the pool's average (keep_reset(own), without the DO
 *    block that deallocates others').  Everything else is reset as always.
 *    A connection given to anyone else loses the mark.
 *  - What a client's transaction leaves that should follow the client (its
 *    SETs) or keep it on this connection (temporary tables, locks, LISTEN)
 *    is asked of the server after the transaction, before the connection
 *    is released (session.c); neither is ever needed for isolation.
 *
 * A connection goes back to its pool only when provably between
 * transactions: ReadyForQuery 'I', every client Query/Sync answered,
 * nothing of pgtenant's own outstanding, no message cut short.  When the
 * client vanishes mid-transaction the connection drains (SV_USED): a
 * CopyFail if a COPY waits for data, a Sync if extended-protocol messages
 * are unsynced, a CancelRequest if anything may be running; then it waits
 * for the answers, its slot still counted against pool_size and
 * max_db_connections.  Once idle it is closed if it was cancelled (a late
 * cancel must not hit the next client) or is inside a transaction (an idle
 * backend exits at once on EOF), else it goes back to the pool.  A client
 * message cut short cannot be completed: that connection is closed at once
 * (its backend is blocked reading the message and exits on EOF).
 *
 * What the reset cannot reach is shared by the database, not the session:
 * another backend's NOTIFY on a channel the client listens to.  Those from
 * another tenant's dedicated connections are dropped on the way
 * (notification(), notify.c).
 */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "authquery.h"
#include "awscreds.h"
#include "client.h"
#include "config.h"
#include "dns.h"
#include "hosts.h"
#include "janitor.h"
#include "log.h"
#include "lookup.h"
#include "loop.h"
#include "notify.h"
#include "pktbuf.h"
#include "pool.h"
#include "prepare.h"
#include "session.h"
#include "proto.h"
#include "rdstoken.h"
#include "scram.h"
#include "secretfile.h"
#include "tenant.h"
#include "tenant_registry.h"
#include "tls.h"
#include "userlist.h"

struct server_login {
	struct pgt_server *s;
	struct host_wait wait;   /* for names being resolved (hosts.h) */
	struct host_cands cands; /* tried in turn until one connects with the right role */
	int cur;                 /* the one being tried (index in cands) */
	bool role_query;         /* asking the server its role (no in_hot_standby reported) */
	int role;                /* what it answered */
	struct scram_client scram;
	bool scram_started;
	char *password; /* plain or md5 hash; NULL = none known */
	/* the password file's username when it differs from the pool's user
	 * (a rotation changed it since the pool was made); NULL = pool->user */
	char *user;
	uint64_t secret_version; /* of the password file's value used; 0 = not from a file */
	/* SCRAM pass-through of a user looked up with auth_query: the secret and
	 * a client's ClientKey stand in for the password (authquery.h) */
	bool passthrough;
	struct scram_secret pt_secret;
	uint8_t pt_client_key[SCRAM_KEY_LEN];
	/* server_auth = iam: the password is an RDS IAM token (awscreds.h),
	 * made when the server asks; `aws` waits for credentials meanwhile */
	bool iam;
	struct awscreds_waiter aws;
	struct pgt_server *owner;
};

static void login_free(struct server_login *l)
{
	if (!l)
		return;
	awscreds_unwait(&l->aws);
	scram_client_clear(&l->scram);
	if (l->password) {
		OPENSSL_cleanse(l->password, strlen(l->password));
		free(l->password);
	}
	free(l->user);
	OPENSSL_cleanse(l, sizeof(*l));
	free(l);
}

struct list pgt_all_servers = {&pgt_all_servers, &pgt_all_servers};
static struct list dead_servers = {&dead_servers, &dead_servers};

static enum sbuf_verdict server_on_packet(struct pgt_conn *conn, struct pgt_pkt *pkt);
static void server_on_barrier(struct pgt_conn *conn);
static void server_on_close(struct pgt_conn *conn, const char *reason, bool protocol_error);
static struct pgt_conn *server_peer(struct pgt_conn *conn);
static void server_on_connected(struct pgt_conn *conn);
static void server_on_tls_answer(struct pgt_conn *conn, char answer);
static void server_on_tls_ready(struct pgt_conn *conn);
static bool server_drain_check(struct pgt_server *s);
static bool commits_immediately(int version_num);
static bool send_copy_fail(struct pgt_server *s);

/* How long a vanished client's cancelled query may take to end before its
 * connection is closed anyway. */
#define SERVER_DRAIN_TIMEOUT (10 * USEC_PER_SEC)

static const struct conn_ops server_ops = {
    .on_packet = server_on_packet,
    .on_barrier = server_on_barrier,
    .on_close = server_on_close,
    .peer = server_peer,
    .on_connected = server_on_connected,
    .on_tls_answer = server_on_tls_answer,
    .on_tls_ready = server_on_tls_ready,
};

const char *server_state_name(const struct pgt_server *s)
{
	switch (s->state) {
	case SV_LOGIN:
		return "login";
	case SV_IDLE:
		return "idle";
	case SV_ACTIVE:
		return "active";
	case SV_USED:
		return "used";
	default:
		return "dead";
	}
}

void server_log(const struct pgt_server *s, int level, const char *fmt, ...)
{
	if (!log_enabled(level) && level > PGT_LOG_ERROR)
		return;
	char prefix[512];
	const struct pgt_pool *p = s->pool;
	snprintf(prefix, sizeof(prefix), "S-%llu %s/%s%s%s: ", (unsigned long long)s->conn.id, p->dbname,
	         p->user, p->tenant[0] ? " tenant=" : "", p->tenant);
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, prefix, fmt, ap);
	va_end(ap);
}

static void set_state(struct pgt_server *s, enum server_state st, struct list *lst)
{
	list_del(&s->node);
	s->state = st;
	list_append(lst, &s->node);
}

/* The single exit door.  is_error: log as an error and treat as a failure. */
static void server_unaffine(struct pgt_server *s)
{
	if (s->affine) {
		if (s->affine->last_server == s)
			s->affine->last_server = NULL;
		s->affine = NULL;
	}
}

static void server_close_internal(struct pgt_server *s, const char *reason, bool is_error)
{
	if (s->state == SV_DEAD)
		return;
	struct pgt_pool *pool = s->pool;
	enum server_state old = s->state;
	server_log(s, is_error ? PGT_LOG_WARNING : PGT_LOG_INFO, "closing because: %s", reason);
	struct pgt_client *c = s->client;
	s->state = SV_DEAD;
	notify_untrack(s);
	server_unaffine(s);
	list_del(&s->node);
	list_del(&s->conn_all_node);
	list_append(&dead_servers, &s->node);
	pool->nservers--;
	pool->dbstate->nservers--;
	pool->ustate->nservers--;
	if (s->shared)
		pool->res->share_total--;
	if (s->health_check) {
		s->health_check = false;
		pool->nchecking--;
	}
	if (old != SV_LOGIN)
		pool->full_until = 0; /* one of ours is gone: the server has a slot again */
	if (s->login)
		hosts_cancel_wait(&s->login->wait);
	/* c's stream stopped inside a message of s: no ErrorResponse after it */
	bool cut_out = c && sbuf_mid_message(&s->conn);
	sbuf_close(&s->conn);
	if (c) {
		s->client = NULL;
		c->server = NULL;
		client_server_lost(c, reason, s->fatal_forwarded || cut_out);
	}
	if (pool->internal)
		lookup_server_lost(s, reason);
	/* the freed slot goes to the pools queued for one first */
	pool_slot_freed(pool->dbstate);
	pool_user_slot_freed(pool->ustate);
	if (s->shared)
		pool_share_freed(pool->res);
	if (old == SV_LOGIN && is_error)
		pool_login_failed(pool, reason);
	else
		pool_maybe_launch(pool);
}

void server_fail(struct pgt_server *s, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	server_close_internal(s, msg, true);
}

void server_close(struct pgt_server *s, const char *reason)
{
	server_close_internal(s, reason, false);
}

void server_free_dead(void)
{
	struct list *i, *tmp;
	list_for_each_safe (i, tmp, &dead_servers) {
		struct pgt_server *s = container_of(i, struct pgt_server, node);
		list_del(&s->node);
		login_free(s->login);
		ps_server_free(s);
		vars_free(&s->vars);
		vars_free(&s->base);
		free(s->setup_error);
		free(s);
	}
}

/* ---- connecting ---- */

static void server_connect_addr(struct pgt_server *s, const struct sockaddr *sa, socklen_t len);
static void send_startup(struct pgt_server *s);

/* The entry's sslmode= or server_tls_sslmode. */
static int server_sslmode(const struct pgt_database *db)
{
	return db->sslmode >= 0 ? db->sslmode : pgt.cfg->server_tls_sslmode;
}

static void server_try_cand(struct pgt_server *s);

/* Connecting to one address failed: try the next, as libpq does. */
static bool server_try_next_addr(struct pgt_server *s, const char *why)
{
	struct server_login *l = s->login;
	if (!l)
		return false;
	struct pgt_hostset *hs = s->pool->dbstate->hosts;
	if (l->cur >= 0 && l->cur < l->cands.n)
		hosts_set_role(hs, &l->cands.c[l->cur].sa, HOST_ROLE_DOWN);
	if (l->cands.next >= l->cands.n) {
		if (!l->cands.saw_fallback || l->cands.fallback_pass)
			return false;
		/* prefer-standby: no standby answered; any server will do */
		l->cands.fallback_pass = true;
		l->cands.next = 0;
	}
	server_log(s, PGT_LOG_DEBUG, "%s; trying the next address", why);
	if (s->conn.ev_mask)
		event_del(&s->conn.ev);
	s->conn.ev_mask = 0;
	if (s->conn.fd >= 0)
		close(s->conn.fd);
	s->conn.fd = -1;
	s->conn.connecting = false;
	server_try_cand(s);
	return true;
}

static void server_connect_addr(struct pgt_server *s, const struct sockaddr *sa, socklen_t len)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		server_fail(s, "socket(): %s", strerror(errno));
		return;
	}
	if (sa->sa_family != AF_UNIX) {
		const struct pgt_config *cfg = pgt.cfg;
		util_tcp_options(fd, cfg->tcp_keepalive, cfg->tcp_keepidle, cfg->tcp_keepintvl,
		                 cfg->tcp_keepcnt, cfg->tcp_user_timeout);
	}
	s->conn.fd = fd;
	/* server_connect_timeout is per address, as libpq's connect_timeout
	 * is per host */
	s->conn.connect_time = loop_now();
	if (connect(fd, sa, len) == 0) {
		server_on_connected(&s->conn);
		return;
	}
	if (errno != EINPROGRESS) {
		int err = errno;
		if (!server_try_next_addr(s, strerror(err)))
			server_fail(s, "connect failed: %s", strerror(err));
		return;
	}
	s->conn.connecting = true;
	sbuf_update_events(&s->conn);
}

/* Connect to the next address of the login's list. */
static void server_try_cand(struct pgt_server *s)
{
	struct server_login *l = s->login;
	const struct pgt_hostset *hs = s->pool->dbstate->hosts;
	l->cur = l->cands.next++;
	const struct host_cand *c = &l->cands.c[l->cur];
	s->host = c->host;
	if (c->sa.sa.sa_family == AF_UNSPEC) {
		struct sockaddr_un un;
		socklen_t len;
		if (!hosts_unix_addr(hs, c, &un, &len)) {
			if (!server_try_next_addr(s, "unix socket path too long"))
				server_fail(s, "unix socket path too long");
			return;
		}
		s->conn.addr.sa.sa_family = AF_UNIX;
		server_connect_addr(s, (struct sockaddr *)&un, len);
		return;
	}
	s->conn.addr = c->sa;
	server_connect_addr(s, &c->sa.sa, c->len);
}

/* The entry's names are known (now, or after waiting): pick and go. */
static void server_pick(struct pgt_server *s)
{
	struct server_login *l = s->login;
	const char *error = NULL;
	if (!hosts_pick(s->pool->dbstate->hosts, &l->cands, &l->wait, &error))
		return; /* server_hosts_ready() comes back here */
	if (l->cands.n == 0) {
		server_fail(s, "could not resolve host: %s", error ? error : "no address");
		return;
	}
	server_try_cand(s);
}

static void server_hosts_ready(struct host_wait *w)
{
	struct server_login *l = container_of(w, struct server_login, wait);
	if (l->s->state == SV_LOGIN)
		server_pick(l->s);
}

const char *server_host_name(const struct pgt_server *s)
{
	const struct pgt_hostset *hs = s->pool->dbstate->hosts;
	return s->host < hs->n ? hs->h[s->host].name : s->pool->db->host;
}

int server_host_port(const struct pgt_server *s)
{
	const struct pgt_hostset *hs = s->pool->dbstate->hosts;
	return s->host < hs->n ? hs->h[s->host].port : s->pool->db->port;
}

/* The role s logs in as. */
static const char *login_user(const struct pgt_server *s)
{
	return s->login && s->login->user ? s->login->user : s->pool->user;
}

/* What s logs in with: the entry's password file, its password=,
 * auth_file's, or what auth_query found (an md5 hash, or SCRAM
 * pass-through). */
static void server_password(struct pgt_server *s)
{
	const struct pgt_pool *pool = s->pool;
	const struct pgt_database *db = pool->db;
	if (config_db_server_auth(pgt.cfg, db) == PGT_SERVER_AUTH_IAM) {
		/* no password: a token when the server asks (iam_password) */
		s->login->iam = true;
		s->login->owner = s;
		awscreds_prefetch();
		return;
	}
	/* the password file (secretfile.h) is for the entry's own user: the
	 * file's username, else user=, else any; the pool keeps its user
	 * (pools are keyed by it), the login takes the file's username of now */
	const char *forced = pool->tenant_role ? NULL : secretfile_db_user(pgt.cfg, db);
	const struct pgt_secret *sec = pool->tenant_role ? NULL : secretfile_get(pgt.cfg, db);
	if (sec && (!forced || pool->entry_user || strcmp(forced, pool->user) == 0)) {
		s->login->password = xstrdup(sec->password);
		s->login->secret_version = sec->version;
		if (sec->username && strcmp(sec->username, pool->user) != 0) {
			s->login->user = xstrdup(sec->username);
			server_log(s, PGT_LOG_DEBUG, "logging in as \"%s\", the password file's username now",
			           sec->username);
		}
		return;
	}
	/* the entry's password is for the entry's user; a tenant's own role
	 * (tenant_server_user, server_user=) and auth_user have theirs in
	 * auth_file */
	if (db->password && !pool->tenant_role && (!db->user || strcmp(db->user, pool->user) == 0)) {
		s->login->password = xstrdup(db->password);
		return;
	}
	const struct pgt_user *u = userlist_find(pgt.cfg->users, pool->user);
	if (u) {
		s->login->password = xstrdup(u->password);
		return;
	}
	struct authq_creds cr;
	if (!authq_server_creds(pool, &cr))
		return;
	s->login->password = cr.password;
	s->login->passthrough = cr.passthrough;
	s->login->pt_secret = cr.secret;
	memcpy(s->login->pt_client_key, cr.client_key, SCRAM_KEY_LEN);
	OPENSSL_cleanse(&cr, sizeof(cr));
}

/* Open a server connection; rest: the addresses a login that found the
 * wrong role left untried (NULL: pick anew). */
static void server_launch_rest(struct pgt_pool *pool, const struct host_cands *rest)
{
	struct pgt_server *s = calloc(1, sizeof(*s));
	if (!s)
		return;
	const struct pgt_database *db = pool->db;
	sbuf_init(&s->conn, -1, CONN_SERVER, &server_ops);
	s->pool = pool;
	s->state = SV_LOGIN;
	s->txn = 'I';
	s->generation = pool->generation;
	s->login = xcalloc(1, sizeof(*s->login));
	server_password(s);
	/* opened with the parameters of the client it is opened for, so that a
	 * reset brings it back to them: clients like it need no SET after it.
	 * Only reported ones, whose defaults the pool knows from its first
	 * login, so that another client can be given the default back. */
	struct list *first = list_first(&pool->waiting_clients);
	bool session = pool_mode(pool) == PGT_POOL_SESSION;
	if (first && pool->replication) {
		/* a walsender takes no SET: the client's parameters all go in the
		 * startup packet (the connection is its alone) */
		vars_copy(&s->base, &container_of(first, struct pgt_client, node)->vars);
	} else if (first && session && pool->welcome_ready && !pool->internal && !pool->base_disabled) {
		/* session mode: the first waiting client whose startup parameters
		 * no connection being opened has; all of them but application_name
		 * (pool.c keys session connections by them) */
		const struct pgt_client *c = NULL;
		struct list *i, *j;
		list_for_each (i, &pool->waiting_clients) {
			const struct pgt_client *w = container_of(i, struct pgt_client, node);
			bool covered = false;
			list_for_each (j, &pool->login_servers) {
				const struct pgt_server *o = container_of(j, struct pgt_server, node);
				covered |= o->base.hash == pool_session_key(w);
			}
			if (!covered) {
				c = w;
				break;
			}
		}
		if (!c)
			c = container_of(first, struct pgt_client, node);
		for (int k = 0; k < c->vars.n; k++)
			if (strcasecmp(c->vars.v[k].key, "application_name") != 0)
				vars_set(&s->base, c->vars.v[k].key, c->vars.v[k].value);
	} else if (first && pool->welcome_ready && !pool->internal && !pool->base_disabled && !pool->shared) {
		/* (a shared pool's connection will serve other tenants: opened
		 * with nothing of this one's) */
		const struct pgt_client *c = container_of(first, struct pgt_client, node);
		for (int i = 0; i < c->vars.n; i++) {
			const char *k = c->vars.v[i].key;
			if (vars_replayable(k, pool->tenant[0] != '\0') && vars_get(&pool->welcome, k))
				vars_set(&s->base, k, c->vars.v[i].value);
		}
	}
	janitor_wake();
	list_init(&s->node);
	list_append(&pool->login_servers, &s->node);
	list_append(&pgt_all_servers, &s->conn_all_node);
	if (pool->shared || pool->reservoir) {
		s->shared = true;
		pool->res->share_total++;
	}
	pool->nservers++;
	pool->dbstate->nservers++;
	pool->ustate->nservers++;
	server_log(s, PGT_LOG_DEBUG, "new connection to %s", db->host ? db->host : "(unix)");
	s->login->s = s;
	s->login->cur = -1;
	s->login->wait.cb = server_hosts_ready;
	list_init(&s->login->wait.node);
	if (rest && rest->generation == pool->dbstate->hosts->generation) {
		s->login->cands = *rest;
		server_try_cand(s);
		return;
	}
	server_pick(s);
}

void server_launch(struct pgt_pool *pool)
{
	server_launch_rest(pool, NULL);
}

static void server_on_connected(struct pgt_conn *conn)
{
	struct pgt_server *s = (struct pgt_server *)conn;
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		if (!server_try_next_addr(s, strerror(err)))
			server_fail(s, "connect failed: %s", strerror(err));
		return;
	}
	if (conn->addr.sa.sa_family != AF_UNIX) {
		socklen_t al = sizeof(conn->addr);
		getpeername(conn->fd, &conn->addr.sa, &al);
		/* TLS is asked for first, as libpq does (PostgreSQL offers none on
		 * unix sockets) */
		int mode = server_sslmode(s->pool->db);
		if (mode > PGT_SSL_ALLOW || (mode == PGT_SSL_ALLOW && s->pool->dbstate->tls_upgrade)) {
			if (!tls_request(conn))
				server_fail(s, "could not send SSLRequest");
			return;
		}
	}
	send_startup(s);
}

static void server_on_tls_answer(struct pgt_conn *conn, char answer)
{
	struct pgt_server *s = (struct pgt_server *)conn;
	const struct pgt_database *db = s->pool->db;
	int mode = server_sslmode(db);
	if (answer == 'S') {
		if (!tls_connect(conn, server_host_name(s), mode))
			server_fail(s, "could not start TLS");
		return;
	}
	if (mode >= PGT_SSL_REQUIRE) {
		server_fail(s, "server does not accept TLS (sslmode %s)", config_sslmode_name(mode));
		return;
	}
	if (answer == 'E') {
		/* a server too old to know SSLRequest closes after its error */
		server_fail(s, "server refused the SSLRequest");
		return;
	}
	send_startup(s);
}

static void server_on_tls_ready(struct pgt_conn *conn)
{
	struct pgt_server *s = (struct pgt_server *)conn;
	char d[96];
	tls_describe(conn, d, sizeof(d));
	server_log(s, PGT_LOG_DEBUG, "TLS established: %s", d);
	send_startup(s);
}

static void send_startup(struct pgt_server *s)
{
	struct pgt_conn *conn = &s->conn;
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_start(&b, 0);
	pktbuf_put_u32(&b, PROTO_VERSION_3_0);
	pktbuf_put_str(&b, "user");
	pktbuf_put_str(&b, login_user(s));
	pktbuf_put_str(&b, "database");
	pktbuf_put_str(&b, pool_backend_dbname(s->pool));
	if (s->pool->replication) {
		pktbuf_put_str(&b, "replication");
		pktbuf_put_str(&b, s->pool->replication == 'd' ? "database" : "true");
	}
	for (int i = 0; i < s->base.n; i++) {
		pktbuf_put_str(&b, s->base.v[i].key);
		pktbuf_put_str(&b, s->base.v[i].value);
	}
	/* the pin lives in the startup options, so that RESET ALL and DISCARD
	 * ALL return to it instead of to the server's defaults */
	char opts[1024];
	if (!server_pin_options(s->pool, opts, sizeof(opts))) {
		pktbuf_free(&b);
		server_fail(s, "tenant pin does not fit in the startup options");
		return;
	}
	if (opts[0]) {
		pktbuf_put_str(&b, "options");
		pktbuf_put_str(&b, opts);
	}
	pktbuf_put_u8(&b, 0);
	pktbuf_finish(&b);
	bool ok = sbuf_send_raw(conn, b.data, b.len);
	pktbuf_free(&b);
	if (!ok) {
		server_fail(s, "could not send startup packet");
		return;
	}
	sbuf_update_events(conn);
}

/* Append " -c name=value" with PostgreSQL's options escaping (backslash
 * before white space and backslash). */
static bool put_option(char *out, size_t outlen, size_t *o, const char *name, const char *value)
{
	int n = snprintf(out + *o, outlen - *o, "%s-c %s=", *o ? " " : "", name);
	if (n < 0 || (size_t)n >= outlen - *o)
		return false;
	*o += (size_t)n;
	for (const char *p = value; *p; p++) {
		if (*o + 3 >= outlen)
			return false;
		if (*p == ' ' || *p == '\t' || *p == '\\')
			out[(*o)++] = '\\';
		out[(*o)++] = *p;
	}
	out[*o] = '\0';
	return true;
}

bool server_pin_options(const struct pgt_pool *pool, char *out, size_t outlen)
{
	const struct pgt_config *cfg = pgt.cfg;
	char path[512];
	size_t o = 0;
	out[0] = '\0';
	/* PostgreSQL 14+ notices a vanished pgtenant while running a query
	 * (a closed server socket then ends the query instead of letting it run
	 * on).  Older servers refuse the unknown setting at login: then it is
	 * left out for the database entry from then on. */
	int v = pool->dbstate->server_version_num;
	if (!pool->dbstate->no_check_interval && (v == 0 || v >= 140000) &&
	    !put_option(out, outlen, &o, "client_connection_check_interval", "1s"))
		return false;
	if (!pool->tenant[0] || pool->internal)
		return true;
	if (pool->shared || pool->reservoir) {
		/* no tenant's: each link SETs its tenant's pin (pool.c), and a
		 * RESET inside a transaction finds nothing (no schema, no tenant) */
		return put_option(out, outlen, &o, "search_path", "") &&
		       (!cfg->tenant_setting[0] || put_option(out, outlen, &o, cfg->tenant_setting, ""));
	}
	if (!tenant_search_path(cfg, pool->tenant, path, sizeof(path)) ||
	    !put_option(out, outlen, &o, "search_path", path))
		return false;
	if (cfg->tenant_setting[0] && !put_option(out, outlen, &o, cfg->tenant_setting, pool->tenant))
		return false;
	if (pool->tconf && pool->tconf->statement_timeout &&
	    !put_option(out, outlen, &o, "statement_timeout", pool->tconf->statement_timeout))
		return false;
	return true;
}

/* ---- login ---- */

static bool send_password_msg(struct pgt_server *s, const void *data, size_t n, bool with_nul)
{
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_start(&b, 'p');
	pktbuf_put_bytes(&b, data, n);
	if (with_nul)
		pktbuf_put_u8(&b, 0);
	pktbuf_finish(&b);
	bool ok = sbuf_send_raw(&s->conn, b.data, b.len);
	memset(b.data, 0, b.len);
	pktbuf_free(&b);
	if (!ok)
		server_fail(s, "send failed during login");
	return ok;
}

static bool plain_password(struct pgt_server *s, const char *method)
{
	const char *pw = s->login->password;
	if (!pw || strncmp(pw, "SCRAM-SHA-256$", 14) == 0 ||
	    (strncmp(pw, "md5", 3) == 0 && strlen(pw) == 35)) {
		server_fail(s,
		            "the server asks for %s authentication, but no plain password for user \"%s\" is "
		            "configured",
		            method, login_user(s));
		return false;
	}
	return true;
}

static void iam_creds_done(struct awscreds_waiter *w, const char *error);

/* server_auth = iam: answer AuthenticationCleartextPassword with an RDS IAM
 * token, over TLS only; or wait for AWS credentials.  false if s failed. */
static bool iam_password(struct pgt_server *s)
{
	const struct pgt_database *db = s->pool->db;
	if (!s->conn.ssl) {
		server_fail(s,
		            "server_auth iam: refusing to send an IAM token over a connection without TLS");
		return false;
	}
	/* signed for the host name being connected to, as written in the entry */
	int port = server_host_port(s);
	const char *host = server_host_name(s);
	char region[64], why[256];
	if (!rdstoken_region(db->aws_region, pgt.cfg->aws_region, host, region, sizeof(region))) {
		server_fail(
		    s,
		    "no AWS region for the IAM token: set aws_region (the host name \"%s\" names none, "
		    "and neither AWS_REGION nor AWS_DEFAULT_REGION is set)",
		    host);
		return false;
	}
	char *token = NULL;
	s->login->aws.done = iam_creds_done;
	switch (awscreds_token(host, port, s->pool->user, region, &token, &s->login->aws, why, sizeof(why))) {
	case AWSCREDS_READY: {
		server_log(s, PGT_LOG_DEBUG, "sending an IAM token for %s:%d in %s", host, port, region);
		bool ok = send_password_msg(s, token, strlen(token), true);
		rdstoken_free(token);
		return ok;
	}
	case AWSCREDS_PENDING:
		server_log(s, PGT_LOG_DEBUG, "waiting for AWS credentials");
		return true;
	default:
		server_fail(s, "no AWS credentials: %s", why);
		return false;
	}
}

/* Credentials came (error NULL) or will not. */
static void iam_creds_done(struct awscreds_waiter *w, const char *error)
{
	struct server_login *l = container_of(w, struct server_login, aws);
	struct pgt_server *s = l->owner;
	if (s->state == SV_DEAD)
		return;
	if (error)
		server_fail(s, "no AWS credentials: %s", error);
	else
		iam_password(s);
}

static bool login_auth(struct pgt_server *s, const uint8_t *body, uint32_t len)
{
	struct proto_reader r;
	proto_reader_init(&r, body, len);
	uint32_t code = proto_get_u32(&r);
	const char *reason = NULL;
	if (r.bad) {
		server_fail(s, "malformed authentication request");
		return false;
	}
	if (s->login->iam && code != 0) {
		if (code == 3)
			return iam_password(s);
		server_fail(s,
		            "server_auth iam: the server asks for authentication method %u instead of a "
		            "cleartext password (is the role granted rds_iam?)",
		            code);
		return false;
	}
	switch (code) {
	case 0:
		return true;
	case 3: /* cleartext */
		if (!plain_password(s, "password"))
			return false;
		return send_password_msg(s, s->login->password, strlen(s->login->password), true);
	case 5: { /* md5 */
		const uint8_t *salt = proto_get_bytes(&r, 4);
		const char *pw = s->login->password;
		if (!salt) {
			server_fail(s, "malformed md5 request");
			return false;
		}
		if (!pw || strncmp(pw, "SCRAM-SHA-256$", 14) == 0) {
			server_fail(s,
			            "the server asks for md5 authentication, but no password for user \"%s\" "
			            "is configured",
			            login_user(s));
			return false;
		}
		char hash[36], out[36];
		if (strncmp(pw, "md5", 3) == 0 && strlen(pw) == 35)
			memcpy(hash, pw, 36);
		else
			pg_md5_hash(pw, login_user(s), hash);
		pg_md5_salted(hash, salt, out);
		return send_password_msg(s, out, 35, true);
	}
	case 10: { /* SASL */
		bool found = false;
		for (;;) {
			const char *m = proto_get_str(&r);
			if (!m || !*m)
				break;
			if (strcmp(m, "SCRAM-SHA-256") == 0)
				found = true;
		}
		if (!found) {
			server_fail(s, "the server offers no supported SASL mechanism");
			return false;
		}
		if (!s->login->passthrough && !plain_password(s, "SCRAM-SHA-256"))
			return false;
		char *first = scram_client_first(&s->login->scram, "", NULL);
		if (!first) {
			server_fail(s, "could not start SCRAM");
			return false;
		}
		s->login->scram_started = true;
		struct pktbuf b;
		pktbuf_init(&b);
		pktbuf_start(&b, 'p');
		pktbuf_put_str(&b, "SCRAM-SHA-256");
		pktbuf_put_u32(&b, (uint32_t)strlen(first));
		pktbuf_put_bytes(&b, first, strlen(first));
		pktbuf_finish(&b);
		free(first);
		bool ok = sbuf_send_raw(&s->conn, b.data, b.len);
		pktbuf_free(&b);
		if (!ok)
			server_fail(s, "send failed during login");
		return ok;
	}
	case 11: { /* SASL continue */
		if (!s->login->scram_started) {
			server_fail(s, "unexpected SASL continue");
			return false;
		}
		char *fin = s->login->passthrough
		                ? scram_client_final_passthrough(&s->login->scram, &s->login->pt_secret,
		                                                 s->login->pt_client_key,
		                                                 (const char *)body + 4, len - 4, &reason)
		                : scram_client_final(&s->login->scram, s->login->password,
		                                     (const char *)body + 4, len - 4, &reason);
		if (!fin) {
			server_fail(s, "SCRAM: %s", reason);
			return false;
		}
		bool ok = send_password_msg(s, fin, strlen(fin), false);
		free(fin);
		return ok;
	}
	case 12: /* SASL final */
		if (!s->login->scram_started ||
		    !scram_client_verify(&s->login->scram, (const char *)body + 4, len - 4)) {
			server_fail(s, "SCRAM: the server's signature does not match");
			return false;
		}
		return true;
	default:
		server_fail(s, "unsupported authentication method %u requested by the server", code);
		return false;
	}
}

static void server_role_changed(struct pgt_server *s);
static void server_launch_rest(struct pgt_pool *pool, const struct host_cands *rest);

static void param_status(struct pgt_server *s, const uint8_t *body, uint32_t len)
{
	struct proto_reader r;
	proto_reader_init(&r, body, len);
	const char *k = proto_get_str(&r);
	const char *v = proto_get_str(&r);
	if (!k || !v)
		return;
	vars_set(&s->vars, k, v);
	if (s->state != SV_LOGIN && k[0] == 'i' && strcmp(k, "in_hot_standby") == 0)
		server_role_changed(s);
	struct pgt_client *c = s->client;
	if (!c || s->reset_pending || s->own_rfq > 0)
		return; /* pgtenant's own doing */
	/* the client changed it (SET ...): it wants it on its next server too,
	 * if it is a parameter a client can SET (not is_superuser after a
	 * SET ROLE, nor a pinned search_path) */
	if (!vars_replayable(k, s->pool->tenant[0] != '\0'))
		return;
	const char *dflt = vars_get(&s->pool->welcome, k);
	if (vars_get(&c->vars, k) || !dflt || strcmp(dflt, v) != 0)
		vars_set(&c->vars, k, v);
}

/* Asked of a server that reports no in_hot_standby (before PostgreSQL 14),
 * schema-qualified: the pin's search_path is in force. */
static const char role_query[] = "SELECT pg_catalog.pg_is_in_recovery(), "
                                 "pg_catalog.current_setting('default_transaction_read_only')";

static void role_row(struct pgt_server *s, const uint8_t *body, uint32_t len)
{
	struct proto_reader r;
	proto_reader_init(&r, body, len);
	if (proto_get_u16(&r) != 2)
		return;
	char v[2][8];
	for (int i = 0; i < 2; i++) {
		int32_t n = (int32_t)proto_get_u32(&r);
		const uint8_t *p = proto_get_bytes(&r, n > 0 ? (uint32_t)n : 0);
		if (n <= 0 || !p || n >= (int32_t)sizeof(v[i]))
			return;
		memcpy(v[i], p, (size_t)n);
		v[i][n] = '\0';
	}
	s->login->role = hosts_role_of(strcmp(v[0], "t") == 0 ? "on" : "off", v[1]);
}

/* Close the entry's idle connections to address a (s aside), and mark its
 * busy ones to be closed when released. */
static void close_addr(struct pgt_server *s, const union pgt_addr *a, const char *why)
{
	const struct pgt_dbstate *d = s->pool->dbstate;
	struct list *i, *tmp;
	list_for_each_safe (i, tmp, &pgt_all_servers) {
		struct pgt_server *o = container_of(i, struct pgt_server, conn_all_node);
		if (o == s || o->pool->dbstate != d || o->state == SV_LOGIN ||
		    !hosts_addr_equal(&o->conn.addr, a))
			continue;
		if (o->state == SV_IDLE)
			server_close(o, why);
		else
			o->close_needed = true;
	}
	s->close_needed = true;
}

/* The server reported a new in_hot_standby: promoted, or demoted. */
static void server_role_changed(struct pgt_server *s)
{
	struct pgt_hostset *hs = s->pool->dbstate->hosts;
	int role = hosts_role_of(vars_get(&s->vars, "in_hot_standby"),
	                         vars_get(&s->vars, "default_transaction_read_only"));
	if (role == s->role || s->conn.addr.sa.sa_family == AF_UNIX)
		return;
	s->role = (uint8_t)role;
	hosts_set_role(hs, &s->conn.addr, role);
	if (hosts_role_ok(hs->tsa, role, hs->tsa == PGT_TSA_PREFER_STANDBY))
		return;
	const char *why = role == HOST_ROLE_STANDBY ? "a server became a standby" : "a standby was promoted";
	hosts_failover(hs, &s->conn.addr, why);
	close_addr(s, &s->conn.addr, why);
}

/* An ErrorResponse to a client of a read-write (or primary) entry: 25006
 * says the server does not take writes.  A client can cause it itself
 * (SET TRANSACTION READ ONLY), so only its own connection is dropped (once
 * released) and the names resolved again; other connections to the
 * address are left alone unless the server itself reports a new role. */
static void read_only_error(struct pgt_server *s, const struct pgt_pkt *pkt)
{
	const char *code = proto_error_field(pkt->data + 5, pkt->total - 5, 'C');
	if (!code || strcmp(code, "25006") != 0 || s->close_needed)
		return;
	s->close_needed = true;
	hosts_failover(s->pool->dbstate->hosts, &s->conn.addr,
	               "a read-write connection got a read-only error (25006)");
}

/* At the login's ReadyForQuery: is this the server the entry asks for?
 * False if not (s is closed, the next address tried by a new login) or if
 * its role is still being asked. */
static bool login_role_ok(struct pgt_server *s)
{
	struct server_login *l = s->login;
	struct pgt_hostset *hs = s->pool->dbstate->hosts;
	int role;
	if (l->role_query) {
		l->role_query = false;
		role = l->role;
		if (role < 0) {
			server_fail(s, "could not tell the server's role (%s)", role_query);
			return false;
		}
	} else {
		const char *hsb = vars_get(&s->vars, "in_hot_standby");
		if (!hsb && hs->tsa != PGT_TSA_ANY) {
			/* PostgreSQL 13 and older report neither value: ask */
			struct pktbuf b;
			pktbuf_init(&b);
			pktbuf_start(&b, 'Q');
			pktbuf_put_str(&b, role_query);
			pktbuf_finish(&b);
			bool ok = sbuf_send_raw(&s->conn, b.data, b.len);
			pktbuf_free(&b);
			if (!ok) {
				server_fail(s, "could not send the role query");
				return false;
			}
			l->role_query = true;
			l->role = -1;
			return false;
		}
		role = hosts_role_of(hsb, vars_get(&s->vars, "default_transaction_read_only"));
	}
	s->role = (uint8_t)role;
	bool tcp = s->conn.addr.sa.sa_family != AF_UNIX;
	if (tcp)
		hosts_set_role(hs, &s->conn.addr, role);
	char t[64];
	hosts_addr_text(&s->conn.addr, t, sizeof(t));
	if (hosts_role_ok(hs->tsa, role, l->cands.fallback_pass) ||
	    (hs->tsa == PGT_TSA_PREFER_STANDBY && l->cands.next >= l->cands.n)) {
		if (hosts_in_failover(hs)) {
			log_info("database %s: %s answers as %s (target_session_attrs=%s)", hs->dbname, t,
			         role == HOST_ROLE_STANDBY      ? "a standby"
			         : role == HOST_ROLE_PRIMARY_RO ? "a read-only primary"
			                                        : "the primary",
			         config_tsa_name(hs->tsa));
			hs->failover_until = 0;
		}
		return true;
	}
	if (hs->tsa == PGT_TSA_PREFER_STANDBY)
		l->cands.saw_fallback = true;
	if (l->cands.next < l->cands.n) {
		/* the rest of the list goes to a new login; this one is not a
		 * failure of the pool */
		server_launch_rest(s->pool, &l->cands);
		server_close(s, role == HOST_ROLE_STANDBY
		                    ? "the server is a standby: trying the next address"
		                    : "the server is not a standby: trying the next address");
		return false;
	}
	server_fail(s, "no server with target_session_attrs=%s (the last one tried, %s, is %s)",
	            config_tsa_name(hs->tsa), t, role == HOST_ROLE_STANDBY ? "a standby" : "not a standby");
	return false;
}

/* 28P01 on a login with a password file's value: read the file again now
 * (the janitor's stat may not have seen the change yet); true if its value
 * is no longer the one this login used.  A login is made again only for a
 * value that changed since the refused one was read (no loop): with the
 * file unchanged it fails as any refused login does. */
static bool secret_rotated(struct pgt_server *s)
{
	if (!s->login->secret_version)
		return false;
	const struct pgt_secret *sec = secretfile_reread(pgt.cfg, s->pool->db);
	return sec && sec->version != s->login->secret_version;
}

static enum sbuf_verdict login_packet(struct pgt_server *s, struct pgt_pkt *pkt)
{
	if (!pkt->full)
		return SB_NEED_FULL;
	const uint8_t *body = pkt->data + 5;
	uint32_t len = pkt->total - 5;
	switch (pkt->type) {
	case 'R':
		return login_auth(s, body, len) ? SB_SKIP : SB_GONE;
	case 'S':
		param_status(s, body, len);
		return SB_SKIP;
	case 'K': {
		struct proto_reader r;
		proto_reader_init(&r, body, len);
		s->be_pid = proto_get_u32(&r);
		s->be_key = proto_get_u32(&r);
		notify_track(s);
		return SB_SKIP;
	}
	case 'N':
	case 'v':
		return SB_SKIP;
	case 'E': {
		const char *m = proto_error_field(body, len, 'M');
		const char *code = proto_error_field(body, len, 'C');
		if (code && strcmp(code, "53300") == 0) {
			/* too many connections (for the role, e.g. its CONNECTION LIMIT
			 * shared by several pgtenant instances, the database or the
			 * server): the pool is full, not broken; clients wait */
			pool_server_limit(s->pool, m ? m : "too many connections");
			server_close(s, m ? m : "too many connections");
			return SB_GONE;
		}
		if (code && strcmp(code, "42704") == 0 && m &&
		    strstr(m, "client_connection_check_interval") && !s->pool->dbstate->no_check_interval) {
			s->pool->dbstate->no_check_interval = true; /* before PostgreSQL 14 */
			server_close(
			    s, "the server does not know client_connection_check_interval; retrying without");
			return SB_GONE;
		}
		if (s->base.n && !s->pool->base_disabled) {
			/* perhaps a client's parameter the server refuses at login:
			 * from now on this pool opens servers without them */
			s->pool->base_disabled = true;
			server_close(s, "login with a client's parameters refused; retrying without them");
			return SB_GONE;
		}
		if (server_sslmode(s->pool->db) == PGT_SSL_ALLOW && !s->conn.ssl &&
		    !s->pool->dbstate->tls_upgrade) {
			/* libpq's allow: plaintext first, TLS when the server refuses it */
			s->pool->dbstate->tls_upgrade = true;
			server_close(s, "plaintext login refused (sslmode allow); retrying with TLS");
			return SB_GONE;
		}
		if (code && strcmp(code, "28P01") == 0 && secret_rotated(s)) {
			/* the rotation race: the secret changed after this login read
			 * it; a new login (the waiting clients' next) takes the new one */
			server_close(s, "password refused, but the password file has changed since: "
			                "logging in again with the new one");
			return SB_GONE;
		}
		server_fail(s, "login failed: %s%s%s%s", m ? m : "unknown error", code ? " (" : "",
		            code ? code : "", code ? ")" : "");
		return SB_GONE;
	}
	case 'T':
	case 'D':
	case 'C':
		if (!s->login->role_query)
			break;
		if (pkt->type == 'D')
			role_row(s, body, len);
		return SB_SKIP;
	case 'Z': {
		struct pgt_pool *pool = s->pool;
		if (!login_role_ok(s))
			return s->conn.dead ? SB_GONE : SB_SKIP;
		login_free(s->login);
		s->login = NULL;
		s->txn = 'I';
		s->dirty = false;
		s->version_num = proto_version_num(vars_get(&s->vars, "server_version"));
		const char *su = vars_get(&s->vars, "is_superuser");
		s->superuser = su && strcmp(su, "on") == 0;
		s->reset_simple = !commits_immediately(s->version_num);
		if (!pool->dbstate->server_version_num)
			pool->dbstate->server_version_num = s->version_num;
		server_log(s, PGT_LOG_DEBUG, "login ok, backend pid %u", s->be_pid);
		pool->last_fail_time = 0;
		if (!pool->welcome_ready) {
			vars_copy(&pool->welcome, &s->vars);
			pool->welcome_ready = true;
			if (s->shared && !pool->res->welcome_ready) {
				/* the same for every tenant of the shared pool */
				vars_copy(&pool->res->welcome, &s->vars);
				pool->res->welcome_ready = true;
				pool_share_welcome(pool->res);
			}
		}
		struct list *i, *tmp;
		list_for_each_safe (i, tmp, &pool->welcome_clients)
			client_welcome(container_of(i, struct pgt_client, node));
		pool_server_ready(pool, s);
		return s->conn.dead ? SB_GONE : SB_SKIP;
	}
	default:
		break;
	}
	server_fail(s, "unexpected message '%c' during login", pkt->type);
	return SB_GONE;
}

/* ---- linked and idle ---- */

/* Parse/Bind/Execute of DISCARD ALL on the unnamed statement and portal,
 * no Sync (see the top of this file). */
static const uint8_t reset_msg[] = {
    'P', 0, 0, 0, 19, 0,   'D', 'I', 'S', 'C', 'A', 'R', 'D', ' ', 'A', 'L', 'L', 0, 0, 0, /* Parse */
    'B', 0, 0, 0, 12, 0,   0,   0,   0,   0,   0,   0,   0,                                /* Bind */
    'E', 0, 0, 0, 9,  0,   0,   0,   0,   0,                                               /* Execute */
    'C', 0, 0, 0, 6,  'S', 0, /* Close the unnamed statement: the next client finds none, as on a new connection */
};
static const uint8_t reset_query_msg[] = {
    'Q', 0, 0, 0, 16, 'D', 'I', 'S', 'C', 'A', 'R', 'D', ' ', 'A', 'L', 'L', 0,
};
/* what the server answers to reset_msg when all goes well */
/* clang-format off */
static const uint8_t reset_answer[] = {
    '1', 0, 0, 0, 4, '2', 0, 0, 0, 4,
    'C', 0, 0, 0, 16, 'D', 'I', 'S', 'C', 'A', 'R', 'D', ' ', 'A', 'L', 'L', 0,
    '3', 0, 0, 0, 4,
};
/* clang-format on */
/* ... and to each SET of a client's parameter Query, then its ReadyForQuery */
static const uint8_t set_answer[] = {'C', 0, 0, 0, 8, 'S', 'E', 'T', 0};
static const uint8_t idle_answer[] = {'Z', 0, 0, 0, 5, 'I'};
/* each length word is the message's size minus its type byte */
_Static_assert(sizeof(reset_msg) == (1 + 19) + (1 + 12) + (1 + 9) + (1 + 6), "reset message lengths");
_Static_assert(sizeof(reset_query_msg) == 1 + 16, "reset query length");

/* The reset that keeps pgtenant's own prepared statements: DISCARD ALL's
 * pieces but DISCARD PLANS, each a statement of its own, and a DO block
 * that deallocates every statement but those pgtenant prepared through the
 * protocol (a client's SQL PREPARE shows as from_sql, whatever name it
 * chose).  RESET ALL comes before the DO block, so that it runs as the
 * session user with the pinned search_path; everything it calls is
 * schema-qualified all the same.  All of it in a transaction block of its
 * own, BEGIN ... COMMIT: a client whose first statement fails (or who rolls
 * back) cannot undo the reset, an error in it makes the server skip the
 * client's messages up to their Sync, and the COMMIT leaves the server
 * outside any pipeline, so that the client's first statement may be one
 * that refuses to run in one (VACUUM, CREATE INDEX CONCURRENTLY, DISCARD
 * ALL).  Its answers are as fixed as DISCARD ALL's (keep_reset()->answer).
 * PostgreSQL 15 spends about 27 us on it, against about 18 us to parse and
 * plan pgbench's SELECT again: utility statements cost it little, the DO
 * block (compiled and planned anew each time) the most. */
struct keep_reset {
	struct pktbuf msg, answer;
	uint8_t cmds; /* CommandCompletes in the answer */
};

/* One statement of it: Parse/Bind/Execute on the unnamed statement, no
 * Sync; and what the server answers (a row for a SELECT). */
static void keep_stmt(struct keep_reset *k, const char *sql, const char *tag, bool row)
{
	struct pktbuf *b = &k->msg;
	pktbuf_start(b, 'P');
	pktbuf_put_u8(b, 0);
	pktbuf_put_str(b, sql);
	pktbuf_put_u16(b, 0);
	pktbuf_finish(b);
	pktbuf_start(b, 'B');
	pktbuf_put_u8(b, 0);
	pktbuf_put_u8(b, 0);
	pktbuf_put_u16(b, 0);
	pktbuf_put_u16(b, 0);
	pktbuf_put_u16(b, 0);
	pktbuf_finish(b);
	pktbuf_start(b, 'E');
	pktbuf_put_u8(b, 0);
	pktbuf_put_u32(b, 0);
	pktbuf_finish(b);
	struct pktbuf *a = &k->answer;
	pktbuf_start(a, '1');
	pktbuf_finish(a);
	pktbuf_start(a, '2');
	pktbuf_finish(a);
	if (row) {
		/* one column, void: empty */
		pktbuf_start(a, 'D');
		pktbuf_put_u16(a, 1);
		pktbuf_put_u32(a, 0);
		pktbuf_finish(a);
	}
	pktbuf_start(a, 'C');
	pktbuf_put_str(a, tag);
	pktbuf_finish(a);
	k->cmds++;
}

/* The keeping reset, for servers logged in as a superuser (whose clients
 * can change the session authorization) or not; `own`: the client comes
 * back to the connection it left (affinity), so every statement on it is
 * pgtenant's or its own, and none is deallocated.  Built once. */
static const struct keep_reset *keep_reset(bool superuser, bool own)
{
	static struct keep_reset k[2][2];
	static bool built[2][2];
	struct keep_reset *r = &k[superuser][own];
	if (built[superuser][own])
		return r;
	pktbuf_init(&r->msg);
	pktbuf_init(&r->answer);
	keep_stmt(r, "BEGIN", "BEGIN", false);
	keep_stmt(r, "CLOSE ALL", "CLOSE CURSOR ALL", false);
	if (superuser)
		keep_stmt(r, "SET SESSION AUTHORIZATION DEFAULT", "SET", false);
	keep_stmt(r, "RESET ALL", "RESET", false);
	keep_stmt(r, "UNLISTEN *", "UNLISTEN", false);
	keep_stmt(r, "SELECT pg_catalog.pg_advisory_unlock_all()", "SELECT 1", true);
	keep_stmt(r, "DISCARD TEMP", "DISCARD TEMP", false);
	keep_stmt(r, "DISCARD SEQUENCES", "DISCARD SEQUENCES", false);
	if (!own)
		keep_stmt(r,
		          "DO $pgtenant$DECLARE r record; BEGIN FOR r IN SELECT p.name FROM "
		          "pg_catalog.pg_prepared_statement() p WHERE p.from_sql OR NOT "
		          "pg_catalog.starts_with(p.name, '" PS_SERVER_PREFIX "') LOOP "
		          "EXECUTE 'DEALLOCATE ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(r.name); "
		          "END LOOP; END$pgtenant$",
		          "DO", false);
	keep_stmt(r, "COMMIT", "COMMIT", false);
	/* the unnamed statement, as with reset_msg */
	pktbuf_start(&r->msg, 'C');
	pktbuf_put_u8(&r->msg, 'S');
	pktbuf_put_u8(&r->msg, 0);
	pktbuf_finish(&r->msg);
	pktbuf_start(&r->answer, '3');
	pktbuf_finish(&r->answer);
	built[superuser][own] = true;
	return r;
}

/* Keeping a connection's statements over the reset costs the server about
 * as much as preparing one and a half simple statements again (see
 * keep_reset): worth it when the pool's links use this many named
 * statements on average (fewer for complex queries, whose planning the
 * kept statements also save, which this does not see). */
#define PS_KEEP_USES 2

/* Does the server commit DISCARD ALL by itself in an unsynced pipeline?
 * (PostgreSQL's fix of July 2022, in 13.8, 14.5 and 15.) */
static bool commits_immediately(int v)
{
	return v >= 150000 || (v >= 140005 && v < 140100) || (v >= 130008 && v < 130100);
}

/* The reset is confirmed: let the held client go on. */
static enum sbuf_verdict reset_done(struct pgt_server *s)
{
	s->reset_fence = false;
	if (s->client_held && s->client) {
		s->client_held = false;
		sbuf_resume(&s->client->conn);
		return s->conn.dead ? SB_GONE : SB_SKIP;
	}
	if (s->draining)
		return server_drain_check(s) ? SB_SKIP : SB_GONE;
	return SB_SKIP;
}

/* The common case in one step: the reset and the parameter Query answered
 * exactly as expected, all in the buffer.  Taking them as one skip saves
 * parsing five or more messages on every transaction. */
static bool own_answers_at_once(struct pgt_server *s, struct pgt_pkt *pkt)
{
	uint32_t sets = s->own_rfq == 1 ? s->sync_sets : 0;
	if (s->reset_simple || (s->own_rfq && !sets))
		return false;
	const struct keep_reset *k = s->reset_keep ? keep_reset(s->superuser, s->keep_state) : NULL;
	const uint8_t *answer = k ? k->answer.data : reset_answer;
	uint32_t alen = k ? (uint32_t)k->answer.len : sizeof(reset_answer);
	uint32_t need = alen + (sets ? sets * sizeof(set_answer) + sizeof(idle_answer) : 0);
	const uint8_t *p = pkt->data;
	if (pkt->avail < need || memcmp(p, answer, alen) != 0)
		return false;
	p += alen;
	if (sets) {
		for (uint32_t i = 0; i < sets; i++, p += sizeof(set_answer))
			if (memcmp(p, set_answer, sizeof(set_answer)) != 0)
				return false;
		if (memcmp(p, idle_answer, sizeof(idle_answer)) != 0)
			return false;
		s->own_rfq = 0;
		s->txn = 'I';
	}
	s->reset_pending = false;
	s->reset_cmds = 0;
	pkt->total = need;
	return true;
}

/* The answers to the reset.  Nothing else is expected before its 'C'. */
static enum sbuf_verdict reset_packet(struct pgt_server *s, struct pgt_pkt *pkt)
{
	if (pkt->type == '1' && own_answers_at_once(s, pkt)) {
		enum sbuf_verdict v = reset_done(s);
		return v == SB_GONE ? SB_GONE : SB_SKIP;
	}
	switch (pkt->type) {
	case '1':
	case '2':
	case 'D': /* the keeping reset's SELECT */
	case 'N':
	case 'A': /* a notification for a channel the previous client listened to */
		return SB_SKIP;
	case 'S':
		if (!pkt->full)
			return SB_NEED_FULL;
		param_status(s, pkt->data + 5, pkt->total - 5);
		return SB_SKIP;
	case 'C':
		if (s->reset_cmds > 0)
			s->reset_cmds--;
		return SB_SKIP; /* the CloseComplete (or, old servers, the ReadyForQuery) completes it */
	case '3':
		if (s->reset_simple || s->reset_cmds > 0) {
			server_fail(s, "unexpected CloseComplete in answer to the reset");
			return SB_GONE;
		}
		s->reset_pending = false;
		return reset_done(s);
	case 'Z':
		if (!s->reset_simple) {
			server_fail(s, "unexpected ReadyForQuery in answer to the reset");
			return SB_GONE;
		}
		if (!pkt->full)
			return SB_NEED_FULL;
		s->txn = (char)pkt->data[5];
		s->reset_pending = false;
		return reset_done(s);
	case 'E': {
		if (!pkt->full)
			return SB_NEED_FULL;
		const char *m = proto_error_field(pkt->data + 5, pkt->total - 5, 'M');
		server_fail(s, "could not reset the connection for the next client: %s",
		            m ? m : "unknown error");
		return SB_GONE;
	}
	default:
		server_fail(s, "unexpected message '%c' in answer to the reset", pkt->type);
		return SB_GONE;
	}
}

/* A NotificationResponse for s's client: dropped when a backend of another
 * tenant sent it (notify.c).  Only the sender's pid is read. */
static enum sbuf_verdict notification(struct pgt_server *s, struct pgt_pkt *pkt)
{
	if (pkt->avail < 9) {
		pkt->want = 9;
		return SB_NEED_FULL;
	}
	uint32_t pid = proto_be32(pkt->data + 5);
	if (!notify_allowed(s, pid)) {
		server_log(s, PGT_LOG_DEBUG, "notification sent by another tenant's backend (pid %u) dropped",
		           pid);
		return SB_SKIP;
	}
	s->pool->stats.bytes_out += pkt->total;
	return SB_FORWARD;
}

static enum sbuf_verdict own_query_packet(struct pgt_server *s, struct pgt_pkt *pkt)
{
	if (s->checking && pkt->type == 'A' && s->client)
		return notification(s, pkt); /* for the client, which is LISTENing */
	if (s->checking && pkt->type != 'S' && pkt->type != 'Z')
		return session_check_packet(s, pkt);
	if (pkt->type != 'S' && pkt->type != 'E' && pkt->type != 'Z')
		return SB_SKIP;
	if (!pkt->full)
		return SB_NEED_FULL;
	const uint8_t *body = pkt->data + 5;
	uint32_t len = pkt->total - 5;
	if (pkt->type == 'S') {
		param_status(s, body, len);
		return SB_SKIP;
	}
	if (pkt->type == 'E') {
		const char *m = proto_error_field(body, len, 'M');
		const char *code = proto_error_field(body, len, 'C');
		if (!s->setup_error) {
			s->setup_error = xstrdup(m ? m : "error in pgtenant's own query");
			snprintf(s->setup_sqlstate, sizeof(s->setup_sqlstate), "%s",
			         code && strlen(code) == 5 ? code : "22023");
		}
		return SB_SKIP;
	}
	s->txn = (char)body[0];
	if (--s->own_rfq > 0)
		return SB_SKIP;
	if (s->checking) {
		session_check_done(s);
		if (s->client)
			sbuf_set_barrier(&s->conn); /* release now, or keep if pinned */
	}
	if (s->draining)
		return server_drain_check(s) ? SB_SKIP : SB_GONE;
	if (s->state == SV_USED) {
		if (s->health_check) {
			s->health_check = false;
			s->pool->nchecking--;
			if (s->setup_error) {
				server_close(s, "server_check_query failed");
				return SB_GONE;
			}
		}
		if (s->setup_error || s->txn != 'I') {
			server_close(s, s->setup_error ? s->setup_error : "reset left a transaction open");
			return SB_GONE;
		}
		pool_server_ready(s->pool, s);
		return s->conn.dead ? SB_GONE : SB_SKIP;
	}
	if (s->setup_error && s->client) {
		struct pgt_client *c = s->client;
		char *err = s->setup_error;
		s->setup_error = NULL;
		client_fail(c, s->setup_sqlstate, "could not apply session parameter: %s", err);
		free(err);
		return s->conn.dead ? SB_GONE : SB_SKIP;
	}
	return SB_SKIP;
}

/* A client's CommandComplete (read whole, see server_on_packet): what it
 * may have left in the session (session.c), and whether it removed
 * pgtenant's statements (prepare.c). */
static inline void command_tag(struct pgt_server *s, const struct pgt_pkt *pkt)
{
	if (!pkt->full || pkt->total < 7 || pkt->data[pkt->total - 1] != '\0')
		return;
	const char *tag = (const char *)pkt->data + 5;
	size_t len = pkt->total - 6;
	uint8_t h = session_tag_hint(tag, len);
	s->hint |= h;
	if (h && tag[0] == 'D' && s->ps_on)
		ps_server_tag(s, tag, len);
}

/* A vanished client's extended-protocol messages have no Sync: send one,
 * or the server waits for it (after an error, skipping everything else)
 * and the drain never ends.  False if s was closed. */
static bool drain_sync(struct pgt_server *s)
{
	static const uint8_t sync[] = {'S', 0, 0, 0, 4};
	if (!sbuf_send_raw(&s->conn, sync, sizeof(sync))) {
		server_close(s, "send failed while draining");
		return false;
	}
	s->sent_since_rfq = false;
	s->expect_rfq++;
	if (s->ps_on && !ps_server_sync(s)) {
		server_close(s, "too many requests in flight to drain");
		return false;
	}
	return true;
}

/* What a vanished client left running: let it finish, answer nothing. */
static enum sbuf_verdict drain_packet(struct pgt_server *s, struct pgt_pkt *pkt)
{
	if (s->ps_on && pkt->type != 'D' && !s->ps_untracked) {
		/* keep the record of the statements on it true */
		int v = ps_server_packet(s, pkt);
		if (v == SB_GONE || v == SB_NEED_FULL)
			return (enum sbuf_verdict)v;
		if (s->conn.dead)
			return SB_GONE;
		/* an error that made the server skip a Query the client sent
		 * behind it, without a Sync (prepare.c): the server now waits */
		if (s->sent_since_rfq && !drain_sync(s))
			return SB_GONE;
	}
	switch (pkt->type) {
	case 'C':
		if (s->ps_on && pkt->total < 64) {
			if (!pkt->full)
				return SB_NEED_FULL;
			command_tag(s, pkt);
		}
		return SB_SKIP;
	case 'G': /* a COPY FROM STDIN the client started: end it */
		if (!send_copy_fail(s))
			return SB_GONE;
		return SB_SKIP;
	case 'Z':
		if (!pkt->full)
			return SB_NEED_FULL;
		s->txn = (char)pkt->data[5];
		s->copy_in = false;
		if (s->expect_rfq > 0)
			s->expect_rfq--;
		if (s->ps_untracked)
			s->ps_untracked--;
		return server_drain_check(s) ? SB_SKIP : SB_GONE;
	default:
		return SB_SKIP;
	}
}

/* Everything but forwarding a linked client's answers. */
static enum sbuf_verdict special_packet(struct pgt_server *s, struct pgt_pkt *pkt)
{
	if (s->state == SV_LOGIN)
		return login_packet(s, pkt);
	if (s->reset_pending)
		return reset_packet(s, pkt);
	if (s->own_rfq > 0)
		return own_query_packet(s, pkt);
	if (s->lookup)
		return lookup_packet(s, pkt);
	if (s->draining)
		return drain_packet(s, pkt);
	/* idle: only asynchronous messages are expected */
	switch (pkt->type) {
	case 'S':
		if (!pkt->full)
			return SB_NEED_FULL;
		param_status(s, pkt->data + 5, pkt->total - 5);
		if (s->close_needed && s->state == SV_IDLE) {
			server_close(s, "the server's role changed");
			return SB_GONE;
		}
		return SB_SKIP;
	case 'N':
	case 'A':
		return SB_SKIP;
	case 'E': {
		if (!pkt->full)
			return SB_NEED_FULL;
		const char *m = proto_error_field(pkt->data + 5, pkt->total - 5, 'M');
		server_close(s, m ? m : "error from idle server");
		return SB_GONE;
	}
	default:
		server_fail(s, "unexpected message '%c' from idle server", pkt->type);
		return SB_GONE;
	}
}

static enum sbuf_verdict server_packet(struct pgt_server *s, struct pgt_pkt *pkt);

static enum sbuf_verdict server_on_packet(struct pgt_conn *conn, struct pgt_pkt *pkt)
{
	struct pgt_server *s = (struct pgt_server *)conn;
	if ((pkt->type == 'D' ||
	     (pkt->type == 'T' && (!s->ps_on || s->ps_untracked || !ps_server_busy(s)))) &&
	    s->client && !s->reset_pending && !s->own_rfq) {
		/* the bulk of most results, nothing to look at or track: as below */
		s->pool->stats.bytes_out += pkt->total;
		return SB_FORWARD;
	}
	if (s->reset_pending && pkt->type == '1' && s->state != SV_LOGIN)
		return reset_packet(s, pkt); /* the reset's answers, mostly in one step */
	return server_packet(s, pkt);
}

static __attribute__((noinline)) enum sbuf_verdict server_packet(struct pgt_server *s, struct pgt_pkt *pkt)
{
	struct pgt_conn *conn = &s->conn;
	struct pgt_client *c = s->client;
	/* a login, a registry query, a drain or an idle server have no client */
	if (__builtin_expect(!c || s->reset_pending || s->own_rfq, 0))
		return special_packet(s, pkt);
	if (pkt->type == 'C' && !pkt->full && pkt->total < 256)
		return SB_NEED_FULL; /* its tag is read below (before anything else acts on it) */
	if (s->ps_on && pkt->type != 'D' && !s->ps_untracked) {
		int v = ps_server_packet(s, pkt);
		if (v != PS_PASS)
			return (enum sbuf_verdict)v;
		if (s->conn.dead)
			return SB_GONE;
	}
	switch (pkt->type) {
	case 'Z': {
		if (!pkt->full)
			return SB_NEED_FULL;
		s->txn = (char)pkt->data[5];
		s->copy_in = false;
		if (s->expect_rfq > 0)
			s->expect_rfq--;
		if (s->ps_untracked)
			s->ps_untracked--; /* the oldest Query in flight is answered */
		struct pgt_pool *pool = s->pool;
		usec_t now = loop_now();
		if (s->query_start) {
			pool->stats.query_count++;
			pool->stats.query_time += (uint64_t)(now - s->query_start);
			s->query_start = s->expect_rfq ? now : 0;
		}
		if (s->txn == 'I') {
			pool->stats.xact_count++;
			c->xacts++;
			pool->stats.xact_time += (uint64_t)(now - c->xact_start);
			c->xact_start = now;
		}
		if (s->txn == 'I' && s->expect_rfq == 0 && !s->sent_since_rfq && c->conn.pkt_remain == 0 &&
		    pool_mode(pool) == PGT_POOL_TRANSACTION)
			sbuf_set_barrier(conn);
		pool->stats.bytes_out += pkt->total;
		return SB_FORWARD;
	}
	case 'S':
		if (!pkt->full)
			return SB_NEED_FULL;
		param_status(s, pkt->data + 5, pkt->total - 5);
		return SB_FORWARD;
	case 'C':
		if (s->session_track)
			command_tag(s, pkt);
		s->pool->stats.bytes_out += pkt->total;
		return SB_FORWARD;
	case 'E':
		if (!pkt->full && pkt->total < 4096)
			return SB_NEED_FULL;
		if (pkt->full) {
			const char *sev = proto_error_field(pkt->data + 5, pkt->total - 5, 'V');
			if (!sev)
				sev = proto_error_field(pkt->data + 5, pkt->total - 5, 'S');
			if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
				s->fatal_forwarded = true;
			int tsa = s->pool->dbstate->hosts->tsa;
			if (tsa == PGT_TSA_READ_WRITE || tsa == PGT_TSA_PRIMARY)
				read_only_error(s, pkt);
		}
		s->pool->stats.bytes_out += pkt->total;
		return SB_FORWARD;
	case 'G':
		s->copy_in = true;
		s->pool->stats.bytes_out += pkt->total;
		return SB_FORWARD;
	case 'A':
		return notification(s, pkt);
	default:
		s->pool->stats.bytes_out += pkt->total;
		return SB_FORWARD;
	}
}

static void server_on_barrier(struct pgt_conn *conn)
{
	struct pgt_server *s = (struct pgt_server *)conn;
	if (s->ps_on)
		ps_server_barrier(s);
	if (s->client && s->txn == 'I' && s->expect_rfq == 0 && !s->sent_since_rfq && !ps_server_busy(s) &&
	    !s->checking) {
		if (s->hint) {
			/* the transaction may have left session state: ask first */
			if (!session_check_start(s) && !s->conn.dead)
				server_close(s, "send failed");
			return;
		}
		struct pgt_client *c = s->client;
		bool held = s->client_held;
		s->client_held = false;
		if (!c->pin)
			server_release(s);
		if (held)
			sbuf_resume(&c->conn); /* what it sent during the check */
	}
}

static void server_on_close(struct pgt_conn *conn, const char *reason, bool protocol_error)
{
	struct pgt_server *s = (struct pgt_server *)conn;
	if (protocol_error)
		server_fail(s, "protocol error from server: %s", reason);
	else if (s->state == SV_LOGIN)
		server_fail(s, "%s", reason ? reason : "server closed the connection during login");
	else {
		if (!pgt.shutting_down && hosts_watched(s->pool->dbstate->hosts))
			hosts_failover(s->pool->dbstate->hosts, &s->conn.addr,
			               "a server connection was lost");
		server_close(s, reason ? reason : "server closed the connection unexpectedly");
	}
}

static struct pgt_conn *server_peer(struct pgt_conn *conn)
{
	struct pgt_server *s = (struct pgt_server *)conn;
	return s->client ? &s->client->conn : NULL;
}

/* ---- linking ---- */

bool server_link(struct pgt_server *s, struct pgt_client *c)
{
	struct pgt_pool *pool = s->pool;
	janitor_wake(); /* its timeouts are watched from now on */
	set_state(s, SV_ACTIVE, &pool->active_servers);
	s->client = c;
	c->server = s;
	s->expect_rfq = 0;
	s->sent_since_rfq = false;
	s->query_start = 0;
	s->need_setup = true;
	s->keep_state = s->affine == c;
	s->last_pool = pool;
	s->last_tenant = pool->hash;
	server_unaffine(s);
	s->cut = false;
	s->session_track = pool->session_track && !pool->internal;
	s->ps_on = pool->ps_on && !pool->internal;
	s->ps_untracked = 0;
	s->hint = 0;
	s->check_names[0] = '\0';
	/* the server may have been blocked on this client before, or the client
	 * may wait for room in the server's socket: re-evaluate (an idle server
	 * otherwise only waits to read, as it still does) */
	sbuf_update_events_idle(&s->conn, &c->conn);
	return true;
}

void server_begin(struct pgt_server *s, struct pgt_client *c)
{
	s->need_setup = false;
	if (s->moved) {
		/* another tenant's connection until now: nothing of its state is
		 * kept, not even pgtenant's statements */
		s->dirty = s->dirty || ps_server_count(s) > 0;
	}
	const struct client_sync *cs = client_sync_message(c, &s->base, s->pool->pin.hash);
	const uint8_t *sync = cs->msg;
	size_t synclen = cs->len;
	int n = 0;
	if (s->dirty) {
		s->reset_pending = true;
		s->reset_cmds = 1;
		s->reset_keep = !s->reset_simple && !s->moved && ps_server_count(s) > 0 &&
		                (s->keep_state || s->pool->ps_uses_avg >= PS_KEEP_USES * 16) &&
		                pgt.cfg->max_prepared_statements > 0;
		if (!s->reset_keep)
			ps_server_forget(s); /* DISCARD ALL deallocates them */
		if (s->reset_simple) {
			/* an old server: the reset must be confirmed before anything of
			 * the client's goes out, so it leaves now, and the client waits */
			s->reset_fence = true;
			if (!sbuf_send_raw(&s->conn, reset_query_msg, sizeof(reset_query_msg)) ||
			    (synclen && !sbuf_send_raw(&s->conn, sync, synclen)))
				server_fail(s, "send failed"); /* the client learns it at once */
			s->own_rfq += synclen ? 1 : 0;
			return;
		}
		if (s->reset_keep) {
			const struct keep_reset *k = keep_reset(s->superuser, s->keep_state);
			s->prefix.iov[n].iov_base = k->msg.data;
			s->prefix.iov[n++].iov_len = k->msg.len;
			s->reset_cmds = k->cmds;
		} else {
			s->prefix.iov[n].iov_base = (void *)reset_msg;
			s->prefix.iov[n++].iov_len = sizeof(reset_msg);
		}
	}
	if (synclen) {
		s->prefix.iov[n].iov_base = (void *)sync;
		s->prefix.iov[n++].iov_len = synclen;
		s->own_rfq++;
		s->sync_sets = cs->sets;
	}
	s->dirty = true;
	s->moved = false;
	if (n) {
		s->prefix.n = n;
		sbuf_set_prefix(&s->conn, &s->prefix);
	}
}

/* Tell a COPY FROM STDIN whose client is gone that no more data comes. */
static bool send_copy_fail(struct pgt_server *s)
{
	static const uint8_t msg[] = {'f', 0,   0,   0,   21,  'c', 'l', 'i', 'e', 'n', 't',
	                              ' ', 'w', 'e', 'n', 't', ' ', 'a', 'w', 'a', 'y', 0};
	_Static_assert(sizeof(msg) == 1 + 21, "CopyFail length");
	s->copy_in = false;
	if (!sbuf_send_raw(&s->conn, msg, sizeof(msg))) {
		server_close(s, "send failed while draining");
		return false;
	}
	return true;
}

/* Is anything of the client's or pgtenant's still to be answered? */
static bool server_busy(const struct pgt_server *s)
{
	return s->cut || s->expect_rfq > 0 || s->sent_since_rfq || s->own_rfq > 0 || s->reset_pending ||
	       s->copy_in || s->conn.pkt_remain > 0 || s->conn.outq || s->conn.pre || ps_server_busy(s);
}

/* After the server was released (or its client vanished) at a point where
 * it is provably between transactions: back to the pool, or closed. */
static inline void server_settle(struct pgt_server *s)
{
	struct pgt_pool *pool = s->pool;
	usec_t now = loop_coarse_now();
	const struct pgt_config *cfg = pgt.cfg;
	if (s->close_needed || s->generation != pool->generation ||
	    (cfg->server_lifetime > 0 && now - s->conn.connect_time > cfg->server_lifetime)) {
		server_close(s,
		             s->close_needed ? "close requested" : "server lifetime over or backend changed");
		return;
	}
	const char *yield = pool_should_yield(pool);
	if (yield) {
		server_close(s, yield);
		return;
	}
	pool_server_ready(pool, s);
}

/* While draining: once everything is answered, keep or close.  Returns
 * false if s was closed. */
static bool server_drain_check(struct pgt_server *s)
{
	if (server_busy(s))
		return true;
	s->draining = false;
	if (s->cancel_sent || s->txn != 'I') {
		server_close(s, s->cancel_sent ? "query of a vanished client cancelled; closed once idle"
		                               : "client went away inside a transaction");
		return false;
	}
	server_log(s, PGT_LOG_DEBUG, "drained what a vanished client left");
	server_settle(s);
	return !s->conn.dead;
}

/* The client left while s was not between transactions. */
static void server_abandon(struct pgt_server *s)
{
	if (s->cut) {
		server_close(s, "client went away in the middle of a message");
		return;
	}
	set_state(s, SV_USED, &s->pool->used_servers);
	s->draining = true;
	s->cancel_sent = false;
	s->drain_start = loop_now();
	/* (a server skipping to the Sync after an error runs nothing) */
	bool running = s->expect_rfq > 0 || (s->sent_since_rfq && !ps_server_skipping(s));
	if (s->copy_in && !send_copy_fail(s))
		return;
	if (s->sent_since_rfq && !drain_sync(s))
		return;
	if (running) {
		server_cancel(s);
		s->cancel_sent = true;
		server_log(s, PGT_LOG_INFO, "client went away mid-query: query cancelled, draining");
	}
	if (!server_drain_check(s))
		return;
	/* The client left while its socket was full (a slow reader): s was
	 * blocked on it, not reading.  Drop what it parsed for the client and
	 * read again, or nothing is drained and PostgreSQL, which acts on a
	 * cancel only once its write completes, keeps the query running until
	 * SERVER_DRAIN_TIMEOUT. */
	if (s->conn.blocked && !s->conn.in_pump && sbuf_flush_parsed(&s->conn))
		sbuf_pump(&s->conn);
}

void server_release(struct pgt_server *s)
{
	struct pgt_pool *pool = s->pool;
	struct pgt_client *c = s->client;
	if (s->ps && (s->ps->uses || pool->ps_uses_avg)) {
		int32_t uses = (int32_t)ps_server_take_uses(s) * 16, avg = (int32_t)pool->ps_uses_avg;
		pool->ps_uses_avg = (uint32_t)((avg * 7 + uses) / 8); /* reaches 0 when unused */
	}
	if (c) {
		c->server = NULL;
		s->client = NULL;
		/* without a server the client cannot be waiting to write for it */
		if (c->conn.blocked || (c->conn.ev_mask & EV_WRITE))
			sbuf_update_events(&c->conn);
		if (c->state != CL_DEAD && pool_mode(pool) == PGT_POOL_TRANSACTION) {
			/* should c come back while the connection is idle, it goes on
			 * here (server_begin) */
			if (c->last_server && c->last_server->affine == c)
				c->last_server->affine = NULL;
			s->affine = c;
			c->last_server = s;
		}
	}
	s->need_setup = false;
	s->client_held = false;
	if (s->state == SV_DEAD)
		return;
	if (pool->replication) {
		server_close(s, "a replication connection is not reused");
		return;
	}
	if (s->txn != 'I' || server_busy(s)) {
		server_abandon(s);
		return;
	}
	if (!c && pool_mode(pool) == PGT_POOL_SESSION && pgt.cfg->server_reset_query[0] && !s->close_needed &&
	    s->generation == pool->generation) {
		/* session mode, the client is gone: the DBA's server_reset_query
		 * (pgtenant's own reset comes anyway with the next link) */
		struct pktbuf b;
		pktbuf_init(&b);
		pktbuf_start(&b, 'Q');
		pktbuf_put_str(&b, pgt.cfg->server_reset_query);
		pktbuf_finish(&b);
		set_state(s, SV_USED, &pool->used_servers);
		bool ok = sbuf_send_raw(&s->conn, b.data, b.len);
		pktbuf_free(&b);
		if (!ok) {
			server_close(s, "send failed");
			return;
		}
		s->own_rfq++;
		return;
	}
	server_settle(s);
}

void server_check(struct pgt_server *s, usec_t now)
{
	if (s->draining && now - s->drain_start > SERVER_DRAIN_TIMEOUT)
		server_close(s, "a vanished client's query did not end after its cancel");
}

void server_close_moved(struct pgt_hostset *hs)
{
	struct list *i, *tmp;
	list_for_each_safe (i, tmp, &pgt_all_servers) {
		struct pgt_server *o = container_of(i, struct pgt_server, conn_all_node);
		if (o->pool->dbstate->hosts != hs || o->state == SV_LOGIN ||
		    o->conn.addr.sa.sa_family == AF_UNIX || hosts_has_addr(hs, &o->conn.addr))
			continue;
		if (o->state == SV_IDLE)
			server_close(o, "its host name now resolves elsewhere");
		else
			o->close_needed = true;
	}
}

/* ---- server_check_query ---- */

void server_check_horizon(usec_t now)
{
	const struct pgt_config *cfg = pgt.cfg;
	if (!cfg->server_check_query[0])
		pgt.check_before = INT64_MIN;
	else if (cfg->server_check_delay <= 0)
		pgt.check_before = INT64_MAX;
	else
		pgt.check_before = now - cfg->server_check_delay;
}

bool server_start_check(struct pgt_server *s)
{
	struct pgt_pool *pool = s->pool;
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_start(&b, 'Q');
	pktbuf_put_str(&b, pgt.cfg->server_check_query);
	pktbuf_finish(&b);
	set_state(s, SV_USED, &pool->used_servers);
	s->health_check = true;
	pool->nchecking++;
	bool ok = sbuf_send_raw(&s->conn, b.data, b.len);
	pktbuf_free(&b);
	if (!ok) {
		server_close(s, "server_check_query could not be sent");
		return false;
	}
	s->own_rfq++;
	sbuf_update_events(&s->conn);
	return true;
}

/* ---- cancel requests ---- */

struct pgt_cancel {
	struct pgt_conn conn;
	uint32_t pid, key;
	struct evdns_getaddrinfo_request *dns;
};

static enum sbuf_verdict cancel_on_packet(struct pgt_conn *conn, struct pgt_pkt *pkt)
{
	(void)conn;
	(void)pkt;
	return SB_SKIP;
}

static void cancel_free_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	free(arg);
}

static void cancel_free(struct pgt_cancel *k)
{
	sbuf_close(&k->conn);
	/* libevent may still be inside this connection's callback: free on the next turn */
	struct timeval zero = {0, 0};
	if (event_base_once(pgt.base, -1, EV_TIMEOUT, cancel_free_cb, k, &zero) < 0)
		log_warning("could not schedule the release of a cancel connection");
}

static void cancel_on_close(struct pgt_conn *conn, const char *reason, bool protocol_error)
{
	(void)reason;
	(void)protocol_error;
	cancel_free((struct pgt_cancel *)conn);
}

static struct pgt_conn *cancel_peer(struct pgt_conn *conn)
{
	(void)conn;
	return NULL;
}

static void cancel_on_connected(struct pgt_conn *conn)
{
	struct pgt_cancel *k = (struct pgt_cancel *)conn;
	uint8_t pkt[16];
	proto_put_be32(pkt, 16);
	proto_put_be32(pkt + 4, PROTO_CANCEL_CODE);
	proto_put_be32(pkt + 8, k->pid);
	proto_put_be32(pkt + 12, k->key);
	ssize_t n = send(conn->fd, pkt, sizeof(pkt), MSG_NOSIGNAL);
	if (n != (ssize_t)sizeof(pkt)) {
		log_warning("could not send cancel request");
		cancel_free(k);
		return;
	}
	/* PostgreSQL closes the connection when done; wait for that EOF */
	sbuf_update_events(conn);
}

static const struct conn_ops cancel_ops = {
    .on_packet = cancel_on_packet,
    .on_barrier = NULL,
    .on_close = cancel_on_close,
    .peer = cancel_peer,
    .on_connected = cancel_on_connected,
};

void server_cancel(struct pgt_server *s)
{
	if (s->conn.dead || s->conn.fd < 0)
		return;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (s->conn.addr.sa.sa_family == AF_UNIX) {
		if (getpeername(s->conn.fd, (struct sockaddr *)&ss, &len) < 0)
			return;
	} else {
		len = s->conn.addr.sa.sa_family == AF_INET ? sizeof(struct sockaddr_in)
		                                           : sizeof(struct sockaddr_in6);
		memcpy(&ss, &s->conn.addr, len);
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	struct pgt_cancel *k = calloc(1, sizeof(*k));
	if (!k) {
		close(fd);
		return;
	}
	sbuf_init(&k->conn, fd, CONN_CANCEL, &cancel_ops);
	k->pid = s->be_pid;
	k->key = s->be_key;
	if (connect(fd, (struct sockaddr *)&ss, len) == 0) {
		cancel_on_connected(&k->conn);
		return;
	}
	if (errno != EINPROGRESS) {
		cancel_free(k);
		return;
	}
	k->conn.connecting = true;
	sbuf_update_events(&k->conn);
}
