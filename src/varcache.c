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

bool vars_valid_name(const char *key)
{
	if (!key[0] || !(isalpha((unsigned char)key[0]) || key[0] == '_'))
		return false;
	for (const char *p = key; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.')
			return false;
	return strlen(key) < 64;
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

static void put_set(struct pktbuf *out, const char *key, const char *value)
{
	pktbuf_put_bytes(out, "SET ", 4);
	pktbuf_put_bytes(out, key, strlen(key));
	pktbuf_put_bytes(out, " = ", 3);
	put_literal(out, value);
	pktbuf_put_bytes(out, ";", 1);
}

int vars_build_sync(const struct pgt_vars *client, const struct pgt_vars *defaults,
                    const struct pgt_vars *base, struct pktbuf *out)
{
	int n = 0;
	pktbuf_start(out, 'Q');
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
