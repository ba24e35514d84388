/*
 * Building protocol messages into a growable byte buffer.  Used for the
 * messages pgtenant originates (login, errors, admin console results), never
 * for forwarded traffic, which is not copied.
 */
#ifndef PGT_PKTBUF_H
#define PGT_PKTBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct pktbuf {
	uint8_t *data;
	size_t len, cap;
	size_t msg_start;   /* offset of the message being built */
	uint8_t fixed[512]; /* most messages fit here without malloc */
};

void pktbuf_init(struct pktbuf *b);
void pktbuf_free(struct pktbuf *b);
void pktbuf_reset(struct pktbuf *b);

/* Begin a message with type byte (0 = startup-style, no type byte). */
void pktbuf_start(struct pktbuf *b, uint8_t type);
void pktbuf_put_u8(struct pktbuf *b, uint8_t v);
void pktbuf_put_u16(struct pktbuf *b, uint16_t v);
void pktbuf_put_u32(struct pktbuf *b, uint32_t v);
void pktbuf_put_str(struct pktbuf *b, const char *s); /* with NUL */
void pktbuf_put_bytes(struct pktbuf *b, const void *p, size_t n);
/* Fill in the length word of the message begun by pktbuf_start. */
void pktbuf_finish(struct pktbuf *b);

/* Convenience builders. */
void pktbuf_error(struct pktbuf *b, const char *severity, const char *sqlstate, const char *msg);
void pktbuf_notice(struct pktbuf *b, const char *sqlstate, const char *msg);
void pktbuf_auth(struct pktbuf *b, uint32_t code, const void *data, size_t n);
void pktbuf_param_status(struct pktbuf *b, const char *name, const char *value);
void pktbuf_ready(struct pktbuf *b, char status);
/* Admin result sets: RowDescription with all-text columns, DataRow, CommandComplete. */
void pktbuf_row_desc(struct pktbuf *b, int ncols, const char *const *names, const uint32_t *oids);
void pktbuf_data_row(struct pktbuf *b, int ncols, const char *const *values);
void pktbuf_complete(struct pktbuf *b, const char *tag);
/* Parse/Bind/Execute/Sync of an unnamed statement with one text parameter
 * bound as $1 (pgtenant's own lookups: the value never becomes SQL text);
 * Execute asks for the first row only. */
void pktbuf_ext_query(struct pktbuf *b, const char *sql, const char *param);

#endif
