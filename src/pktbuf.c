/*
 * Message builder.  Starts in an inline array so that error responses and
 * login messages need no allocation; grows on the heap for admin results.
 */
#include "pktbuf.h"

#include <stdlib.h>
#include <string.h>

#include "proto.h"

void pktbuf_init(struct pktbuf *b)
{
	b->data = b->fixed;
	b->cap = sizeof(b->fixed);
	b->len = 0;
	b->msg_start = 0;
}

void pktbuf_free(struct pktbuf *b)
{
	if (b->data != b->fixed)
		free(b->data);
	pktbuf_init(b);
}

void pktbuf_reset(struct pktbuf *b)
{
	b->len = 0;
	b->msg_start = 0;
}

static void reserve(struct pktbuf *b, size_t n)
{
	if (b->len + n <= b->cap)
		return;
	size_t cap = b->cap * 2;
	while (cap < b->len + n)
		cap *= 2;
	if (b->data == b->fixed) {
		uint8_t *d = xmalloc(cap);
		memcpy(d, b->fixed, b->len);
		b->data = d;
	} else {
		b->data = xrealloc(b->data, cap);
	}
	b->cap = cap;
}

void pktbuf_start(struct pktbuf *b, uint8_t type)
{
	if (type)
		pktbuf_put_u8(b, type);
	b->msg_start = b->len;
	pktbuf_put_u32(b, 0);
}

void pktbuf_put_u8(struct pktbuf *b, uint8_t v)
{
	reserve(b, 1);
	b->data[b->len++] = v;
}

void pktbuf_put_u16(struct pktbuf *b, uint16_t v)
{
	reserve(b, 2);
	b->data[b->len++] = (uint8_t)(v >> 8);
	b->data[b->len++] = (uint8_t)v;
}

void pktbuf_put_u32(struct pktbuf *b, uint32_t v)
{
	reserve(b, 4);
	proto_put_be32(b->data + b->len, v);
	b->len += 4;
}

void pktbuf_put_str(struct pktbuf *b, const char *s)
{
	pktbuf_put_bytes(b, s, strlen(s) + 1);
}

void pktbuf_put_bytes(struct pktbuf *b, const void *p, size_t n)
{
	reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void pktbuf_finish(struct pktbuf *b)
{
	proto_put_be32(b->data + b->msg_start, (uint32_t)(b->len - b->msg_start));
}

/* ErrorResponse and NoticeResponse share their body: S, V, C, M fields. */
static void error_like(struct pktbuf *b, uint8_t type, const char *severity, const char *sqlstate,
                       const char *msg)
{
	pktbuf_start(b, type);
	pktbuf_put_u8(b, 'S');
	pktbuf_put_str(b, severity);
	pktbuf_put_u8(b, 'V');
	pktbuf_put_str(b, severity);
	pktbuf_put_u8(b, 'C');
	pktbuf_put_str(b, sqlstate);
	pktbuf_put_u8(b, 'M');
	pktbuf_put_str(b, msg);
	pktbuf_put_u8(b, 0);
	pktbuf_finish(b);
}

void pktbuf_error(struct pktbuf *b, const char *severity, const char *sqlstate, const char *msg)
{
	error_like(b, 'E', severity, sqlstate, msg);
}

void pktbuf_notice(struct pktbuf *b, const char *sqlstate, const char *msg)
{
	error_like(b, 'N', "NOTICE", sqlstate, msg);
}

void pktbuf_auth(struct pktbuf *b, uint32_t code, const void *data, size_t n)
{
	pktbuf_start(b, 'R');
	pktbuf_put_u32(b, code);
	if (n)
		pktbuf_put_bytes(b, data, n);
	pktbuf_finish(b);
}

void pktbuf_param_status(struct pktbuf *b, const char *name, const char *value)
{
	pktbuf_start(b, 'S');
	pktbuf_put_str(b, name);
	pktbuf_put_str(b, value);
	pktbuf_finish(b);
}

void pktbuf_ready(struct pktbuf *b, char status)
{
	pktbuf_start(b, 'Z');
	pktbuf_put_u8(b, (uint8_t)status);
	pktbuf_finish(b);
}

void pktbuf_row_desc(struct pktbuf *b, int ncols, const char *const *names, const uint32_t *oids)
{
	pktbuf_start(b, 'T');
	pktbuf_put_u16(b, (uint16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		uint32_t oid = oids ? oids[i] : 25;
		int16_t typlen = -1;
		if (oid == 20)
			typlen = 8;
		else if (oid == 23)
			typlen = 4;
		pktbuf_put_str(b, names[i]);
		pktbuf_put_u32(b, 0); /* table oid */
		pktbuf_put_u16(b, 0); /* column number */
		pktbuf_put_u32(b, oid);
		pktbuf_put_u16(b, (uint16_t)typlen);
		pktbuf_put_u32(b, 0xffffffffu); /* typmod -1 */
		pktbuf_put_u16(b, 0);           /* text format */
	}
	pktbuf_finish(b);
}

void pktbuf_data_row(struct pktbuf *b, int ncols, const char *const *values)
{
	pktbuf_start(b, 'D');
	pktbuf_put_u16(b, (uint16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		if (!values[i]) {
			pktbuf_put_u32(b, 0xffffffffu);
			continue;
		}
		size_t n = strlen(values[i]);
		pktbuf_put_u32(b, (uint32_t)n);
		pktbuf_put_bytes(b, values[i], n);
	}
	pktbuf_finish(b);
}

void pktbuf_complete(struct pktbuf *b, const char *tag)
{
	pktbuf_start(b, 'C');
	pktbuf_put_str(b, tag);
	pktbuf_finish(b);
}

void pktbuf_ext_query(struct pktbuf *b, const char *sql, const char *param)
{
	size_t n = strlen(param);
	pktbuf_start(b, 'P');
	pktbuf_put_str(b, "");
	pktbuf_put_str(b, sql);
	pktbuf_put_u16(b, 1);
	pktbuf_put_u32(b, 25); /* text */
	pktbuf_finish(b);
	pktbuf_start(b, 'B');
	pktbuf_put_str(b, "");
	pktbuf_put_str(b, "");
	pktbuf_put_u16(b, 0);
	pktbuf_put_u16(b, 1);
	pktbuf_put_u32(b, (uint32_t)n);
	pktbuf_put_bytes(b, param, n);
	pktbuf_put_u16(b, 0);
	pktbuf_finish(b);
	pktbuf_start(b, 'E');
	pktbuf_put_str(b, "");
	pktbuf_put_u32(b, 1);
	pktbuf_finish(b);
	pktbuf_start(b, 'S');
	pktbuf_finish(b);
}
