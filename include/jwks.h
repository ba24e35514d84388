/*
 * jwt_jwks_url: each issuer's JSON Web Key Set fetched over HTTPS with
 * libevent's HTTP client on the event loop (names through evdns, TLS
 * through bufferevent_openssl, the certificate and host name checked
 * against OpenSSL's default trust store), cached, refreshed every
 * JWKS_REFRESH and when a token names a key id the set does not have (at
 * most once per JWKS_MIN_INTERVAL).  A login whose key is unknown waits for
 * that refresh instead of being refused; logins with known keys never wait.
 * A failed fetch keeps the keys in use and is logged and counted.
 */
#ifndef PGT_JWKS_H
#define PGT_JWKS_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct pgt_config;

#define JWKS_REFRESH (300 * USEC_PER_SEC)
#define JWKS_MIN_INTERVAL (10 * USEC_PER_SEC)
#define JWKS_MAX_URLS 16 /* jwt_jwks_url is a list: one per issuer (user pool) is normal */

/* Someone waiting for a fetch to end (success or not). */
struct jwks_waiter {
	struct jwks_waiter *next;
	void (*done)(struct jwks_waiter *w);
	bool waiting;
};

extern uint64_t jwks_fetches, jwks_fetch_failures;

/* The URLs in force or their issuers changed (startup, RELOAD): fetch them now. */
void jwks_configure(const struct pgt_config *cfg);
/* Periodic refresh (called by the janitor). */
void jwks_tick(uint64_t now_usec);
/* A token names an unknown key: fetch again if allowed, and register w to
 * hear when it ends.  false: no fetch will come (no URL, or too soon). */
bool jwks_wait_refresh(struct jwks_waiter *w);
/* w no longer waits (its client left). */
void jwks_unwait(struct jwks_waiter *w);
void jwks_shutdown(void);

#endif
