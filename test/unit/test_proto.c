/*
 * Header and startup-packet parsing: partial reads byte by byte, lying
 * length fields, unterminated strings, and the special request codes.
 */
#include <stdlib.h>
#include <string.h>

#include "pktbuf.h"
#include "proto.h"
#include "tap.h"
#include "varcache.h"

static size_t build_startup(uint8_t *out, size_t cap, uint32_t code, const char *const *kv)
{
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_start(&b, 0);
	pktbuf_put_u32(&b, code);
	for (int i = 0; kv && kv[i]; i++)
		pktbuf_put_str(&b, kv[i]);
	pktbuf_put_u8(&b, 0);
	pktbuf_finish(&b);
	size_t n = b.len < cap ? b.len : cap;
	memcpy(out, b.data, n);
	pktbuf_free(&b);
	return n;
}

static void headers(void)
{
	uint8_t q[] = {'Q', 0, 0, 0, 9, 's', 'e', 'l', '\0'};
	struct proto_hdr h;
	for (size_t n = 0; n < 5; n++)
		tap_ok(proto_parse_header(q, n, 1u << 30, &h) == PROTO_NEED_MORE,
		       "header with %zu bytes needs more", n);
	tap_ok(proto_parse_header(q, 5, 1u << 30, &h) == PROTO_OK && h.type == 'Q' && h.total == 10,
	       "header parsed from exactly 5 bytes");
	uint8_t lies[][5] = {
	    {'Q', 0, 0, 0, 3}, /* shorter than the length word itself */
	    {'Q', 0, 0, 0, 0},
	    {'Q', 0xff, 0xff, 0xff, 0xff}, /* negative as int32 */
	    {'Q', 0x80, 0, 0, 0},
	};
	for (size_t i = 0; i < sizeof(lies) / sizeof(lies[0]); i++)
		tap_ok(proto_parse_header(lies[i], 5, 0x7fffffffu, &h) == PROTO_BAD,
		       "lying length %zu is refused", i);
	uint8_t big[] = {'D', 0, 0x10, 0, 0};
	tap_ok(proto_parse_header(big, 5, 4096, &h) == PROTO_BAD, "length above the limit is refused");
	tap_ok(proto_parse_header(big, 5, 0x7fffffffu, &h) == PROTO_OK && h.total == 0x100001,
	       "large message is fine when the caller streams it");
}

