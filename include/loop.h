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
	int nclients; /* all client connections, admin included */
};

extern struct pgt_loop pgt;

/* Cached time of the current loop iteration (no syscall on the hot path). */
usec_t loop_now(void);

/* Called from the admin console and signal handlers. */
bool loop_reload(void);
void loop_shutdown(bool immediate);

#endif
