/*
 * Session parameters.  A client's wanted values (from its startup packet and
 * from ParameterStatus while it was linked) and a server connection's known
 * values.  When a client is linked to a server whose values differ,
 * pgtenant sends one SET/RESET query first and swallows its answer, so that
 * pooled clients keep their client_encoding, TimeZone, application_name...
 */
#ifndef PGT_VARCACHE_H
#define PGT_VARCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pktbuf;

struct pgt_var {
	char *key;
	char *value;
};

struct pgt_vars {
	struct pgt_var *v;
	uint8_t n, cap;
	/* Sum of a hash of every (lower-cased key, value) pair: equal sets have
	 * equal sums whatever their order, so "is this server already set up for
	 * this client" is one comparison on the per-transaction path. */
	uint64_t hash;
};

const char *vars_get(const struct pgt_vars *vs, const char *key);
void vars_set(struct pgt_vars *vs, const char *key, const char *value);
void vars_del(struct pgt_vars *vs, const char *key);
void vars_free(struct pgt_vars *vs);
/* A GUC name that can be written into SQL unquoted: [A-Za-z_][A-Za-z0-9_.]* */
bool vars_valid_name(const char *key);

/* Build a Query message that makes the server's values match the client's
 * (server values not wanted by the client go back to `defaults`).  Updates
 * server to what it will be.  Returns false if nothing needs to be sent. */
bool vars_sync_query(struct pgt_vars *server, const struct pgt_vars *client, const struct pgt_vars *defaults,
                     struct pktbuf *out);

/* Parse the `options` startup parameter ("-c a=b --c=d", backslash escapes)
 * into key/value pairs; returns false with a reason on malformed input. */
bool vars_parse_options(const char *options, struct pgt_vars *out, const char **reason);

#endif
