/*
 * The costs and the shape of client authentication, below auth.c's wire
 * handling: the SCRAM secret of a plain-text auth_file entry is derived once
 * per userlist (PBKDF2 is ~1 ms of the single loop), an unknown user's mock
 * secret costs no PBKDF2 and looks like a known user's (stable salt per name,
 * same iteration count), and the per-address failure bookkeeping that paces
 * failed logins (delays, growth, reset, expiry, bounded memory).
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "addrstate.h"
#include "scram.h"
#include "tap.h"
#include "userlist.h"

#define MS ((usec_t)1000)

static struct pgt_userlist *load(const char *text)
{
	static struct pgt_userlist ul;
	int errline = 0;
	char err[256];
	if (!userlist_parse(text, &ul, &errline, err, sizeof(err))) {
		tap_ok(false, "userlist parses (line %d: %s)", errline, err);
		exit(1);
	}
	return &ul;
}

/* The value of attribute a in a SCRAM message, malloc'd. */
static char *attr(const char *msg, char a)
{
	for (const char *p = msg; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
		if (p[0] == a && p[1] == '=') {
			const char *end = strchr(p, ',');
			return strndup(p + 2, end ? (size_t)(end - p - 2) : strlen(p + 2));
		}
	}
	return strdup("");
}

/* A whole exchange of the scram_server role against sec, with a client that
 * knows password; returns whether it succeeded and, in *salt, the salt the
 * server sent (what an attacker sees). */
static bool exchange(const struct scram_secret *sec, const char *password, char **salt)
{
	struct scram_client cl;
	struct scram_server sv;
	const char *reason = NULL;
	char *cf = scram_client_first(&cl, "", NULL);
	char *sf = scram_server_first(&sv, cf, strlen(cf), sec, NULL, &reason);
	char *fin = sf ? scram_client_final(&cl, password, sf, strlen(sf), &reason) : NULL;
	char *v = fin ? scram_server_final(&sv, fin, strlen(fin), NULL, &reason) : NULL;
	bool ok = v && scram_client_verify(&cl, v, strlen(v));
	if (salt) {
		char *iter = attr(sf ? sf : "", 'i');
		if (strcmp(iter, "4096") != 0)
			tap_ok(false, "iteration count is 4096, not %s", iter);
		free(iter);
		*salt = attr(sf ? sf : "", 's');
	}
	free(cf);
	free(sf);
	free(fin);
	free(v);
	scram_client_clear(&cl);
	scram_server_clear(&sv);
	return ok;
}

static void plaintext_user(void)
{
	struct pgt_userlist *ul = load("\"alice\" \"wonderland\"\n"
	                               "\"bob\" \"md57541d4e65fae11bd07f18dc6fe2b02bc\"\n");
	struct scram_secret a, b;
	uint64_t n0 = scram_pbkdf2_count();
	tap_ok(userlist_scram_secret(ul, "alice", &a), "secret of a plain-text entry");
	tap_ok(scram_pbkdf2_count() == n0 + 1, "the first SCRAM login of a plain-text user runs PBKDF2 once");
	tap_ok(userlist_scram_secret(ul, "alice", &b), "secret again");
	tap_ok(scram_pbkdf2_count() == n0 + 1, "the second one runs none (cached in the entry)");
	tap_ok(a.salt_len == SCRAM_SALT_LEN && b.salt_len == a.salt_len &&
	           memcmp(a.salt, b.salt, a.salt_len) == 0 &&
	           memcmp(a.stored_key, b.stored_key, SCRAM_KEY_LEN) == 0 &&
	           a.iterations == SCRAM_DEFAULT_ITER,
	       "both attempts see the same salt, iteration count and keys");

	/* the cached secret is the right one, and the exchange itself costs
	 * no PBKDF2 on the server side */
	char *s1 = NULL, *s2 = NULL;
	n0 = scram_pbkdf2_count();
	tap_ok(userlist_scram_secret(ul, "alice", &a) && exchange(&a, "wonderland", &s1),
	       "the right password logs in");
	tap_ok(userlist_scram_secret(ul, "alice", &b) && exchange(&b, "wonderland", &s2),
	       "and logs in again");
	tap_ok(scram_pbkdf2_count() == n0 + 1, "two exchanges: one PBKDF2 (the client's, cached after)");
	TAP_IS_STR(s1, s2, "same salt on the wire at both attempts");
	free(s1);
	free(s2);
	tap_ok(!exchange(&a, "rabbit", NULL), "a wrong password fails");

	/* a reload builds a new userlist: the cache goes with the old one */
	userlist_free(ul);
	ul = load("\"alice\" \"wonderland\"\n");
	n0 = scram_pbkdf2_count();
	tap_ok(userlist_scram_secret(ul, "alice", &b), "secret from the reloaded list");
	tap_ok(scram_pbkdf2_count() == n0 + 1 && memcmp(a.salt, b.salt, a.salt_len) != 0,
	       "a new userlist derives afresh, with a new random salt");
	userlist_free(ul);
}

