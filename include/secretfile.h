/*
 * Backend passwords from files (server_password_file, an entry's
 * password_file=): a mounted secret, JSON {"username","password"} (AWS
 * Secrets Manager's format) or one line.  Parsing, and the run-time
 * registry of the files in use with their last good values (secretfile.c).
 */
#ifndef PGT_SECRETFILE_H
#define PGT_SECRETFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct pgt_config;
struct pgt_database;

/* A larger file is refused: a secret is a few hundred bytes, and reading
 * it must not hold up the event loop. */
#define SECRETFILE_MAX (64 * 1024)

struct pgt_secret {
	char *username; /* NULL = the file names none */
	char *password; /* never empty */
	/* run time: changes whenever username or password does (0 = never read) */
	uint64_t version;
};

/* Parse a file's contents: a JSON object with a "password" string (and an
 * optional "username"; other keys are ignored) if the first non-blank
 * character is `{`, else the first line with its line end stripped.  err
 * never quotes the contents. */
bool secretfile_parse(const char *buf, size_t len, struct pgt_secret *out, char *err,
                      size_t errlen) _MUSTCHECK;
/* Read (at most SECRETFILE_MAX bytes) and parse the file at path. */
bool secretfile_read(const char *path, struct pgt_secret *out, char *err, size_t errlen) _MUSTCHECK;
/* Cleanse and free the strings. */
void secretfile_clear(struct pgt_secret *s);
/* A relative path is relative to the config file's directory (as auth_file). */
char *secretfile_resolve(const char *cfgpath, const char *path);
/* The file that applies to db: its password_file=, else server_password_file; NULL = none. */
const char *secretfile_name(const struct pgt_config *cfg, const struct pgt_database *db);

/* ---- run time: cfg is the config in force ---- */

/* db's secret: the last good value of its file, read now if it never was;
 * NULL if db has no file or it was never read successfully.  Valid until
 * the next re-read (a later event). */
const struct pgt_secret *secretfile_get(const struct pgt_config *cfg, const struct pgt_database *db);
/* The server user of db's own pools: the file's username, else user=;
 * NULL = the client's user. */
const char *secretfile_db_user(const struct pgt_config *cfg, const struct pgt_database *db);
/* Read db's file again now, whatever its stat says (a server refused the
 * password with 28P01).  The entry as secretfile_get. */
const struct pgt_secret *secretfile_reread(const struct pgt_config *cfg, const struct pgt_database *db);
/* Janitor: at most once a second, stat() the files in use and re-read
 * those that changed (in place, renamed over, a symlink swapped). */
void secretfile_watch(usec_t now);
/* After a reload: re-read every file in use, forget those no longer named. */
void secretfile_config_changed(const struct pgt_config *cfg);
void secretfile_shutdown(void);

#endif
