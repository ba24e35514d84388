/*
 * Keeping LISTEN/NOTIFY inside a tenant.
 *
 * PostgreSQL's notification channels belong to a database, not to a schema
 * or a role: every tenant of a shared database that listens on "orders"
 * hears every tenant's NOTIFY orders, payload included, and the same
 * application code makes every tenant listen on the same names.  No SQL text
 * shows a notification being sent (pg_notify() inside a function sends one),
 * so the check is made where one arrives: a NotificationResponse carries the
 * pid of the backend that sent it, and pgtenant knows the pid and the pool
 * of every server connection it opened.
 *
 * A notification reaches a client with a tenant unless it comes from one of
 * pgtenant's connections in a dedicated pool of another tenant.  Such a
 * connection belongs to that tenant for its whole life, so the answer is
 * exact, whenever the notification arrives.  Two cases cannot be attributed
 * and are delivered, as the README says: a connection of a shared pool
 * (whose tenant changes with each transaction, while a notification may
 * arrive long after the transaction that sent it, once the listener's own
 * transaction ends), and a backend pgtenant did not open (another pgtenant
 * instance, a direct connection, a job).
 *
 * The pid table: a chained hash over the servers that have reported their
 * BackendKeyData, linked through pgt_server.pid_next, so it costs no
 * allocation per connection.  pids repeat across hosts, so a match must
 * also be on the listener's host.  Only NotificationResponses look it up.
 */
#include "notify.h"

#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "client.h"
#include "hosts.h"
#include "pool.h"
#include "server.h"

static struct pgt_server **buckets;
static uint32_t nbuckets, count;

static uint32_t slot(uint32_t pid, uint32_t n)
{
	return (pid * 2654435761u) & (n - 1); /* pids are dense: spread them */
}

static void grow(void)
{
	uint32_t n = nbuckets ? nbuckets * 2 : 64;
	struct pgt_server **nb = calloc(n, sizeof(*nb));
	if (!nb)
		return; /* keep the old table: longer chains, still correct */
	for (uint32_t i = 0; i < nbuckets; i++) {
		struct pgt_server *s = buckets[i], *next;
		for (; s; s = next) {
			next = s->pid_next;
			uint32_t k = slot(s->be_pid, n);
			s->pid_next = nb[k];
			nb[k] = s;
		}
	}
	free(buckets);
	buckets = nb;
	nbuckets = n;
}

void notify_track(struct pgt_server *s)
{
	notify_untrack(s); /* a second BackendKeyData replaces the first */
	if (count >= nbuckets)
		grow();
	if (!nbuckets)
		return; /* out of memory: its notifications are not attributed */
	uint32_t k = slot(s->be_pid, nbuckets);
	s->pid_next = buckets[k];
	buckets[k] = s;
	s->pid_listed = true;
	count++;
}

void notify_untrack(struct pgt_server *s)
{
	if (!s->pid_listed)
		return;
	for (struct pgt_server **p = &buckets[slot(s->be_pid, nbuckets)]; *p; p = &(*p)->pid_next) {
		if (*p == s) {
			*p = s->pid_next;
			break;
		}
	}
	s->pid_next = NULL;
	s->pid_listed = false;
	count--;
}

/* Both connections lead to the same PostgreSQL (pids are per host). */
static bool same_host(const union pgt_addr *a, const union pgt_addr *b)
{
	if (a->sa.sa_family == AF_UNIX || b->sa.sa_family == AF_UNIX)
		return a->sa.sa_family == b->sa.sa_family; /* the path is not kept: assume one server */
	return hosts_addr_equal(a, b);
}

bool notify_allowed(const struct pgt_server *s, uint32_t pid)
{
	const char *mine = s->client ? s->client->tenant : NULL;
	if (!mine || !*mine || !nbuckets || pid == s->be_pid)
		return true;
	for (const struct pgt_server *o = buckets[slot(pid, nbuckets)]; o; o = o->pid_next) {
		if (o->be_pid != pid || o == s || !same_host(&o->conn.addr, &s->conn.addr))
			continue;
		if (o->shared)
			return true; /* a shared pool's connection: its sender cannot be named */
		const char *theirs = o->pool->tenant;
		return !theirs || !*theirs || strcmp(theirs, mine) == 0;
	}
	return true; /* not one of ours */
}
