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
#include <string.h>

#include "sbuf.h"

struct pgt_client;
struct pgt_server;

#define SESSION_HINT_SET 1 /* settings may have changed */
#define SESSION_HINT_PIN 2 /* state that pins may have appeared or gone */

/* Hints from a query text (Query or Parse) and from a CommandComplete tag. */
uint8_t session_text_hint(const uint8_t *text, size_t len, struct pgt_server *s);
/* A Query beginning with SET: note the custom setting it names, if any. */
void session_note_set(struct pgt_server *s, const uint8_t *text, size_t len);
/* What a CommandComplete tag (without its zero) says the statement may
 * have changed in the session.  Inline: every tag goes through it. */
static inline uint8_t session_tag_hint(const char *tag, size_t len)
{
	switch (tag[0]) {
	case 'S':
		return len == 3 && memcmp(tag, "SET", 3) == 0 ? SESSION_HINT_SET : 0;
	case 'R':
		return len == 5 && memcmp(tag, "RESET", 5) == 0 ? SESSION_HINT_SET : 0;
	case 'D':
		if (len == 2 && memcmp(tag, "DO", 2) == 0)
			return SESSION_HINT_SET | SESSION_HINT_PIN;
		if (len >= 4 && (memcmp(tag, "DECL", 4) == 0 || memcmp(tag, "DEAL", 4) == 0 ||
		                 memcmp(tag, "DISC", 4) == 0 || memcmp(tag, "DROP", 4) == 0))
			return SESSION_HINT_PIN;
		return 0;
	case 'C':
		if (len == 4 && memcmp(tag, "CALL", 4) == 0)
			return SESSION_HINT_SET | SESSION_HINT_PIN;
		if (len >= 5 && memcmp(tag, "COPY ", 5) == 0)
			return 0;
		if (len == 6 && memcmp(tag, "COMMIT", 6) == 0)
			return 0;
		return SESSION_HINT_PIN; /* CREATE ..., CLOSE CURSOR */
	case 'L':
	case 'U':
		if (len >= 6 &&
		    (memcmp(tag, "LISTEN", 6) == 0 || memcmp(tag, "UNLISTEN", len < 8 ? len : 8) == 0))
			return SESSION_HINT_PIN;
		return 0;
	case 'P':
		return len == 7 && memcmp(tag, "PREPARE", 7) == 0 ? SESSION_HINT_PIN : 0;
	default:
		return 0;
	}
}

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
