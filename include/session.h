/*
 * Session state in transaction mode (see session.c): settings a client SETs
 * follow it to its next server connections; state that cannot follow it
 * pins it to its connection.
 */
#ifndef PGT_SESSION_H
#define PGT_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

struct pgt_client;
struct pgt_server;

#define SESSION_HINT_SET 1 /* settings may have changed */
#define SESSION_HINT_PIN 2 /* state that pins may have appeared or gone */

/* Hints from a query text (Query or Parse) and from a CommandComplete tag. */
uint8_t session_text_hint(const uint8_t *text, size_t len, struct pgt_server *s);
/* A Query beginning with SET: note the custom setting it names, if any. */
void session_note_set(struct pgt_server *s, const uint8_t *text, size_t len);
uint8_t session_tag_hint(const char *tag, size_t len);

/* Ask the server for the session's state (s is linked and idle); false if
 * sending failed (s is closed). */
bool session_check_start(struct pgt_server *s) _MUSTCHECK;
/* The check's answers (but its ReadyForQuery). */
enum sbuf_verdict session_check_packet(struct pgt_server *s, struct pgt_pkt *pkt);
/* Its ReadyForQuery came: take the settings over, pin or unpin. */
void session_check_done(struct pgt_server *s);

void session_unpin(struct pgt_client *c);
void session_client_free(struct pgt_client *c);

#endif
