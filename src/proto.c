/*
 * Wire-protocol parsing.  Nothing here trusts a length field: every length
 * is checked against what was actually received and against a maximum
 * before anything is read past the header.
 */
#include "proto.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

enum proto_result proto_parse_startup_header(const uint8_t *p, size_t avail, struct proto_hdr *hdr)
{
	if (avail < 4)
		return PROTO_NEED_MORE;
	uint32_t len = proto_be32(p);
	if (len < 8 || len > PROTO_MAX_STARTUP)
		return PROTO_BAD;
	hdr->type = 0;
	hdr->total = len;
	return PROTO_OK;
}

bool proto_parse_startup(const uint8_t *pkt, size_t len, struct proto_startup *out, const char **reason)
{
	memset(out, 0, sizeof(*out));
	if (len < 8 || proto_be32(pkt) != len) {
		*reason = "bad startup packet length";
		return false;
	}
	out->code = proto_be32(pkt + 4);
	if (out->code == PROTO_CANCEL_CODE) {
		if (len != 16) {
			*reason = "bad cancel request length";
			return false;
		}
		out->cancel_pid = proto_be32(pkt + 8);
		out->cancel_key = proto_be32(pkt + 12);
		return true;
	}
	if (out->code == PROTO_SSL_CODE || out->code == PROTO_GSSENC_CODE) {
		if (len != 8) {
			*reason = "bad encryption request length";
			return false;
		}
		return true;
	}
	if ((out->code >> 16) != 3) {
		*reason = "unsupported frontend protocol";
		return false;
	}
	/* name\0value\0 ... \0 */
	size_t pos = 8;
	for (;;) {
		if (pos >= len) {
			*reason = "startup packet not terminated";
			return false;
		}
		if (pkt[pos] == '\0') {
			if (pos + 1 != len) {
				*reason = "data after the end of the startup packet";
				return false;
			}
			return true;
		}
		const char *name = (const char *)pkt + pos;
		const uint8_t *nul = memchr(pkt + pos, 0, len - pos);
		if (!nul) {
			*reason = "unterminated startup parameter name";
			return false;
		}
		pos = (size_t)(nul - pkt) + 1;
		if (pos >= len) {
			*reason = "startup parameter without a value";
			return false;
		}
		const char *value = (const char *)pkt + pos;
		nul = memchr(pkt + pos, 0, len - pos);
		if (!nul) {
			*reason = "unterminated startup parameter value";
			return false;
		}
		pos = (size_t)(nul - pkt) + 1;
		if (out->nparams >= PROTO_MAX_STARTUP_PARAMS) {
			*reason = "too many startup parameters";
			return false;
		}
		for (int i = 0; i < out->nparams; i++) {
			if (strcmp(out->params[i].name, name) == 0) {
				*reason = "duplicate startup parameter";
				return false;
			}
		}
		out->params[out->nparams].name = name;
		out->params[out->nparams].value = value;
		out->nparams++;
	}
}

const char *proto_startup_get(const struct proto_startup *s, const char *name)
{
	for (int i = 0; i < s->nparams; i++)
		if (strcmp(s->params[i].name, name) == 0)
			return s->params[i].value;
	return NULL;
}

uint8_t proto_get_u8(struct proto_reader *r)
{
	if (r->pos + 1 > r->len) {
		r->bad = true;
		return 0;
	}
	return r->p[r->pos++];
}

uint16_t proto_get_u16(struct proto_reader *r)
{
	if (r->pos + 2 > r->len) {
		r->bad = true;
		return 0;
	}
	uint16_t v = (uint16_t)((r->p[r->pos] << 8) | r->p[r->pos + 1]);
	r->pos += 2;
	return v;
}

uint32_t proto_get_u32(struct proto_reader *r)
{
	if (r->pos + 4 > r->len) {
		r->bad = true;
		return 0;
	}
	uint32_t v = proto_be32(r->p + r->pos);
	r->pos += 4;
	return v;
}

const char *proto_get_str(struct proto_reader *r)
{
	if (r->pos >= r->len) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *nul = memchr(r->p + r->pos, 0, r->len - r->pos);
	if (!nul) {
		r->bad = true;
		return NULL;
	}
	const char *s = (const char *)r->p + r->pos;
	r->pos = (size_t)(nul - r->p) + 1;
	return s;
}

const uint8_t *proto_get_bytes(struct proto_reader *r, size_t n)
{
	if (n > r->len - r->pos || r->pos > r->len) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *b = r->p + r->pos;
	r->pos += n;
	return b;
}

const char *proto_error_field(const uint8_t *body, size_t len, char code)
{
	struct proto_reader r;
	proto_reader_init(&r, body, len);
	for (;;) {
		uint8_t f = proto_get_u8(&r);
		if (r.bad || f == 0)
			return NULL;
		const char *v = proto_get_str(&r);
		if (!v)
			return NULL;
		if (f == (uint8_t)code)
			return v;
	}
}

int proto_version_num(const char *v)
{
	if (!v || !isdigit((unsigned char)v[0]))
		return 0;
	char *end;
	long major = strtol(v, &end, 10);
	long minor = 0;
	if (*end == '.' && isdigit((unsigned char)end[1]))
		minor = strtol(end + 1, &end, 10);
	if (major < 10 || major > 999 || minor < 0 || minor > 99)
		return 0; /* before 10 the numbering had three parts; not supported */
	return (int)(major * 10000 + minor);
}
