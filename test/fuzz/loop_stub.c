/*
 * main.c's loop globals for the fuzz targets, which link the core library
 * without main.c: no event loop, so the clock is the system's.
 */
#include <stdbool.h>
#include <stdlib.h>

#include "loop.h"
#include "util.h"

struct pgt_loop pgt;

usec_t loop_now_slow(void)
{
	return util_now();
}

/* reached only through the admin console and the janitor, which no target drives */
void loop_shutdown(bool immediate)
{
	(void)immediate;
	abort();
}

bool loop_reload(void)
{
	abort();
}
