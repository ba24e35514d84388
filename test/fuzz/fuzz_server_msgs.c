/*
 * fuzz_server_msgs: a stream of server messages, cut by proto_parse_header
 * as sbuf.c does, and the bodies the pooler reads: ErrorResponse and
 * NoticeResponse fields (proto_error_field, every field code),
 * ParameterStatus (server_version through proto_version_num, names
 * through vars_valid_name, client_encoding through vars_encoding_name),
 * CommandComplete tags (session_tag_hint), Authentication requests (the
 * SASL mechanism list), BackendKeyData, and DataRow/ErrorResponse through
 * lookup.c's lookup_packet into a row handler that reads the row as
 * authquery.c does and parses the secret column with scram_parse_secret.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "lookup.h"
#include "proto.h"
#include "sbuf.h"
#include "scram.h"
#include "server.h"
#include "session.h"
#include "varcache.h"

static struct pgt_server *sv;
static struct pgt_lookup lk;

/* authquery.c's row reading: the secret is the second column of two, or the first */
static void row(struct pgt_lookup *l, const uint8_t *b, uint32_t len)
{
	(void)l;
	struct proto_reader r;
	proto_reader_init(&r, b, len);
	uint16_t n = proto_get_u16(&r);
	for (int i = 0; i < n && !r.bad; i++) {
		int32_t cl = (int32_t)proto_get_u32(&r);
		const uint8_t *v = cl > 0 ? proto_get_bytes(&r, (size_t)cl) : NULL;
		if (r.bad)
			break;
		if (i == (n >= 2 ? 1 : 0) && v && !memchr(v, '\0', (size_t)cl)) {
			char *secret = fuzz_strndup(v, (size_t)cl);
			struct scram_secret s;
			if (scram_parse_secret(secret, &s) && s.iterations < 1)
				abort();
			free(secret);
		}
	}
}

static void done(struct pgt_lookup *l)
{
	(void)l;
}

static const struct lookup_ops ops = {.row = row, .done = done};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	sv = calloc(1, sizeof(*sv));
	if (!sv)
		abort();
	lk.ops = &ops;
	return 0;
}

static void message(const uint8_t *msg, uint32_t total)
{
	const uint8_t *b = msg + 5;
	size_t len = total - 5;
	struct proto_reader r;
	proto_reader_init(&r, b, len);
	switch (msg[0]) {
	case 'E':
	case 'N': {
		static const char codes[] = "SVCMDHPpqWsctdnFLR";
		for (const char *c = codes; *c; c++) {
			const char *f = proto_error_field(b, len, *c);
			if (f && (f < (const char *)b || f + strlen(f) >= (const char *)b + len))
				abort(); /* a field lies inside the body, terminated */
		}
		break;
	}
	case 'S': {
		const char *name = proto_get_str(&r);
		const char *value = proto_get_str(&r);
		if (!name || !value)
			break;
		(void)vars_valid_name(name);
		if (strcmp(name, "server_version") == 0)
			(void)proto_version_num(value);
		else if (strcmp(name, "client_encoding") == 0)
			(void)vars_encoding_name(value);
		break;
	}
	case 'C': {
		const char *tag = proto_get_str(&r);
		if (tag && tag[0])
			(void)session_tag_hint(tag, strlen(tag));
		break;
	}
	case 'R': {
		uint32_t code = proto_get_u32(&r);
		if (code == 10) /* AuthenticationSASL: mechanism names up to an empty one */
			for (const char *m; (m = proto_get_str(&r)) && *m;)
				;
		else if (code == 5)
			(void)proto_get_bytes(&r, 4);
		break;
	}
	case 'K':
		(void)proto_get_u32(&r);
		(void)proto_get_u32(&r);
		break;
	case 'T': {
		uint16_t n = proto_get_u16(&r);
		for (uint16_t i = 0; i < n && !r.bad; i++) {
			(void)proto_get_str(&r);
			(void)proto_get_bytes(&r, 18);
		}
		break;
	}
	case 'D': {
		struct pgt_pkt pkt = {
		    .data = msg, .total = total, .avail = total, .type = msg[0], .full = true};
		sv->lookup = &lk;
		(void)lookup_packet(sv, &pkt);
		break;
	}
	default:
		break;
	}
	if (msg[0] == 'E') {
		struct pgt_pkt pkt = {
		    .data = msg, .total = total, .avail = total, .type = msg[0], .full = true};
		sv->lookup = &lk;
		(void)lookup_packet(sv, &pkt);
		free(lk.error);
		lk.error = NULL;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t off = 0;
	while (off < size) {
		struct proto_hdr hdr;
		if (proto_parse_header(data + off, size - off, 1u << 20, &hdr) != PROTO_OK ||
		    hdr.total > size - off)
			break;
		message(data + off, hdr.total);
		off += hdr.total;
	}
	/* the whole input as a server_version value too */
	char *s = fuzz_strndup(data, size);
	(void)proto_version_num(s);
	free(s);
	return 0;
}
