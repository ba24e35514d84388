/*
 * The client side: login (startup, authentication, welcome), the state
 * machine of a logged-in client, and client_fail(), the one exit door for a
 * client that is refused or dropped.
 */
#ifndef PGT_CLIENT_H
#define PGT_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "list.h"
#include "sbuf.h"
#include "util.h"
#include "jwt.h"
#include "varcache.h"

struct pgt_pool;
struct pgt_server;
struct client_login;
struct pgt_tenant_state;
struct registry_lookup;
struct admin_pending;
struct addr_state;
struct ps_client;

enum client_state {
	CL_LOGIN,   /* startup and authentication */
	CL_WELCOME, /* authenticated, waiting for the pool's server parameters */
	CL_ACTIVE,  /* logged in and not waiting (may or may not hold a server) */
	CL_WAITING, /* waiting for a server connection */
	CL_ADMIN,   /* on the admin console */
	CL_DEAD,
};

struct pgt_client {
	struct pgt_conn conn; /* first: a conn pointer is a client pointer */
	struct list node;     /* on the list of its state */
	struct list all_node; /* on the global client list (cancel lookup, SHOW CLIENTS) */
	enum client_state state;
	uint32_t jwt_expiry; /* jwt_enforce_expiry: its token's exp + jwt_leeway (epoch seconds); 0 = none */
	struct pgt_pool *pool;
	struct pgt_server *server;
	struct pgt_server *last_server;  /* its last link's connection while it is `affine` to it */
	struct client_login *login;      /* only during login; freed after */
	char *user;                      /* login user name (tenant suffix removed) */
	char *server_user;               /* jwt_user_map's server user; NULL = user */
	char *tenant;                    /* NULL = no tenant */
	struct pgt_tenant_state *tstate; /* counted against its tenant's max_client_conn */
	struct registry_lookup *lookup;  /* waiting for the tenant registry's answer */
	uint64_t xacts;                  /* transactions it ended (the audit log's disconnect) */
	char *dbname;                    /* requested database */
	struct pgt_vars vars;            /* wanted session parameters */
	struct ps_client *ps;            /* its named prepared statements (transaction mode) */
	char *pin;                       /* why it keeps its server connection (transaction mode), or NULL */
	struct pgt_vars *tracked;        /* settings it SET itself, carried to its next server connections */
	uint32_t cancel_pid, cancel_key;
	usec_t wait_start;    /* when it started waiting for a server */
	usec_t xact_start;    /* when its current transaction/linking began */
	bool is_admin_user;   /* admin_users member (control commands allowed) */
	bool welcome_pending; /* session mode: welcomed once its server is linked */
	char replication;     /* 'd' replication=database, 'p' physical, 0 none */
	bool throttled;       /* queued behind its tenant's xact_rate (ratelimit.h) */
	bool rate_granted;    /* ... and granted: its held message is not charged again */
	bool registry_asked;
	/* for the audit log (audit.h), kept whether it is on or not (a reload
	 * may turn it on); bit fields, as the idle client has no byte to spare */
	uint8_t tenant_source : 3; /* which source named its tenant (audit_source_code) */
	uint8_t auth_method : 3;   /* enum audit_auth */
	uint8_t logged_in : 1;     /* welcomed: its end is a disconnect, not a refusal */
	bool user_counted;         /* in its login user's state (pool.h), found by name at close */
	char *audit_jwt;           /* "iss\0sub\0" of its token: JWT logins while audit_log is on only */
	struct admin_pending *admin_pending; /* a PAUSE/WAIT_CLOSE reply is outstanding */
	struct pgt_client *throttle_next;    /* next in its tenant's rate-limit queue */
	/* the Query that gives vars to a reset server of the pool opened with
	 * parameters whose hash is `base`; [0] for servers opened without any
	 * (the first of a pool), [1] for the others; allocated at the client's
	 * first transaction (an idle client does not pay for it), built when
	 * first needed and again when vars or the base differ */
	struct client_sync {
		uint8_t *msg;
		uint32_t len;
		uint16_t sets; /* SET statements in it */
		bool valid;
		uint64_t hash, base;
	} * sync;
};

