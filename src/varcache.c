/*
 * Session parameter tracking (see varcache.h).  Sets are small (a handful of
 * keys), so a linear array beats any hash here.
 */
#include "varcache.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pktbuf.h"
#include "util.h"

static uint64_t pair_hash(const char *key, const char *value)
{
	uint64_t h = 1469598103934665603ull;
	for (const char *p = key; *p; p++) {
		h ^= (uint8_t)tolower((unsigned char)*p);
		h *= 1099511628211ull;
	}
	h ^= 0xff;
	h *= 1099511628211ull;
	for (const char *p = value; *p; p++) {
		h ^= (uint8_t)*p;
		h *= 1099511628211ull;
	}
	return h;
}

static int vars_find(const struct pgt_vars *vs, const char *key)
{
	for (int i = 0; i < vs->n; i++)
		if (strcasecmp(vs->v[i].key, key) == 0)
			return i;
	return -1;
}

uint64_t vars_hash_without(const struct pgt_vars *vs, const char *key)
{
	int i = vars_find(vs, key);
	return i < 0 ? vs->hash : vs->hash - pair_hash(vs->v[i].key, vs->v[i].value);
}

const char *vars_get(const struct pgt_vars *vs, const char *key)
{
	int i = vars_find(vs, key);
	return i < 0 ? NULL : vs->v[i].value;
}

void vars_set(struct pgt_vars *vs, const char *key, const char *value)
{
	int i = vars_find(vs, key);
	if (i >= 0) {
		if (strcmp(vs->v[i].value, value) != 0) {
			vs->hash -= pair_hash(vs->v[i].key, vs->v[i].value);
			free(vs->v[i].value);
			vs->v[i].value = xstrdup(value);
			vs->hash += pair_hash(vs->v[i].key, vs->v[i].value);
		}
		return;
	}
	if (vs->n == 255)
		return;
	if (vs->n == vs->cap) {
		vs->cap = (uint8_t)(vs->cap ? PGT_MIN(vs->cap * 2, 255) : 4);
		vs->v = xrealloc(vs->v, sizeof(*vs->v) * vs->cap);
	}
	vs->v[vs->n].key = xstrdup(key);
	vs->v[vs->n].value = xstrdup(value);
	vs->hash += pair_hash(key, value);
	vs->n++;
}

void vars_del(struct pgt_vars *vs, const char *key)
{
	int i = vars_find(vs, key);
	if (i < 0)
		return;
	vs->hash -= pair_hash(vs->v[i].key, vs->v[i].value);
	free(vs->v[i].key);
	free(vs->v[i].value);
	vs->v[i] = vs->v[--vs->n];
}

void vars_copy(struct pgt_vars *dst, const struct pgt_vars *src)
{
	for (int i = 0; i < src->n; i++)
		vars_set(dst, src->v[i].key, src->v[i].value);
}

void vars_free(struct pgt_vars *vs)
{
	for (int i = 0; i < vs->n; i++) {
		free(vs->v[i].key);
		free(vs->v[i].value);
	}
	free(vs->v);
	vs->v = NULL;
	vs->n = vs->cap = 0;
	vs->hash = 0;
}

static bool ident_start(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch >= 0x80;
}

bool vars_valid_name(const char *key)
{
	/* PostgreSQL's rule for a custom parameter name, applied to every name:
	 * parts separated by dots, each an identifier (a letter, an underscore
	 * or a non-ASCII byte, then those, digits and '$').  Each part is
	 * written into SQL as a quoted identifier, so it must fit in one
	 * (NAMEDATALEN) and a keyword (user.x, some.var) is fine. */
	size_t part = 0;
	for (const unsigned char *p = (const unsigned char *)key;; p++) {
		if (*p == '.' || *p == '\0') {
			if (part == 0 || part >= 64)
				return false;
			if (*p == '\0')
				return true;
			part = 0;
		} else if (ident_start(*p) || (part > 0 && ((*p >= '0' && *p <= '9') || *p == '$'))) {
			part++;
		} else {
			return false;
		}
	}
}

