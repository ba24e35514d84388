/*
 * The admin console: the virtual database "pgtenant" (alias "pgbouncer"),
 * simple query protocol, one {name, handler} table of commands.
 */
#ifndef PGT_ADMIN_H
#define PGT_ADMIN_H

#include <stdbool.h>

struct pgt_client;

bool admin_is_admin_db(const char *dbname);
/* Handle one whole Query message body from an admin client; false if the
 * client was closed. */
bool admin_query(struct pgt_client *c, const char *sql);
/* Complete PAUSE/WAIT_CLOSE replies whose condition is met (janitor). */
/* PAUSE / WAIT_CLOSE replies whose condition is met; true if some still wait. */
bool admin_check_pending(void);
/* ParameterStatus/BackendKeyData/ReadyForQuery for a new admin client. */
bool admin_welcome(struct pgt_client *c);

#endif