extern struct list pgt_all_clients;
struct slab;
/* where logins in progress live (SHOW MEM) */
extern const struct slab *const client_login_slab;

void client_accept(int fd, const union pgt_addr *addr);
/* Close the unauthenticated connection (of addr, or any if NULL) that has
 * been silent longest, if it has been silent at least a second; false if
 * there is none. */
bool client_evict_silent_login(const struct addr_state *addr);
/* The per-address state of a client that has not authenticated yet (NULL
 * for unix sockets, or once it has). */
struct addr_state *client_login_addr(const struct pgt_client *c);
/* The one exit door: send FATAL sqlstate + message, log with identity, close. */
void client_fail(struct pgt_client *c, const char *sqlstate, const char *fmt, ...) PGT_PRINTF(3, 4);
/* Close without an error message (client left, or shutdown). */
void client_close(struct pgt_client *c, const char *reason);
/* Send an ERROR (connection stays usable) followed by nothing else. */
bool client_send_error(struct pgt_client *c, const char *sqlstate, const char *msg) _MUSTCHECK;
void client_log(const struct pgt_client *c, int level, const char *fmt, ...) PGT_PRINTF(3, 4);

/* The client authentication its database asks for (enum pgt_auth_type). */
int client_auth_type(const struct pgt_client *c);
/* A verified token's claims applied to c's login: its tenant (08004 when
 * invalid or conflicting: c is closed, -1), the tenant's issuer binding and
 * the user claim (a refusal for auth.c to answer: 1 with *why and text), or
 * 0 when all is well. */
struct jwt_result;
int client_jwt_identity(struct pgt_client *c, const struct jwt_result *r, enum jwt_reason *why, char *text,
                        size_t textlen);
/* The database entry of a login in progress (NULL: the admin console, or
 * not known yet). */
struct pgt_database;
const struct pgt_database *client_login_db(const struct pgt_client *c);
/* RELOAD: logins in progress take their database entry from the new
 * configuration (the old one is freed); one whose entry is gone is refused. */
void client_config_changed(void);
/* Its authentication finished outside a message of its own (a token that
 * waited for jwt_jwks_url): continue the login. */
void client_auth_resumed(struct pgt_client *c);
/* Called by the pool/server when the welcome parameters became available. */
void client_welcome(struct pgt_client *c);
/* The tenant registry answered: continue the login. */
void client_registry_done(struct pgt_client *c);
/* Called by the pool when a waiting client got a server. */
void client_linked(struct pgt_client *c, struct pgt_server *s);
/* Called by the server when its client must be told the server failed;
 * told: the server's own FATAL was forwarded to it already. */
void client_server_lost(struct pgt_client *c, const char *reason, bool told);

/* The Query message that gives a reset server of c's pool, opened with the
 * parameters `base`, c's session parameters; its len is 0 when none is
 * needed.  Valid until the next call. */
const struct client_sync *client_sync_build(struct pgt_client *c, const struct pgt_vars *base);
static inline const struct client_sync *client_sync_message(struct pgt_client *c, const struct pgt_vars *base,
                                                            uint64_t pin_hash)
{
	const struct client_sync *cs = c->sync ? &c->sync[base->n > 0] : NULL;
	if (cs && cs->valid && cs->hash == c->vars.hash && cs->base == (base->hash ^ pin_hash))
		return cs;
	return client_sync_build(c, base);
}

/* Move c to the list of state st (keeps the pool's per-state counts). */
void client_set_state(struct pgt_client *c, enum client_state st, struct list *lst);
void client_free_dead(void);
/* At exit: wipe what logins in progress hold; audit the end of the others. */
void client_shutdown(void);
struct list *client_login_list(void);
struct list *client_admin_list(void);
const char *client_state_name(const struct pgt_client *c);

#endif
