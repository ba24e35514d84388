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
/* The set's hash as if key were not in it. */
uint64_t vars_hash_without(const struct pgt_vars *vs, const char *key);
void vars_set(struct pgt_vars *vs, const char *key, const char *value);
void vars_del(struct pgt_vars *vs, const char *key);
void vars_free(struct pgt_vars *vs);
/* Set every value of src in dst. */
void vars_copy(struct pgt_vars *dst, const struct pgt_vars *src);
/* A parameter name PostgreSQL accepts (dot-separated identifiers); it is
 * written into SQL quoted, so keywords are fine (user.x, some.var). */
bool vars_valid_name(const char *key);
/* A byte that may appear in an identifier after its first. */
static inline bool vars_ident_char(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
	       ch == '_' || ch == '$' || ch >= 0x80;
}

/* May a value the server reported while a client was linked be replayed on
 * the client's next server connections?  Only parameters a client can SET
 * (not is_superuser or session_authorization after a SET ROLE, nor a pinned
 * search_path on a tenant connection). */
bool vars_replayable(const char *key, bool search_path_pinned);

/* A Query message of SETs that takes a server whose values are `defaults`,
 * overridden by `base` (NULL = none), to the client's values; a base value
 * the client did not ask for goes back to its default.  Returns the number
 * of SETs (0: nothing to do). */
/* pin: SET first, whatever the server has (a shared pool's tenant pin), or NULL */
int vars_build_sync(const struct pgt_vars *pin, const struct pgt_vars *client,
                    const struct pgt_vars *defaults, const struct pgt_vars *base, struct pktbuf *out);

/* The name PostgreSQL reports for an encoding the client named in any of
 * the spellings PostgreSQL accepts (case, punctuation, aliases: "utf-8",
 * "Unicode" -> "UTF8", "euc-jp" -> "EUC_JP", "iso-8859-1" -> "LATIN1");
 * NULL for a name PostgreSQL does not know. */
const char *vars_encoding_name(const char *value);

/* A key that must not be given twice with different values in `options`
 * (the tenant: the last one must not silently win). */
struct vars_watch {
	const char *key; /* in */
	bool conflict;   /* out: given twice, differently (parsing stops) */
	char other[64];  /* out: the second value */
};

/* Parse the `options` startup parameter ("-c a=b --c=d", backslash escapes)
 * into key/value pairs; returns false with a reason on malformed input or
 * a conflict on watch->key (watch may be NULL). */
bool vars_parse_options(const char *options, struct pgt_vars *out, struct vars_watch *watch,
                        const char **reason);

#endif
