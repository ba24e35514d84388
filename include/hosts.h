/*
 * The backend hosts of a database entry (host=a,b,c, as libpq): their
 * resolved addresses, kept dns_max_ttl (a failure dns_nxdomain_ttl); what
 * pgtenant last saw of each address's role (primary, read-only primary,
 * standby, unreachable); the order in which a new server connection tries
 * them (target_session_attrs, load_balance_hosts); and failover: a sign
 * that the writer moved resolves the names again at once and, for a while,
 * lets waiting clients wait for the new one instead of failing them.
 *
 * One hostset per database entry state (pool.h's pgt_dbstate), shared by
 * all the entry's pools (tenants).  Nothing here is on the per-message path:
 * it runs when a server connection is opened, logs in, or is lost.
 */
#ifndef PGT_HOSTS_H
#define PGT_HOSTS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"
#include "dns.h"
#include "list.h"
#include "sbuf.h"
#include "util.h"

struct pgt_database;
struct evdns_getaddrinfo_request;

enum host_role {
	HOST_ROLE_UNKNOWN = 0,
	HOST_ROLE_PRIMARY,    /* not in recovery, writable */
	HOST_ROLE_PRIMARY_RO, /* not in recovery, default_transaction_read_only on */
	HOST_ROLE_STANDBY,    /* in recovery (hot standby) */
	HOST_ROLE_DOWN,       /* the last connect failed */
};

/* One address to try: a TCP address, or (sa.sa_family == AF_UNSPEC) the
 * unix socket of host `host`. */
struct host_cand {
	union pgt_addr sa;
	socklen_t len;
	uint8_t host;
};

#define HOSTS_MAX_CANDS (PGT_MAX_HOSTS * DNS_MAX_ADDRS)

/* The addresses one server login tries, in order.  A login that lands on a
 * server of the wrong role hands what is left to the next one. */
struct host_cands {
	int n, next;
	bool fallback_pass;  /* prefer-standby's second pass: any role will do */
	bool saw_fallback;   /* prefer-standby: a non-standby answered in the first pass */
	uint32_t generation; /* of the hostset when made */
	struct host_cand c[HOSTS_MAX_CANDS];
};

/* A server login waiting for names to be resolved. */
struct host_wait {
	struct list node;
	void (*cb)(struct host_wait *w);
};

struct pgt_host {
	char *name; /* as written; NULL = default unix socket dir */
	int port;
	bool is_unix;
	bool numeric; /* an IP address, not a name */
	int naddr;
	union pgt_addr addr[DNS_MAX_ADDRS];
	socklen_t addrlen[DNS_MAX_ADDRS];
	usec_t expires;     /* the answer (or error) is good until then */
	usec_t resolved_at; /* when it came */
	struct evdns_getaddrinfo_request *req;
	bool resolving, resolved;
	char error[128]; /* the last lookup's failure, "" if it worked */
};

struct addr_role {
	union pgt_addr sa;
	uint8_t role;
	usec_t at;
};

struct pgt_hostset {
	int n;
	struct pgt_host h[PGT_MAX_HOSTS];
	int tsa, lbh;        /* the entry's target_session_attrs, load_balance_hosts */
	uint32_t rr;         /* round-robin cursor */
	uint32_t generation; /* bumped when the host list changes */
	struct list waiters; /* struct host_wait: logins waiting for names */
	int nroles;
	struct addr_role roles[HOSTS_MAX_CANDS];
	usec_t failover_until; /* failed logins do not fail waiting clients until then */
	usec_t last_failover;  /* rate limit of the re-resolution a failover asks for */
	uint64_t failovers;    /* failover signs acted on (metrics) */
	const char *dbname;    /* for log lines (the dbstate's name) */
};

/* Make hs match the entry (host list, tsa, lbh); a changed host list
 * forgets addresses and roles.  Called on pool creation and reload. */
void hosts_sync(struct pgt_hostset *hs, const char *dbname, const struct pgt_database *db);
/* Fill out with the addresses to try for a new server connection.  True if
 * done (out->n may be 0: then *error says why); false if names are being
 * resolved: w->cb runs when they are (call again then).  w must stay valid
 * until then or hosts_cancel_wait(). */
bool hosts_pick(struct pgt_hostset *hs, struct host_cands *out, struct host_wait *w, const char **error);
void hosts_cancel_wait(struct host_wait *w);
/* The unix socket address of a candidate with AF_UNSPEC. */
bool hosts_unix_addr(const struct pgt_hostset *hs, const struct host_cand *c, struct sockaddr_un *un,
                     socklen_t *len);
/* Does a server of this role satisfy the entry's target_session_attrs? */
bool hosts_role_ok(int tsa, int role, bool fallback_pass);
/* The role a server reported at login: in_hot_standby and
 * default_transaction_read_only ("on"/"off"; NULL = not reported). */
int hosts_role_of(const char *in_hot_standby, const char *default_read_only);
/* Remember what was seen of an address. */
void hosts_set_role(struct pgt_hostset *hs, const union pgt_addr *a, int role);
int hosts_get_role(const struct pgt_hostset *hs, const union pgt_addr *a);
/* A sign that the writer may have moved: resolve the names again (at most
 * once a second), and let clients wait for a new server for a while.
 * Returns whether the hostset acted on it (not rate limited). */
bool hosts_failover(struct pgt_hostset *hs, const union pgt_addr *a, const char *why);
/* Does the entry get failover handling: a target_session_attrs other than
 * any, or a host given by name (whose DNS may move, as Aurora's cluster
 * endpoint does)?  Numeric single hosts keep the plain behaviour: a lost
 * server is not a reason to hold clients. */
bool hosts_watched(const struct pgt_hostset *hs);
/* Is a an address the entry's names resolve to now? */
bool hosts_has_addr(const struct pgt_hostset *hs, const union pgt_addr *a);
/* Failed logins should not fail the waiting clients now. */
bool hosts_in_failover(const struct pgt_hostset *hs);
/* "127.0.0.1:5432" / "[::1]:5432" */
void hosts_addr_text(const union pgt_addr *a, char *out, size_t outlen);
bool hosts_addr_equal(const union pgt_addr *a, const union pgt_addr *b);

#endif
