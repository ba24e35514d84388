/*
 * fuzz_client_msgs: a stream of client messages after login, cut into
 * messages by proto_parse_header as sbuf.c does, each body read with the
 * bounds-checked proto_reader the way the pooler reads it (Query, Parse,
 * Bind, Describe, Close, Execute, CopyData/CopyFail, FunctionCall), and
 * every query text through session.c's scans: session_text_hint (the
 * SSE2/AVX2 window scan, checked against a plain byte-by-byte reference)
 * and session_note_set with a server that records the custom settings.
 * prepare.c's tracking of these messages, which needs linked client and
 * server connections, is fuzz_txn's.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "proto.h"
#include "server.h"
#include "session.h"
#include "varcache.h"

static struct pgt_server *sv;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	sv = calloc(1, sizeof(*sv));
	if (!sv)
		abort();
	return 0;
}

/* session.c's scan, one byte at a time, as the non-SSE2 build has it. */
static bool word_at(const uint8_t *p, const uint8_t *end, const char *w)
{
	for (; *w; w++, p++) {
		if (p >= end)
			return false;
		uint8_t c = *p >= 'A' && *p <= 'Z' ? (uint8_t)(*p | 0x20) : *p;
		if (c != (uint8_t)*w)
			return false;
	}
	return true;
}

static uint8_t ref_hint(const uint8_t *s, size_t n)
{
	uint8_t h = 0;
	for (size_t i = 0; i + 1 < n; i++) {
		uint8_t c = s[i] | 0x20, d = s[i + 1] | 0x20;
		if (!((c == 'v' && d == 'i') || (c == 'm' && d == 'p') || (s[i] == '_' && d == 'c')))
			continue;
		if (c == 'v' && i >= 2 && word_at(s + i - 2, s + n, "advisory"))
			h |= SESSION_HINT_PIN;
		else if (c == 'm' && i >= 2 && word_at(s + i - 2, s + n, "temp"))
			h |= SESSION_HINT_PIN;
		else if (s[i] == '_' && i >= 3 && word_at(s + i - 3, s + n, "set_config"))
			h |= SESSION_HINT_SET;
	}
	return h;
}

static void query_text(const uint8_t *text, size_t n)
{
	/* exactly n bytes: a scan that reads past the text is seen by ASan */
	uint8_t *copy = malloc(n ? n : 1);
	if (!copy)
		abort();
	memcpy(copy, text, n);
	uint8_t h = session_text_hint(copy, n, NULL);
	if (h != ref_hint(copy, n))
		abort(); /* the vector scan must find what the plain one finds */
	(void)session_text_hint(copy, n, sv);
	session_note_set(sv, copy, n);
	if (strlen(sv->check_names) >= sizeof(sv->check_names))
		abort();
	free(copy);
}

static void body(uint8_t type, const uint8_t *p, size_t len)
{
	struct proto_reader r;
	proto_reader_init(&r, p, len);
	switch (type) {
	case 'Q': {
		const char *q = proto_get_str(&r);
		if (q)
			query_text((const uint8_t *)q, strlen(q));
		break;
	}
	case 'P': {
		const char *name = proto_get_str(&r);
		const char *q = proto_get_str(&r);
		uint16_t n = proto_get_u16(&r);
		for (uint16_t i = 0; i < n && !r.bad; i++)
			(void)proto_get_u32(&r);
		if (name && q)
			query_text((const uint8_t *)q, strlen(q));
		break;
	}
	case 'B': {
		(void)proto_get_str(&r); /* portal */
		(void)proto_get_str(&r); /* statement */
		uint16_t n = proto_get_u16(&r);
		for (uint16_t i = 0; i < n && !r.bad; i++)
			(void)proto_get_u16(&r);
		n = proto_get_u16(&r);
		for (uint16_t i = 0; i < n && !r.bad; i++) {
			int32_t l = (int32_t)proto_get_u32(&r);
			if (l > 0)
				(void)proto_get_bytes(&r, (size_t)l);
		}
		n = proto_get_u16(&r);
		for (uint16_t i = 0; i < n && !r.bad; i++)
			(void)proto_get_u16(&r);
		break;
	}
	case 'D':
	case 'C': {
		uint8_t kind = proto_get_u8(&r);
		const char *name = proto_get_str(&r);
		if (!r.bad && (kind == 'S' || kind == 'P') && name)
			(void)strlen(name);
		break;
	}
	case 'E':
		(void)proto_get_str(&r);
		(void)proto_get_u32(&r);
		break;
	case 'F': {
		(void)proto_get_u32(&r);
		uint16_t n = proto_get_u16(&r);
		for (uint16_t i = 0; i < n && !r.bad; i++)
			(void)proto_get_u16(&r);
		n = proto_get_u16(&r);
		for (uint16_t i = 0; i < n && !r.bad; i++) {
			int32_t l = (int32_t)proto_get_u32(&r);
			if (l > 0)
				(void)proto_get_bytes(&r, (size_t)l);
		}
		(void)proto_get_u16(&r);
		break;
	}
	case 'f':
		(void)proto_get_str(&r);
		break;
	case 'd':
		(void)proto_get_bytes(&r, len);
		break;
	default:
		break;
	}
	if (r.pos > r.len)
		abort(); /* the reader never moves past the body */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sv->check_names[0] = '\0';
	size_t off = 0;
	while (off < size) {
		struct proto_hdr hdr;
		/* sbuf.c's limit for client messages is far larger; 1 MB is plenty here */
		enum proto_result res = proto_parse_header(data + off, size - off, 1u << 20, &hdr);
		if (res != PROTO_OK)
			break;
		if (hdr.total > size - off) {
			/* a message cut short: what the pooler has of it so far */
			break;
		}
		body(hdr.type, data + off + 5, hdr.total - 5);
		off += hdr.total;
	}
	/* the whole input as one query text too */
	query_text(data, size);
	return 0;
}
