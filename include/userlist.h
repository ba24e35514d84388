/*
 * auth_file in PgBouncer's userlist.txt format: one `"user" "password"` per
 * line, where the password is plain text, "md5" + 32 hex digits, or a SCRAM
 * secret "SCRAM-SHA-256$iter:salt$StoredKey:ServerKey".  Double quotes inside
 * a field are written twice.  Lines starting with ';' or '#' are comments.
 */
#ifndef PGT_USERLIST_H
#define PGT_USERLIST_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct scram_secret;

struct pgt_user {
	char *name;
	char *password;
	/* Plain-text password only (NULL for md5 and SCRAM entries): the SCRAM
	 * secret derived from it at the user's first SCRAM login, so that PBKDF2
	 * runs once per userlist and not once per attempt; iterations == 0 until
	 * then.  Allocated at parse time so that the cache can be filled through
	 * a const entry: it memoises the password, it is not part of the entry. */
	struct scram_secret *scram;
};

struct pgt_userlist {
	struct pgt_user *users;
	int n;
};

/* Parse text; on error returns false and sets *errline and err. */
bool userlist_parse(const char *text, struct pgt_userlist *out, int *errline, char *err,
                    size_t errlen) _MUSTCHECK;
/* Read a file; on error returns false and sets *errline (0 = file error). */
bool userlist_load(const char *path, struct pgt_userlist *out, int *errline, char *err,
                   size_t errlen) _MUSTCHECK;
void userlist_free(struct pgt_userlist *ul);
const struct pgt_user *userlist_find(const struct pgt_userlist *ul, const char *name);
/* The secret a SCRAM login as name is checked against: the entry's SCRAM
 * secret, or the one derived (once, with a random salt) from its plain
 * password, or for a name that is not in the list (or whose secret is
 * malformed) scram_mock_secret()'s, which no proof matches.  false only when
 * no random bytes could be had. */
bool userlist_scram_secret(const struct pgt_userlist *ul, const char *name,
                           struct scram_secret *out) _MUSTCHECK;

#endif
