/*
 * Periodic maintenance: timeouts, server lifetimes, min_pool_size, and the
 * end of a graceful shutdown.  Runs on a libevent timer, so timeouts cost
 * nothing on the per-message path.
 */
#ifndef PGT_JANITOR_H
#define PGT_JANITOR_H

#include <stdbool.h>

#include "util.h"

bool janitor_start(void) _MUSTCHECK;
void janitor_stop(void);
void janitor_run(void);

#endif