static void startup(void)
{
	uint8_t pkt[512];
	const char *kv[] = {"user", "app", "database", "appdb", "options", "-c work_mem=7MB", NULL};
	size_t n = build_startup(pkt, sizeof(pkt), PROTO_VERSION_3_0, kv);
	struct proto_hdr h;
	for (size_t i = 0; i < 4; i++)
		tap_ok(proto_parse_startup_header(pkt, i, &h) == PROTO_NEED_MORE,
		       "startup header with %zu bytes needs more", i);
	tap_ok(proto_parse_startup_header(pkt, 4, &h) == PROTO_OK && h.total == n, "startup length read");
	struct proto_startup st;
	const char *reason = NULL;
	tap_ok(proto_parse_startup(pkt, n, &st, &reason), "valid startup parses");
	TAP_IS_STR(proto_startup_get(&st, "user"), "app", "user");
	TAP_IS_STR(proto_startup_get(&st, "database"), "appdb", "database");
	TAP_IS_STR(proto_startup_get(&st, "options"), "-c work_mem=7MB", "options");
	tap_ok(proto_startup_get(&st, "nope") == NULL, "absent parameter is NULL");

	/* every truncation of a valid packet is refused, never read past */
	int refused = 0;
	for (size_t cut = 8; cut < n; cut++) {
		uint8_t *copy = malloc(cut);
		memcpy(copy, pkt, cut);
		proto_put_be32(copy, (uint32_t)cut);
		if (!proto_parse_startup(copy, cut, &st, &reason))
			refused++;
		free(copy);
	}
	tap_ok(refused == (int)(n - 8), "all %zu truncations are refused", n - 8);

	/* length word that disagrees with the packet */
	proto_put_be32(pkt, (uint32_t)n + 10);
	tap_ok(!proto_parse_startup(pkt, n, &st, &reason), "length word mismatch is refused");
	proto_put_be32(pkt, (uint32_t)n);

	uint8_t tiny[4] = {0, 0, 0, 3};
	tap_ok(proto_parse_startup_header(tiny, 4, &h) == PROTO_BAD, "startup length 3 is refused");
	uint8_t huge[4] = {0, 1, 0, 0};
	tap_ok(proto_parse_startup_header(huge, 4, &h) == PROTO_BAD, "startup length 65536 is refused");

	const char *dup[] = {"user", "a", "user", "b", NULL};
	n = build_startup(pkt, sizeof(pkt), PROTO_VERSION_3_0, dup);
	tap_ok(!proto_parse_startup(pkt, n, &st, &reason), "duplicate parameter is refused");

	n = build_startup(pkt, sizeof(pkt), 2u << 16, NULL);
	tap_ok(!proto_parse_startup(pkt, n, &st, &reason), "protocol 2.0 is refused");

	uint8_t ssl[8];
	proto_put_be32(ssl, 8);
	proto_put_be32(ssl + 4, PROTO_SSL_CODE);
	tap_ok(proto_parse_startup(ssl, 8, &st, &reason) && st.code == PROTO_SSL_CODE, "SSLRequest");
	uint8_t cancel[16];
	proto_put_be32(cancel, 16);
	proto_put_be32(cancel + 4, PROTO_CANCEL_CODE);
	proto_put_be32(cancel + 8, 1234);
	proto_put_be32(cancel + 12, 5678);
	tap_ok(proto_parse_startup(cancel, 16, &st, &reason) && st.cancel_pid == 1234 &&
	           st.cancel_key == 5678,
	       "CancelRequest");
	proto_put_be32(cancel, 12);
	tap_ok(!proto_parse_startup(cancel, 12, &st, &reason), "short CancelRequest is refused");

	/* value without terminator */
	uint8_t unterminated[] = {0, 0, 0, 14, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0, 'x'};
	tap_ok(!proto_parse_startup(unterminated, sizeof(unterminated), &st, &reason),
	       "unterminated value is refused");
}

static void reader(void)
{
	uint8_t body[] = {'a', 'b', 0, 0, 0, 0, 7, 'x'};
	struct proto_reader r;
	proto_reader_init(&r, body, sizeof(body));
	TAP_IS_STR(proto_get_str(&r), "ab", "reader string");
	tap_ok(proto_get_u32(&r) == 7 && !r.bad, "reader u32");
	tap_ok(proto_get_str(&r) == NULL && r.bad, "string without NUL at the end is bad");
	proto_reader_init(&r, body, 2);
	tap_ok(proto_get_u32(&r) == 0 && r.bad, "u32 past the end is bad");

	uint8_t err[] = {'S', 'E', 'R', 'R', 'O', 'R', 0,   'C', '4', '2',
	                 'P', '0', '1', 0,   'M', 'h', 'i', 0,   0};
	TAP_IS_STR(proto_error_field(err, sizeof(err), 'C'), "42P01", "error field C");
	TAP_IS_STR(proto_error_field(err, sizeof(err), 'M'), "hi", "error field M");
	tap_ok(proto_error_field(err, 5, 'M') == NULL, "truncated error body");
}

