/*
 * PostgreSQL v3 wire protocol: header and startup-packet parsing, and a
 * bounds-checked reader for message bodies.  Pure functions over byte
 * ranges, so the unit tests can feed them partial reads and lying lengths.
 */
#ifndef PGT_PROTO_H
#define PGT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define PROTO_VERSION_3_0 196608u /* 3 << 16 */
#define PROTO_CANCEL_CODE 80877102u
#define PROTO_SSL_CODE 80877103u
#define PROTO_GSSENC_CODE 80877104u
#define PROTO_MAX_STARTUP 10000u /* PostgreSQL's MAX_STARTUP_PACKET_LENGTH */
#define PROTO_MAX_STARTUP_PARAMS 64

enum proto_result { PROTO_NEED_MORE = 0, PROTO_OK = 1, PROTO_BAD = -1 };

/* A message header: type byte (0 for startup-style packets) and the total
 * length on the wire including the type byte. */
struct proto_hdr {
	uint8_t type;
	uint32_t total;
};

/* Parse a startup-style header (int32 length, no type byte). */
enum proto_result proto_parse_startup_header(const uint8_t *p, size_t avail, struct proto_hdr *hdr);

struct proto_param {
	const char *name;
	const char *value;
};

/* A parsed StartupMessage; the strings point into the packet. */
struct proto_startup {
	uint32_t code; /* protocol version or special request code */
	int nparams;
	struct proto_param params[PROTO_MAX_STARTUP_PARAMS];
	uint32_t cancel_pid, cancel_key; /* for CancelRequest */
};

/* Parse a whole startup-style packet (including its length word).  Returns
 * false with a reason for malformed input. */
bool proto_parse_startup(const uint8_t *pkt, size_t len, struct proto_startup *out,
                         const char **reason) _MUSTCHECK;
const char *proto_startup_get(const struct proto_startup *s, const char *name);

/* Bounds-checked reader over one message body. */
struct proto_reader {
	const uint8_t *p;
	size_t len, pos;
	bool bad;
};

static inline void proto_reader_init(struct proto_reader *r, const uint8_t *p, size_t len)
{
	r->p = p;
	r->len = len;
	r->pos = 0;
	r->bad = false;
}
uint8_t proto_get_u8(struct proto_reader *r);
uint32_t proto_get_u32(struct proto_reader *r);
uint16_t proto_get_u16(struct proto_reader *r);
/* NUL-terminated string within the body, or NULL (and bad) if none. */
const char *proto_get_str(struct proto_reader *r);
const uint8_t *proto_get_bytes(struct proto_reader *r, size_t n);

static inline uint32_t proto_be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
/* Parse a regular message header (type + int32 length) from avail bytes.
 * The length must be >= 4 and total <= max_total.  Inline: every message
 * forwarded goes through it. */
static inline enum proto_result proto_parse_header(const uint8_t *p, size_t avail, uint32_t max_total,
                                                   struct proto_hdr *hdr)
{
	if (avail < 5)
		return PROTO_NEED_MORE;
	uint32_t len = proto_be32(p + 1);
	if (len < 4 || len > max_total - 1 || len > 0x7fffffffu)
		return PROTO_BAD;
	hdr->type = p[0];
	hdr->total = len + 1;
	return PROTO_OK;
}
static inline void proto_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Find field `code` (e.g. 'C', 'M', 'S') in an ErrorResponse/NoticeResponse
 * body; returns NULL if absent. */
const char *proto_error_field(const uint8_t *body, size_t len, char code);

/* server_version ("15.18", "14beta2", "16.1 (Debian 16.1-1)") as
 * PG_VERSION_NUM (150018); 0 if unknown or unparsable. */
int proto_version_num(const char *server_version);

#endif