static void stored_secret(void)
{
	uint8_t salt[SCRAM_SALT_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
	struct scram_secret sec, got;
	tap_ok(scram_secret_from_password("pencil", salt, sizeof(salt), SCRAM_DEFAULT_ITER, &sec), "derive");
	char s64[64], k1[64], k2[64], text[256];
	scram_b64_encode(salt, sizeof(salt), s64);
	scram_b64_encode(sec.stored_key, SCRAM_KEY_LEN, k1);
	scram_b64_encode(sec.server_key, SCRAM_KEY_LEN, k2);
	snprintf(text, sizeof(text), "\"carol\" \"SCRAM-SHA-256$4096:%s$%s:%s\"\n", s64, k1, k2);
	struct pgt_userlist *ul = load(text);
	uint64_t n0 = scram_pbkdf2_count();
	tap_ok(userlist_scram_secret(ul, "carol", &got) && scram_pbkdf2_count() == n0 &&
	           memcmp(got.stored_key, sec.stored_key, SCRAM_KEY_LEN) == 0,
	       "a SCRAM entry is parsed, not derived");
	tap_ok(exchange(&got, "pencil", NULL), "and its password logs in");
	userlist_free(ul);
}

static void unknown_user(void)
{
	struct pgt_userlist *ul = load("\"alice\" \"wonderland\"\n");
	struct scram_secret a, b, c, known;
	uint64_t n0 = scram_pbkdf2_count();
	tap_ok(userlist_scram_secret(ul, "mallory", &a) && userlist_scram_secret(ul, "mallory", &b) &&
	           userlist_scram_secret(ul, "trudy", &c),
	       "secrets for unknown users");
	tap_ok(scram_pbkdf2_count() == n0, "unknown users cost no PBKDF2");
	tap_ok(a.salt_len == b.salt_len && memcmp(a.salt, b.salt, a.salt_len) == 0,
	       "the same unknown name gets the same salt at every attempt");
	tap_ok(memcmp(a.salt, c.salt, a.salt_len) != 0, "two unknown names get different salts");
	tap_ok(userlist_scram_secret(ul, "alice", &known), "a known user's secret");
	tap_ok(a.salt_len == known.salt_len && a.iterations == known.iterations,
	       "an unknown user's salt length and iteration count are a known user's");
	char *s1 = NULL, *s2 = NULL;
	n0 = scram_pbkdf2_count();
	tap_ok(!exchange(&a, "", &s1), "an unknown user cannot log in with an empty password");
	tap_ok(!exchange(&a, "wonderland", &s2), "nor with another user's password");
	TAP_IS_STR(s1, s2, "the salt on the wire is stable for an unknown name");
	free(s1);
	free(s2);
	userlist_free(ul);
}

static union pgt_addr v4(const char *s)
{
	union pgt_addr a;
	memset(&a, 0, sizeof(a));
	a.in.sin_family = AF_INET;
	inet_pton(AF_INET, s, &a.in.sin_addr);
	return a;
}

static union pgt_addr v6(const char *s)
{
	union pgt_addr a;
	memset(&a, 0, sizeof(a));
	a.in6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, s, &a.in6.sin6_addr);
	return a;
}

static void addr_basics(void)
{
	union pgt_addr un;
	memset(&un, 0, sizeof(un));
	un.sa.sa_family = AF_UNIX;
	tap_ok(addr_state_get(&un) == NULL, "a unix socket has no address state");
	addr_state_put(NULL);
	tap_ok(addr_state_failure_delay(NULL, 100 * MS, 0) == 100 * MS,
	       "a unix socket's failure waits the base");

	union pgt_addr a = v4("192.0.2.1"), mapped = v6("::ffff:192.0.2.1"), other = v6("2001:db8::1");
	struct addr_state *s = addr_state_get(&a), *s2 = addr_state_get(&mapped),
	                  *s3 = addr_state_get(&other);
	tap_ok(s && s == s2, "IPv4-mapped IPv6 is the same address as IPv4");
	tap_ok(s3 && s3 != s, "another address has its own state");
	s->nlogin++;
	tap_ok(s2->nlogin == 1 && s3->nlogin == 0, "nlogin is per address");
	s->nlogin--;
	addr_state_put(s);
	addr_state_put(s2);
	addr_state_put(s3);
	tap_ok(addr_state_count() == 0, "unreferenced entries without failures are freed at once");
}

