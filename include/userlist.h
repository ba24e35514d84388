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

struct pgt_user {
	char *name;
	char *password;
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

#endif