static void put_literal(struct pktbuf *b, const char *v)
{
	pktbuf_put_u8(b, '\'');
	for (const char *p = v; *p; p++) {
		if (*p == '\'')
			pktbuf_put_u8(b, '\'');
		pktbuf_put_u8(b, (uint8_t)*p);
	}
	pktbuf_put_u8(b, '\'');
}

bool vars_replayable(const char *key, bool search_path_pinned)
{
	static const char *const settable[] = {
	    "application_name",
	    "client_encoding",
	    "DateStyle",
	    "IntervalStyle",
	    "TimeZone",
	    "standard_conforming_strings",
	    "default_transaction_read_only",
	    "scram_iterations",
	    NULL,
	};
	for (int i = 0; settable[i]; i++)
		if (strcasecmp(key, settable[i]) == 0)
			return true;
	return !search_path_pinned && strcasecmp(key, "search_path") == 0;
}

/* A parameter name as quoted identifiers, one per dot-separated part:
 * SET "user"."x" sets the parameter user.x, which SET user.x cannot say
 * (USER and SOME are reserved words).  Case is kept; PostgreSQL looks
 * parameter names up without regard to case. */
static void put_name(struct pktbuf *b, const char *key)
{
	pktbuf_put_u8(b, '"');
	for (const char *p = key; *p; p++) {
		if (*p == '.') {
			pktbuf_put_bytes(b, "\".\"", 3);
			continue;
		}
		if (*p == '"')
			pktbuf_put_u8(b, '"');
		pktbuf_put_u8(b, (uint8_t)*p);
	}
	pktbuf_put_u8(b, '"');
}

/* Parameters whose value is a list of identifiers (PostgreSQL's
 * GUC_LIST_QUOTE): SET search_path = 'a, b' would name one schema "a, b". */
static bool list_of_identifiers(const char *key)
{
	static const char *const lists[] = {"search_path", "temp_tablespaces", "session_preload_libraries",
	                                    "local_preload_libraries", NULL};
	for (int i = 0; lists[i]; i++)
		if (strcasecmp(key, lists[i]) == 0)
			return true;
	return false;
}

/* Write such a list as what SET takes, each element a quoted identifier,
 * after PostgreSQL's own parsing of the value (as at login: comma-separated,
 * blanks around elements ignored, "" inside quotes, unquoted elements
 * lower-cased).  Returns false, writing nothing, for a value that does not
 * parse or is empty (SET cannot say an empty list; the caller falls back
 * to a literal). */
static bool put_identifier_list(struct pktbuf *b, const char *v)
{
	size_t start = b->len;
	int n = 0;
	const char *p = v;
	for (;;) {
		while (isspace((unsigned char)*p))
			p++;
		if (!*p && n == 0)
			break;
		if (n++ > 0)
			pktbuf_put_bytes(b, ", ", 2);
		pktbuf_put_u8(b, '"');
		if (*p == '"') {
			const char *q = ++p;
			for (;; p++) {
				if (!*p)
					goto fail;
				if (*p == '"') {
					if (p[1] != '"')
						break;
					p++;
					pktbuf_put_u8(b, '"');
				}
				pktbuf_put_u8(b, (uint8_t)*p);
			}
			if (p == q)
				goto fail; /* "" is no identifier */
			p++;
		} else {
			const char *q = p;
			for (; *p && *p != ',' && !isspace((unsigned char)*p); p++) {
				if (*p == '"')
					pktbuf_put_u8(b, '"');
				pktbuf_put_u8(b, (uint8_t)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p));
			}
			if (p == q)
				goto fail;
		}
		pktbuf_put_u8(b, '"');
		while (isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		if (*p++ != ',')
			goto fail;
	}
	if (n > 0)
		return true;
fail:
	b->len = start;
	return false;
}