static void addr_delays(void)
{
	union pgt_addr a = v4("198.51.100.7");
	usec_t base = 100 * MS, now = 1000 * USEC_PER_SEC;
	usec_t want[] = {100, 200, 400, 800, 1600, 1600, 1600};
	bool ok = true;
	for (size_t i = 0; i < PGT_ARRAY_SIZE(want); i++) {
		struct addr_state *s = addr_state_get(&a);
		usec_t d = addr_state_failure_delay(s, base, now);
		if (d != want[i] * MS) {
			ok = false;
			tap_ok(false, "failure %zu waits %lld ms, not %lld", i + 1, (long long)(d / MS),
			       (long long)want[i]);
		}
		addr_state_put(s);
		now += USEC_PER_SEC;
	}
	tap_ok(ok, "delays double per failure, at most 16 times the base");
	tap_ok(addr_state_count() == 1, "an address with failures is remembered without references");

	struct addr_state *s = addr_state_get(&a);
	addr_state_success(s);
	tap_ok(s->failures == 0, "a successful login forgets the failures");
	addr_state_put(s);
	tap_ok(addr_state_count() == 0, "and the entry goes");
	s = addr_state_get(&a);
	tap_ok(addr_state_failure_delay(s, base, now) == base, "the next failure waits the base again");
	addr_state_put(s);

	/* a minute without failures: forgotten, even before the janitor runs */
	now += ADDR_STATE_MEMORY;
	s = addr_state_get(&a);
	tap_ok(addr_state_failure_delay(s, base, now) == base, "after a minute of quiet the base again");
	tap_ok(addr_state_failure_delay(s, base, now + 1) == 2 * base, "then it grows again");
	tap_ok(addr_state_failure_delay(s, 0, now + 2) == 0 && s->failures == 2,
	       "auth_failure_delay 0: answered at once, nothing recorded");
	addr_state_put(s);

	addr_state_expire(now + ADDR_STATE_MEMORY - 1);
	tap_ok(addr_state_count() == 1, "expiry keeps failures younger than a minute");
	addr_state_expire(now + ADDR_STATE_MEMORY + 1);
	tap_ok(addr_state_count() == 0, "and forgets older ones");

	/* a referenced entry loses its failures at expiry but stays */
	s = addr_state_get(&a);
	addr_state_failure_delay(s, base, now);
	addr_state_expire(now + 2 * ADDR_STATE_MEMORY);
	tap_ok(addr_state_count() == 1 && s->failures == 0,
	       "expiry keeps a referenced entry, without failures");
	addr_state_put(s);
	tap_ok(addr_state_count() == 0, "its last reference frees it");
}

static void addr_bounded(void)
{
	usec_t now = 5000 * USEC_PER_SEC;
	union pgt_addr a;
	memset(&a, 0, sizeof(a));
	a.in6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8::", &a.in6.sin6_addr);
	int n = ADDR_STATE_MAX_FAILED + 10;
	for (int i = 0; i < n; i++) {
		memcpy(&a.in6.sin6_addr.s6_addr[12], &i, sizeof(i));
		struct addr_state *s = addr_state_get(&a);
		addr_state_failure_delay(s, MS, now + i);
		addr_state_put(s);
	}
	tap_ok(addr_state_count() == ADDR_STATE_MAX_FAILED, "entries kept for their failures are capped (%d)",
	       addr_state_count());
	int first = 0, last = n - 1;
	memcpy(&a.in6.sin6_addr.s6_addr[12], &first, sizeof(first));
	struct addr_state *s = addr_state_get(&a);
	tap_ok(s->failures == 0, "the oldest failures were evicted");
	addr_state_put(s);
	memcpy(&a.in6.sin6_addr.s6_addr[12], &last, sizeof(last));
	s = addr_state_get(&a);
	tap_ok(s->failures == 1, "the newest are kept");
	addr_state_put(s);
	/* expiry is amortised: a bounded amount per call, all of it eventually */
	int calls = 0;
	while (addr_state_count() > 0 && calls < 1000) {
		addr_state_expire(now + n + ADDR_STATE_MEMORY);
		calls++;
	}
	tap_ok(addr_state_count() == 0 && calls > 1, "expired over %d janitor ticks", calls);
}

int main(void)
{
	plaintext_user();
	stored_secret();
	unknown_user();
	addr_basics();
	addr_delays();
	addr_bounded();
	return tap_done();
}