static void options(void)
{
	struct pgt_vars v = {0};
	const char *reason = NULL;
	tap_ok(vars_parse_options("-c work_mem=7MB --search-path=a\\ b -cstatement_timeout=5s", &v, NULL,
	                          &reason),
	       "options parse");
	TAP_IS_STR(vars_get(&v, "work_mem"), "7MB", "-c k=v");
	TAP_IS_STR(vars_get(&v, "search_path"), "a b", "--k=v with escaped space and dash");
	TAP_IS_STR(vars_get(&v, "statement_timeout"), "5s", "-ck=v");
	vars_free(&v);
	tap_ok(!vars_parse_options("-c", &v, NULL, &reason), "-c without argument");
	tap_ok(!vars_parse_options("-c x;drop=1", &v, NULL, &reason), "invalid option name");
	tap_ok(!vars_parse_options("-d 5", &v, NULL, &reason), "unsupported switch");
	vars_free(&v);

	/* a watched key given twice: the same value is fine, another is a conflict */
	struct vars_watch w = {"tenant", false, ""};
	tap_ok(vars_parse_options("-c tenant=acme -c work_mem=1MB --tenant=acme", &v, &w, &reason) &&
	           !w.conflict,
	       "the same tenant twice is no conflict");
	vars_free(&v);
	tap_ok(!vars_parse_options("-c tenant=acme -c Tenant=globex", &v, &w, &reason) && w.conflict &&
	           strcmp(w.other, "globex") == 0 && strcmp(vars_get(&v, "tenant"), "acme") == 0,
	       "two tenants in options conflict, case-insensitively");
	vars_free(&v);

	/* the parameters a client gets on each server: SETs from the pool's defaults */
	struct pgt_vars client = {0}, dflt = {0}, none = {0};
	vars_set(&dflt, "TimeZone", "UTC");
	vars_set(&dflt, "application_name", "");
	vars_set(&client, "application_name", "it's");
	vars_set(&client, "TimeZone", "UTC");
	struct pktbuf b;
	pktbuf_init(&b);
	tap_ok(vars_build_sync(NULL, &client, &dflt, &none, &b), "sync needed");
	const char *sql = (const char *)b.data + 5;
	tap_ok(strstr(sql, "SET \"application_name\" = 'it''s';") && !strstr(sql, "TimeZone"),
	       "sync quotes values and skips what equals the default: %s", sql);
	pktbuf_reset(&b);
	vars_set(&client, "application_name", "");
	tap_ok(!vars_build_sync(NULL, &client, &dflt, &none, &b), "nothing to sync at the defaults");
	/* a server opened with a base of parameters: what the client shares
	 * with the base needs nothing, what the base has and the client lacks
	 * goes back to the default */
	struct pgt_vars base = {0};
	vars_set(&base, "application_name", "pgbench");
	vars_set(&base, "TimeZone", "Asia/Tokyo");
	vars_set(&client, "application_name", "pgbench");
	pktbuf_reset(&b);
	tap_ok(vars_build_sync(NULL, &client, &dflt, &base, &b) == 1, "one SET from a base");
	sql = (const char *)b.data + 5;
	tap_ok(strstr(sql, "SET \"TimeZone\" = 'UTC';") && !strstr(sql, "application_name"),
	       "a base value the client lacks goes back to the default: %s", sql);
	vars_set(&client, "TimeZone", "Asia/Tokyo");
	pktbuf_reset(&b);
	tap_ok(vars_build_sync(NULL, &client, &dflt, &base, &b) == 0,
	       "a client equal to the base needs nothing");
	vars_free(&base);
	vars_free(&client);

	/* names are quoted identifiers, part by part: USER and SOME are
	 * reserved words; lists of identifiers are written as such */
	static const struct {
		const char *key, *value, *want;
	} sets[] = {
	    {"user.x", "1", "SET \"user\".\"x\" = '1';"},
	    {"some.var", "it's", "SET \"some\".\"var\" = 'it''s';"},
	    {"My.Var$2", "v", "SET \"My\".\"Var$2\" = 'v';"},
	    {"search_path", "\"$user\", public", "SET \"search_path\" = \"$user\", \"public\";"},
	    {"search_path", " Sch_A ,public", "SET \"search_path\" = \"sch_a\", \"public\";"},
	    {"search_path", "\"a\"\"b\", c\"d", "SET \"search_path\" = \"a\"\"b\", \"c\"\"d\";"},
	    {"search_path", "a;drop table t", "SET \"search_path\" = 'a;drop table t';"},
	    {"search_path", "", "SET \"search_path\" = '';"},
	    {"search_path", "a,,b", "SET \"search_path\" = 'a,,b';"},
	    {"search_path", "\"unterminated", "SET \"search_path\" = '\"unterminated';"},
	    {"temp_tablespaces", "x, y", "SET \"temp_tablespaces\" = \"x\", \"y\";"},
	    {"DateStyle", "ISO, MDY", "SET \"DateStyle\" = 'ISO, MDY';"},
	};
	for (size_t i = 0; i < PGT_ARRAY_SIZE(sets); i++) {
		struct pgt_vars one = {0};
		vars_set(&one, sets[i].key, sets[i].value);
		pktbuf_reset(&b);
		int n = vars_build_sync(NULL, &one, &dflt, &none, &b);
		sql = (const char *)b.data + 5;
		tap_ok(n == 1 && strcmp(sql, sets[i].want) == 0, "SET for %s = %s: %s", sets[i].key,
		       sets[i].value, sql);
		vars_free(&one);
	}
	pktbuf_free(&b);
	vars_free(&dflt);

	/* PostgreSQL's parameter names: dot-separated identifiers */
	static const char *const good[] = {"work_mem", "user.x", "some.var",      "a.b.c",
	                                   "My.Var$2", "_x._y",  "caf\xc3\xa9.x", NULL};
	static const char *const bad[] = {"",      "a..b",   "x.",    ".x",    "1a.b", "a.$b",
	                                  "a b.c", "a\"b.c", "a.b;c", "a-b.c", NULL};
	for (int i = 0; good[i]; i++)
		tap_ok(vars_valid_name(good[i]), "valid parameter name %s", good[i]);
	for (int i = 0; bad[i]; i++)
		tap_ok(!vars_valid_name(bad[i]), "invalid parameter name \"%s\"", bad[i]);
	char long_part[80];
	memset(long_part, 'a', 64);
	strcpy(long_part + 64, ".x");
	tap_ok(!vars_valid_name(long_part), "a part longer than an identifier is invalid");
	strcpy(long_part + 63, ".x");
	tap_ok(vars_valid_name(long_part), "a part of 63 bytes is valid");

	/* client_encoding under PostgreSQL's own name */
	static const struct {
		const char *in, *want;
	} encs[] = {
	    {"utf8", "UTF8"},
	    {"UTF-8", "UTF8"},
	    {"Unicode", "UTF8"},
	    {"UNICODE", "UNICODE"},
	    {"euc-jp", "EUC_JP"},
	    {"ISO-8859-1", "LATIN1"},
	    {"latin1", "LATIN1"},
	    {"iso_8859_15", "LATIN9"},
	    {"windows-1252", "WIN1252"},
	    {"koi8", "KOI8R"},
	    {"sql_ascii", "SQL_ASCII"},
	    {"Shift_JIS", "SJIS"},
	    {"mule-internal", "MULE_INTERNAL"},
	    {"utf-16", NULL},
	    {"", NULL},
	    {"cp1252", NULL},
	    {"utf8utf8utf8utf8utf8utf8utf8utf8", NULL},
	};
	for (size_t i = 0; i < PGT_ARRAY_SIZE(encs); i++) {
		const char *got = vars_encoding_name(encs[i].in);
		tap_ok(encs[i].want ? got && strcmp(got, encs[i].want) == 0 : got == NULL,
		       "encoding \"%s\" is reported as %s", encs[i].in, encs[i].want ? encs[i].want : "is");
	}

	/* what may be replayed from a server's ParameterStatus */
	tap_ok(vars_replayable("TimeZone", true) && vars_replayable("application_name", false),
	       "settable reported parameters are replayed");
	tap_ok(!vars_replayable("is_superuser", false) && !vars_replayable("session_authorization", false) &&
	           !vars_replayable("server_version", false) && !vars_replayable("in_hot_standby", false),
	       "read-only reported parameters are never replayed");
	tap_ok(vars_replayable("search_path", false) && !vars_replayable("search_path", true),
	       "search_path is replayed only where it is not pinned");
}

int main(void)
{
	headers();
	startup();
	reader();
	options();
	return tap_done();
}