static void put_set(struct pktbuf *out, const char *key, const char *value)
{
	pktbuf_put_bytes(out, "SET ", 4);
	put_name(out, key);
	pktbuf_put_bytes(out, " = ", 3);
	if (!list_of_identifiers(key) || !put_identifier_list(out, value))
		put_literal(out, value);
	pktbuf_put_bytes(out, ";", 1);
}

int vars_build_sync(const struct pgt_vars *pin, const struct pgt_vars *client,
                    const struct pgt_vars *defaults, const struct pgt_vars *base, struct pktbuf *out)
{
	int n = 0;
	pktbuf_start(out, 'Q');
	for (int i = 0; pin && i < pin->n; i++, n++)
		put_set(out, pin->v[i].key, pin->v[i].value);
	for (int i = 0; i < client->n; i++) {
		const char *have = base ? vars_get(base, client->v[i].key) : NULL;
		if (!have)
			have = vars_get(defaults, client->v[i].key);
		if (have && strcmp(have, client->v[i].value) == 0)
			continue;
		put_set(out, client->v[i].key, client->v[i].value);
		n++;
	}
	for (int i = 0; base && i < base->n; i++) {
		const char *dflt = vars_get(defaults, base->v[i].key);
		if (vars_get(client, base->v[i].key) || !dflt || strcmp(dflt, base->v[i].value) == 0)
			continue;
		put_set(out, base->v[i].key, dflt);
		n++;
	}
	pktbuf_put_u8(out, 0);
	pktbuf_finish(out);
	return n;
}

/* Every spelling PostgreSQL accepts for an encoding, as its lookup sees it
 * (lower case, only letters and digits), and the name it reports. */
static const struct {
	const char *alias, *name;
} encodings[] = {
    {"abc", "WIN1258"},
    {"alt", "WIN866"},
    {"big5", "BIG5"},
    {"euccn", "EUC_CN"},
    {"eucjis2004", "EUC_JIS_2004"},
    {"eucjp", "EUC_JP"},
    {"euckr", "EUC_KR"},
    {"euctw", "EUC_TW"},
    {"gb18030", "GB18030"},
    {"gbk", "GBK"},
    {"iso88591", "LATIN1"},
    {"iso885910", "LATIN6"},
    {"iso885913", "LATIN7"},
    {"iso885914", "LATIN8"},
    {"iso885915", "LATIN9"},
    {"iso885916", "LATIN10"},
    {"iso88592", "LATIN2"},
    {"iso88593", "LATIN3"},
    {"iso88594", "LATIN4"},
    {"iso88595", "ISO_8859_5"},
    {"iso88596", "ISO_8859_6"},
    {"iso88597", "ISO_8859_7"},
    {"iso88598", "ISO_8859_8"},
    {"iso88599", "LATIN5"},
    {"johab", "JOHAB"},
    {"koi8", "KOI8R"},
    {"koi8r", "KOI8R"},
    {"koi8u", "KOI8U"},
    {"latin1", "LATIN1"},
    {"latin10", "LATIN10"},
    {"latin2", "LATIN2"},
    {"latin3", "LATIN3"},
    {"latin4", "LATIN4"},
    {"latin5", "LATIN5"},
    {"latin6", "LATIN6"},
    {"latin7", "LATIN7"},
    {"latin8", "LATIN8"},
    {"latin9", "LATIN9"},
    {"mskanji", "SJIS"},
    {"muleinternal", "MULE_INTERNAL"},
    {"shiftjis", "SJIS"},
    {"shiftjis2004", "SHIFT_JIS_2004"},
    {"sjis", "SJIS"},
    {"sqlascii", "SQL_ASCII"},
    {"tcvn", "WIN1258"},
    {"tcvn5712", "WIN1258"},
    {"uhc", "UHC"},
    {"unicode", "UTF8"},
    {"utf8", "UTF8"},
    {"vscii", "WIN1258"},
    {"win", "WIN1251"},
    {"win1250", "WIN1250"},
    {"win1251", "WIN1251"},
    {"win1252", "WIN1252"},
    {"win1253", "WIN1253"},
    {"win1254", "WIN1254"},
    {"win1255", "WIN1255"},
    {"win1256", "WIN1256"},
    {"win1257", "WIN1257"},
    {"win1258", "WIN1258"},
    {"win866", "WIN866"},
    {"win874", "WIN874"},
    {"win932", "SJIS"},
    {"win936", "GBK"},
    {"win949", "UHC"},
    {"win950", "BIG5"},
    {"windows1250", "WIN1250"},
    {"windows1251", "WIN1251"},
    {"windows1252", "WIN1252"},
    {"windows1253", "WIN1253"},
    {"windows1254", "WIN1254"},
    {"windows1255", "WIN1255"},
    {"windows1256", "WIN1256"},
    {"windows1257", "WIN1257"},
    {"windows1258", "WIN1258"},
    {"windows866", "WIN866"},
    {"windows874", "WIN874"},
    {"windows932", "SJIS"},
    {"windows936", "GBK"},
    {"windows949", "UHC"},
    {"windows950", "BIG5"},
};

