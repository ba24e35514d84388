/*
 * Prometheus text exposition (format 0.0.4) at /metrics on metrics_listen,
 * served by libevent's evhttp on the main event loop.  A scrape walks pools,
 * not clients (per-state counts are kept by the state machines), so it costs
 * O(pools) however many clients are connected.
 */
#ifndef PGT_METRICS_H
#define PGT_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

enum metrics_refusal {
	REFUSAL_NO_TENANT,
	REFUSAL_INVALID_TENANT,
	REFUSAL_UNKNOWN_TENANT,
	REFUSAL_TENANT_DISABLED,
	REFUSAL_TENANT_QUOTA,
	REFUSAL_AUTH_FAILED,
	REFUSAL_JWT_INVALID,
	REFUSAL_WAIT_TIMEOUT,
	REFUSAL_TLS,        /* TLS required, or no valid client certificate */
	REFUSAL_USER_QUOTA, /* the login user's max_user_client_connections */
	REFUSAL_COUNT,
};

extern uint64_t metrics_refusals[REFUSAL_COUNT];

static inline void metrics_refused(enum metrics_refusal r)
{
	metrics_refusals[r]++;
}

/* Start serving if metrics_listen is set; false on a bad address or bind error. */
bool metrics_start(const char *listen) _MUSTCHECK;
void metrics_stop(void);

#endif
