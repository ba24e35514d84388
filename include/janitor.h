/*
 * Periodic maintenance: timeouts, server lifetimes, min_pool_size, and the
 * end of a graceful shutdown.  Runs on a libevent timer, so timeouts cost
 * nothing on the per-message path.
 */
#ifndef PGT_JANITOR_H
#define PGT_JANITOR_H

#include <stdbool.h>

#include "loop.h"
#include "util.h"

bool janitor_start(void) _MUSTCHECK;
void janitor_stop(void);
/* One round; true if something is going on (then the next one is in 200 ms,
 * else in a second: an idle pgtenant wakes once a second). */
bool janitor_run(void);
/* Something started (a login, a wait, a link) while the janitor was slow:
 * back to 200 ms rounds at once, and a fresh coarse clock. */
void janitor_wake_slow(void);
static inline void janitor_wake(void)
{
	if (__builtin_expect(pgt.janitor_slow, 0))
		janitor_wake_slow();
}

#endif