const char *vars_encoding_name(const char *value)
{
	/* PostgreSQL keeps exactly "UNICODE" as written, for JDBC drivers
	 * older than 9.1 that read it back */
	if (strcmp(value, "UNICODE") == 0)
		return "UNICODE";
	char clean[32];
	size_t n = 0;
	for (const char *p = value; *p; p++) {
		if (!isalnum((unsigned char)*p))
			continue;
		if (n + 1 >= sizeof(clean))
			return NULL;
		clean[n++] = (char)tolower((unsigned char)*p);
	}
	clean[n] = '\0';
	for (size_t i = 0; i < PGT_ARRAY_SIZE(encodings); i++)
		if (strcmp(clean, encodings[i].alias) == 0)
			return encodings[i].name;
	return NULL;
}

bool vars_parse_options(const char *options, struct pgt_vars *out, struct vars_watch *watch,
                        const char **reason)
{
	const char *p = options;
	char word[1024];
	bool expect_c_arg = false;
	for (;;) {
		while (isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		size_t n = 0;
		while (*p && !isspace((unsigned char)*p)) {
			if (*p == '\\' && p[1])
				p++;
			if (n + 1 >= sizeof(word)) {
				*reason = "option too long";
				return false;
			}
			word[n++] = *p++;
		}
		word[n] = '\0';
		const char *kv = NULL;
		if (expect_c_arg) {
			kv = word;
			expect_c_arg = false;
		} else if (strcmp(word, "-c") == 0) {
			expect_c_arg = true;
			continue;
		} else if (strncmp(word, "-c", 2) == 0) {
			kv = word + 2;
		} else if (strncmp(word, "--", 2) == 0) {
			kv = word + 2;
		} else {
			*reason = "only -c name=value and --name=value are supported in options";
			return false;
		}
		char *eq = strchr(kv, '=');
		if (!eq) {
			*reason = "option without =value";
			return false;
		}
		*eq = '\0';
		char key[128];
		size_t kl = strlen(kv);
		if (kl >= sizeof(key)) {
			*reason = "option name too long";
			return false;
		}
		/* PostgreSQL treats '-' in option names as '_' */
		for (size_t i = 0; i <= kl; i++)
			key[i] = kv[i] == '-' ? '_' : kv[i];
		if (!vars_valid_name(key)) {
			*reason = "invalid option name";
			return false;
		}
		if (watch && strcasecmp(key, watch->key) == 0) {
			const char *before = vars_get(out, key);
			if (before && strcmp(before, eq + 1) != 0) {
				watch->conflict = true;
				snprintf(watch->other, sizeof(watch->other), "%s", eq + 1);
				*reason = "conflicting values";
				return false;
			}
		}
		vars_set(out, key, eq + 1);
	}
	if (expect_c_arg) {
		*reason = "-c without an argument";
		return false;
	}
	return true;
}
