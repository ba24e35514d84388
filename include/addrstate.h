/*
 * Bookkeeping per client source address, for the throttles of logins that
 * have not proven anything yet: how many connections from the address are
 * still unauthenticated (max_login_clients, maintained by client.c) and how
 * many of its authentications failed in a row (auth_failure_delay).
 *
 * An entry exists while someone holds a reference to it or while it
 * remembers failures; lookups are O(1) and the memory kept for failures
 * alone is capped (ADDR_STATE_MAX_FAILED entries, the oldest evicted first).
 */
#ifndef PGT_ADDRSTATE_H
#define PGT_ADDRSTATE_H

#include <stdint.h>

#include "list.h"
#include "sbuf.h"
#include "util.h"

/* Failures are forgotten after this long without a new one. */
#define ADDR_STATE_MEMORY (60 * USEC_PER_SEC)
/* Cap on the entries that remember failures (each is ~100 bytes). */
#define ADDR_STATE_MAX_FAILED 100000

/* Bookkeeping per client source address (IPv4/IPv6; unix sockets have none). */
struct addr_state {
	int nlogin; /* connections from this address that have not authenticated yet (maintained by client.c) */
	int failures;        /* consecutive failed authentications */
	usec_t last_failure; /* when the last one happened */

	/* private to addrstate.c */
	struct addr_state *hnext; /* hash chain */
	struct list fail_node;    /* on the failure list (oldest failure first) while failures > 0 */
	int refs;
	uint64_t hash;
	uint8_t key[16]; /* IPv6 bytes; IPv4 as IPv4-mapped IPv6, so that both spellings are one address */
};

/* NULL for AF_UNIX (or out of memory); creates the entry; takes a reference. */
struct addr_state *addr_state_get(const union pgt_addr *a);
/* Drops a reference (NULL is fine). */
void addr_state_put(struct addr_state *s);
/* Forget entries with no reference and no failure in the last minute.  For
 * the janitor (every 200 ms): looks only at the expired head of a list kept
 * in failure order, and at most a bounded number of entries per call. */
void addr_state_expire(usec_t now);
/* Record a failure and return how long its answer must wait: base, doubling
 * with each further failure, at most 16 * base.  base <= 0 records nothing
 * and returns 0; a NULL s (unix socket) returns base. */
usec_t addr_state_failure_delay(struct addr_state *s, usec_t base, usec_t now);
/* A successful login: forget the address's failures (NULL is fine). */
void addr_state_success(struct addr_state *s);
/* Entries in the table (tests, SHOW MEM). */
int addr_state_count(void);

#endif
