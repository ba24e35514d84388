/*
 * The audit log (SPEC §10): one JSON object per line for each login,
 * refusal, disconnect, admin console control command and reload, to the
 * file audit_log names or, with audit_log = syslog, to syslog (facility
 * authpriv).  Lines are built with jansson and kept in memory, then
 * written by a timer (within 250 ms) or when 64 KiB are waiting, so the
 * loop never waits on the disk per event.  A file that cannot be opened or
 * written keeps its lines in memory (up to 1 MiB, then they are dropped and
 * counted) and is retried every second; the failure is logged once and
 * counted in /metrics, and the proxy goes on.  Never a password, token,
 * secret or query text: the hooks pass identities and SPEC §6 messages
 * only, and SET values are written only for keys that cannot hold one.
 */
#ifndef PGT_AUDIT_H
#define PGT_AUDIT_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct pgt_client;

enum audit_event { AUDIT_LOGIN, AUDIT_REFUSAL, AUDIT_DISCONNECT, AUDIT_ADMIN, AUDIT_RELOAD };

/* How a client authenticated (pgt_client.auth_method). */
enum audit_auth { AUDIT_AUTH_NONE = 0, AUDIT_AUTH_TRUST, AUDIT_AUTH_MD5, AUDIT_AUTH_SCRAM, AUDIT_AUTH_JWT };

/* One line's fields; NULL strings and negative numbers are left out, so a
 * line has only the keys that apply (in SPEC §10's order). */
struct audit_record {
	enum audit_event event;
	uint64_t conn; /* "C-<id>" as in the log; 0 = none */
	const char *tenant, *tenant_source, *user, *database, *addr;
	int tls; /* 1 / 0, -1 = none */
	const char *auth, *jwt_iss, *jwt_sub, *reason, *sqlstate;
	int64_t duration_ms, xacts, bytes_in, bytes_out;
	const char *command;
};

/* Is the audit log on?  Hooks test this first: off, an event costs one load. */
extern bool audit_enabled;
/* For /metrics: lines written, lines dropped, failed opens and writes. */
extern uint64_t audit_lines, audit_dropped, audit_errors;

/* The JSON line for r at wall-clock time now, with its newline; malloc'ed
 * (NULL if out of memory).  Strings that are not UTF-8 get '?' for their
 * bytes above 127 so that every line parses. */
char *audit_format(const struct audit_record *r, usec_t now);

/* Write to target ("" = off, "syslog", or a path), after what waits has
 * gone to the current one.  Called at startup and on every reload (with
 * the same target, it reopens the file: logrotate's rename + SIGHUP). */
void audit_configure(const char *target);
/* At exit: write what waits, and close. */
void audit_shutdown(void);

/* The code of a tenant source's name ("parameter", "user", ...) for
 * pgt_client.tenant_source; 0 for none. */
uint8_t audit_source_code(const char *name);

/* Keep a verified token's issuer and subject on c for its events (called
 * only while the audit log is on: an idle client does not pay for them). */
void audit_note_jwt(struct pgt_client *c, const char *iss, const char *sub);
void audit_login(const struct pgt_client *c);
/* c was refused before it logged in, or (when it had) dropped with an error. */
void audit_fail(const struct pgt_client *c, const char *sqlstate, const char *msg);
void audit_disconnect(const struct pgt_client *c, const char *reason);
/* An admin console control command (word and its arguments, as typed);
 * sqlstate and reason when it was refused. */
void audit_admin(const struct pgt_client *c, const char *word, const char *args, const char *sqlstate,
                 const char *reason);
/* A reload: from the admin console (c) or SIGHUP (c NULL); ok = the new
 * configuration is in force. */
void audit_reload(const struct pgt_client *c, bool ok);

#endif
