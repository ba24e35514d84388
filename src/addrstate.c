/*
 * Per-address bookkeeping (see addrstate.h).
 *
 * The table is keyed by the 16 bytes of the address and hashed with
 * SipHash-2-4 under a per-process random key: whoever connects chooses the
 * address (an IPv6 /64 offers 2^64 of them), and an unkeyed hash would let
 * them pile every entry into one chain and make each lookup a walk.
 *
 * Entries that remember failures are also on one list, in the order of their
 * last failure (a failure moves its entry to the tail), so that both expiry
 * and the cap on remembered failures work from the head: no walk of the
 * whole table, ever.
 */
#include "addrstate.h"

#include <stdlib.h>
#include <string.h>

#define ADDR_INITIAL_BUCKETS 256
/* entries looked at per addr_state_expire() call, so that the janitor's tick
 * stays short even after a burst of failures from many addresses */
#define ADDR_EXPIRE_BUDGET 2000
/* the delay doubles up to 2^4 = 16 times the base */
#define ADDR_MAX_SHIFT 4

static struct {
	bool ready;
	uint8_t hash_key[16];
	struct addr_state **buckets;
	size_t nbuckets; /* power of two */
	int nentries;
	int nfailed;        /* entries on failed */
	struct list failed; /* entries with failures > 0, oldest last_failure first */
} tab;

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                             \
	do {                                                                                                 \
		v0 += v1;                                                                                    \
		v1 = ROTL(v1, 13);                                                                           \
		v1 ^= v0;                                                                                    \
		v0 = ROTL(v0, 32);                                                                           \
		v2 += v3;                                                                                    \
		v3 = ROTL(v3, 16);                                                                           \
		v3 ^= v2;                                                                                    \
		v0 += v3;                                                                                    \
		v3 = ROTL(v3, 21);                                                                           \
		v3 ^= v0;                                                                                    \
		v2 += v1;                                                                                    \
		v1 = ROTL(v1, 17);                                                                           \
		v1 ^= v2;                                                                                    \
		v2 = ROTL(v2, 32);                                                                           \
	} while (0)

static uint64_t load_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* SipHash-2-4, the reference algorithm (Aumasson and Bernstein). */
static uint64_t siphash(const uint8_t key[16], const uint8_t *in, size_t len)
{
	uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
	uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
	uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
	size_t full = len - len % 8;
	for (size_t i = 0; i < full; i += 8) {
		uint64_t m = load_le64(in + i);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	uint64_t b = (uint64_t)len << 56;
	for (size_t i = 0; i < len % 8; i++)
		b |= (uint64_t)in[full + i] << (8 * i);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static bool addr_key(const union pgt_addr *a, uint8_t key[16])
{
	switch (a->sa.sa_family) {
	case AF_INET:
		memset(key, 0, 10);
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &a->in.sin_addr, 4);
		return true;
	case AF_INET6:
		memcpy(key, &a->in6.sin6_addr, 16);
		return true;
	default:
		return false;
	}
}

static bool tab_init(void)
{
	if (tab.ready)
		return true;
	if (!util_random(tab.hash_key, sizeof(tab.hash_key)))
		return false;
	tab.buckets = calloc(ADDR_INITIAL_BUCKETS, sizeof(*tab.buckets));
	if (!tab.buckets)
		return false;
	tab.nbuckets = ADDR_INITIAL_BUCKETS;
	list_init(&tab.failed);
	tab.ready = true;
	return true;
}

/* Keep chains short: double the buckets when there are more entries than
 * buckets.  A failed allocation only leaves the chains longer. */
static void tab_grow(void)
{
	size_t n = tab.nbuckets * 2;
	struct addr_state **b = calloc(n, sizeof(*b));
	if (!b)
		return;
	for (size_t i = 0; i < tab.nbuckets; i++) {
		struct addr_state *s = tab.buckets[i], *next;
		for (; s; s = next) {
			next = s->hnext;
			s->hnext = b[s->hash & (n - 1)];
			b[s->hash & (n - 1)] = s;
		}
	}
	free(tab.buckets);
	tab.buckets = b;
	tab.nbuckets = n;
}

static void tab_remove(struct addr_state *s)
{
	struct addr_state **pp = &tab.buckets[s->hash & (tab.nbuckets - 1)];
	while (*pp != s)
		pp = &(*pp)->hnext;
	*pp = s->hnext;
	tab.nentries--;
	free(s);
}

static void forget_failures(struct addr_state *s)
{
	if (s->failures == 0)
		return;
	s->failures = 0;
	s->last_failure = 0;
	list_del(&s->fail_node);
	tab.nfailed--;
}

struct addr_state *addr_state_get(const union pgt_addr *a)
{
	uint8_t key[16];
	if (!addr_key(a, key) || !tab_init())
		return NULL;
	uint64_t h = siphash(tab.hash_key, key, sizeof(key));
	struct addr_state **head = &tab.buckets[h & (tab.nbuckets - 1)];
	for (struct addr_state *s = *head; s; s = s->hnext) {
		if (s->hash == h && memcmp(s->key, key, sizeof(key)) == 0) {
			s->refs++;
			return s;
		}
	}
	/* not xcalloc: an attacker's connection must not be able to abort us */
	struct addr_state *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	memcpy(s->key, key, sizeof(key));
	s->hash = h;
	s->refs = 1;
	list_init(&s->fail_node);
	s->hnext = *head;
	*head = s;
	if (++tab.nentries > (int)tab.nbuckets)
		tab_grow();
	return s;
}

void addr_state_put(struct addr_state *s)
{
	if (!s)
		return;
	if (--s->refs <= 0) {
		s->refs = 0;
		if (s->failures == 0)
			tab_remove(s);
	}
}

usec_t addr_state_failure_delay(struct addr_state *s, usec_t base, usec_t now)
{
	if (base <= 0)
		return 0;
	if (!s)
		return base;
	/* do not rely on the janitor having expired an old streak */
	if (s->failures > 0 && now - s->last_failure >= ADDR_STATE_MEMORY)
		forget_failures(s);
	if (s->failures == 0)
		tab.nfailed++;
	else
		list_del(&s->fail_node);
	if (s->failures < 1000000)
		s->failures++;
	s->last_failure = now;
	list_append(&tab.failed, &s->fail_node);
	/* bounded memory: the oldest failures are the least useful to remember
	 * (s itself is at the tail, so it is never the one evicted) */
	while (tab.nfailed > ADDR_STATE_MAX_FAILED) {
		struct addr_state *old = container_of(list_first(&tab.failed), struct addr_state, fail_node);
		forget_failures(old);
		if (old->refs == 0)
			tab_remove(old);
	}
	return base << PGT_MIN(s->failures - 1, ADDR_MAX_SHIFT);
}

void addr_state_success(struct addr_state *s)
{
	if (s)
		forget_failures(s);
}

void addr_state_expire(usec_t now)
{
	if (!tab.ready)
		return;
	for (int budget = ADDR_EXPIRE_BUDGET; budget > 0 && !list_empty(&tab.failed); budget--) {
		struct addr_state *s = container_of(list_first(&tab.failed), struct addr_state, fail_node);
		if (now - s->last_failure < ADDR_STATE_MEMORY)
			break;
		forget_failures(s);
		if (s->refs == 0)
			tab_remove(s);
	}
}

int addr_state_count(void)
{
	return tab.nentries;
}
