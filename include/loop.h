/*
 * The process-wide runtime: the one event loop, the DNS base, the config in
 * force, and process-level counters.  Owned by main.c; other modules read it.
 */
#ifndef PGT_LOOP_H
#define PGT_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct event_base;
struct evdns_base;
struct pgt_config;

struct pgt_loop {
	struct event_base *base;
	struct evdns_base *dns;
	struct pgt_config *cfg;
	uint32_t bufsize;   /* pkt_buf at startup (not reloadable) */
	bool shutting_down; /* SIGINT: no new clients, exit when no server is in use */
	bool exit_now;
	uint64_t next_conn_id;
	int nclients;      /* all client connections, admin included */
	int nlogin;        /* ... of which not authenticated yet (max_login_clients) */
	usec_t coarse_now; /* loop_now() as of the last janitor run (every 200 ms, or
	                    * every second while nothing is going on: janitor.h) */
	bool janitor_slow; /* ... the latter: janitor_wake() when something starts */
	/* server_check_query is due on an idle connection released at or
	 * before this (the janitor moves it with coarse_now; INT64_MIN: never,
	 * INT64_MAX: always): one compare per hand-out */
	usec_t check_before;
	usec_t now_cache; /* loop_now() within one connection event (sbuf.c): 1 until
	                    * read, 0 outside one */
};

extern struct pgt_loop pgt;

usec_t loop_now_slow(void);
/* Cached time of the current loop iteration (no syscall on the hot path);
 * within a connection event, read once. */
static inline usec_t loop_now(void)
{
	return pgt.now_cache > 1 ? pgt.now_cache : loop_now_slow();
}
/* The time within the janitor's 200 ms: for stamps that only timeouts
 * checked by the janitor read (one load instead of ~40 instructions). */
static inline usec_t loop_coarse_now(void)
{
	return pgt.coarse_now;
}

/* Called from the admin console and signal handlers. */
bool loop_reload(void);
void loop_shutdown(bool immediate);

#endif
