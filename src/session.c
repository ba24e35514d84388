/*
 * Session state in transaction mode: what a client's transactions leave on
 * the server connection that the next transaction, on another connection,
 * would miss.
 *
 *  - Settings: a session-level SET (or set_config(..., false), or a
 *    function's doing) is carried over like the client's startup
 *    parameters: added to its session parameters, which every server
 *    connection it gets is given after the reset (client.c's sync Query);
 *    RESET forgets it.  On a tenant pool the pin (search_path, the tenant
 *    setting, a pinned statement_timeout) is never taken over.
 *  - What cannot be moved (temporary objects, session advisory locks,
 *    LISTEN, open cursors, statements made with SQL PREPARE, a SET ROLE or
 *    SET SESSION AUTHORIZATION, which pgtenant does not replay) pins the
 *    client to its server connection (transaction_pinning = auto) until it
 *    is gone or the client leaves; the connection still counts against the
 *    pool's size.
 *
 * Which it is, PostgreSQL says, not the query text: after a transaction
 * that may have changed either, pgtenant asks the server (one query, run
 * before the connection is released: the client already has its
 * ReadyForQuery) for the settings whose source is "session" and whether any
 * such object exists.  What "may have changed" is decided from the
 * CommandComplete tags (SET, RESET, LISTEN, DECLARE CURSOR, CREATE, DO,
 * CALL, ...) and from a few words in the query text that no tag shows
 * (advisory, set_config, temp).  That is conservative where it matters: a
 * missed check costs the client its own state (as without this feature),
 * never another client's isolation, which the hand-over reset guarantees
 * whatever happened (server.c).
 */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "client.h"
#include "config.h"
#include "log.h"
#include "loop.h"
#include "pktbuf.h"
#include "pool.h"
#include "proto.h"
#include "server.h"
#include "varcache.h"

/* Settings tracked per client at most (beyond: not carried over, logged). */
#define SESSION_MAX_SETS 64

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

/* Custom settings (a.b) are not in pg_settings: the check asks for the
 * ones the client named by their names. */
static void note_name(struct pgt_server *sv, const uint8_t *p, const uint8_t *end)
{
	char name[64];
	size_t l = 0;
	bool dot = false;
	while (p < end && l < sizeof(name) - 1 && (vars_ident_char(*p) || *p == '.')) {
		dot |= *p == '.';
		name[l++] = (char)*p++;
	}
	name[l] = '\0';
	if (!sv || !dot || !vars_valid_name(name))
		return;
	size_t have = strlen(sv->check_names);
	if (have + l + 4 >= sizeof(sv->check_names) || strstr(sv->check_names, name))
		return;
	snprintf(sv->check_names + have, sizeof(sv->check_names) - have, "%s'%s'", have ? "," : "", name);
}

/* Check the candidates around position i (a 'v', 'm' or '_', in any case). */
static uint8_t hint_at(const uint8_t *s, size_t n, size_t i, struct pgt_server *sv)
{
	const uint8_t *end = s + n;
	uint8_t c = s[i] | 0x20;
	if (c == 'v' && i >= 2 && word_at(s + i - 2, end, "advisory"))
		return SESSION_HINT_PIN;
	if (c == 'm' && i >= 2 && word_at(s + i - 2, end, "temp"))
		return SESSION_HINT_PIN;
	if (s[i] == '_' && i >= 3 && word_at(s + i - 3, end, "set_config")) {
		/* set_config('a.b', ...): remember a.b */
		const uint8_t *p = s + i + 7;
		while (p < end && (*p == ' ' || *p == '(' || *p == '\n' || *p == '\t'))
			p++;
		if (p < end && *p == '\'')
			note_name(sv, p + 1, end);
		return SESSION_HINT_SET;
	}
	return 0;
}

void session_note_set(struct pgt_server *sv, const uint8_t *s, size_t n)
{
	/* SET [SESSION] a.b ...: remember a.b (SET LOCAL does not outlive the
	 * transaction) */
	const uint8_t *p = s, *end = s + n;
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r'))
		p++;
	if (!word_at(p, end, "set") || p + 3 >= end || (p[3] != ' ' && p[3] != '\t' && p[3] != '\n'))
		return;
	p += 4;
	while (p < end && (*p == ' ' || *p == '\n' || *p == '\t'))
		p++;
	if (word_at(p, end, "session ")) {
		p += 8;
		while (p < end && *p == ' ')
			p++;
	}
	note_name(sv, p, end);
}

#ifdef __SSE2__
/* The pair starts among the 16 bytes at p (p[16] is read too), as a mask. */
static inline int pairs16(const uint8_t *p)
{
	const __m128i lower = _mm_set1_epi8(0x20);
	__m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i y = _mm_or_si128(_mm_loadu_si128((const __m128i *)(const void *)(p + 1)), lower);
	__m128i xl = _mm_or_si128(x, lower);
	__m128i c = _mm_or_si128(
	    _mm_or_si128(
	        _mm_and_si128(_mm_cmpeq_epi8(xl, _mm_set1_epi8('v')), _mm_cmpeq_epi8(y, _mm_set1_epi8('i'))),
	        _mm_and_si128(_mm_cmpeq_epi8(xl, _mm_set1_epi8('m')), _mm_cmpeq_epi8(y, _mm_set1_epi8('p')))),
	    _mm_and_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('_')), _mm_cmpeq_epi8(y, _mm_set1_epi8('c'))));
	return _mm_movemask_epi8(c);
}
#endif

#ifdef __SSE2__
#if defined(__x86_64__) && defined(__GNUC__)
#define PGT_HAVE_AVX2_TARGET 1
#include <immintrin.h>
/* The same over 32 bytes (p[32] is read too), where the CPU has AVX2. */
__attribute__((target("avx2"))) static inline unsigned pairs32(const uint8_t *p)
{
	const __m256i lower = _mm256_set1_epi8(0x20);
	__m256i x = _mm256_loadu_si256((const __m256i *)(const void *)p);
	__m256i y = _mm256_or_si256(_mm256_loadu_si256((const __m256i *)(const void *)(p + 1)), lower);
	__m256i xl = _mm256_or_si256(x, lower);
	__m256i c =
	    _mm256_or_si256(_mm256_or_si256(_mm256_and_si256(_mm256_cmpeq_epi8(xl, _mm256_set1_epi8('v')),
	                                                     _mm256_cmpeq_epi8(y, _mm256_set1_epi8('i'))),
	                                    _mm256_and_si256(_mm256_cmpeq_epi8(xl, _mm256_set1_epi8('m')),
	                                                     _mm256_cmpeq_epi8(y, _mm256_set1_epi8('p')))),
	                    _mm256_and_si256(_mm256_cmpeq_epi8(x, _mm256_set1_epi8('_')),
	                                     _mm256_cmpeq_epi8(y, _mm256_set1_epi8('c'))));
	return (unsigned)_mm256_movemask_epi8(c);
}

#endif

/* Every pair start of a text of 17 bytes or more, looked at closely. */
static __attribute__((noinline)) uint8_t hints_in(const uint8_t *s, size_t n, struct pgt_server *sv)
{
	uint8_t h = 0;
	for (size_t i = 0;; i += 16) {
		size_t at = i + 17 <= n ? i : n - 17;
		int m = pairs16(s + at) & ~((1 << (i - at)) - 1);
		while (m) {
			h |= hint_at(s, n, at + (size_t)__builtin_ctz((unsigned)m), sv);
			m &= m - 1;
		}
		if (at + 17 >= n)
			return h;
	}
}

static __attribute__((noinline)) uint8_t hints_in_short(const uint8_t *s, size_t n, struct pgt_server *sv)
{
	uint8_t h = 0;
	uint8_t tail[33] = {0}; /* zero-padded: no pair ends in a zero */
	memcpy(tail, s, n);
	int m = pairs16(tail);
	while (m) {
		int b = __builtin_ctz((unsigned)m);
		if ((size_t)b + 1 < n)
			h |= hint_at(s, n, (size_t)b, sv);
		m &= m - 1;
	}
	return h;
}
#endif

#ifdef __SSE2__
static uint8_t text_hint_sse2(const uint8_t *s, size_t n, struct pgt_server *sv)
{
	if (n < 17)
		return n >= 2 ? hints_in_short(s, n, sv) : 0;
	/* 16 pair starts at a time; the last window ends at the text's end and
	 * overlaps the one before.  Most texts have no pair: find that out
	 * first, with nothing but the scan in the loop. */
	int any = pairs16(s + n - 17);
	for (size_t i = 0; i + 17 < n; i += 16)
		any |= pairs16(s + i);
	return any ? hints_in(s, n, sv) : 0;
}

#ifdef PGT_HAVE_AVX2_TARGET
/* The same, 32 pair starts at a time. */
__attribute__((target("avx2"))) static uint8_t text_hint_avx2(const uint8_t *s, size_t n,
                                                              struct pgt_server *sv)
{
	if (n < 33)
		return text_hint_sse2(s, n, sv);
	unsigned any = pairs32(s + n - 33);
	for (size_t i = 0; i + 33 < n; i += 32)
		any |= pairs32(s + i);
	return any ? hints_in(s, n, sv) : 0;
}
#endif

/* The scan for this CPU, chosen at the first call. */
static uint8_t text_hint_pick(const uint8_t *s, size_t n, struct pgt_server *sv);
static uint8_t (*text_hint)(const uint8_t *, size_t, struct pgt_server *) = text_hint_pick;

static uint8_t text_hint_pick(const uint8_t *s, size_t n, struct pgt_server *sv)
{
	text_hint = text_hint_sse2;
#ifdef PGT_HAVE_AVX2_TARGET
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		text_hint = text_hint_avx2;
#endif
	return text_hint(s, n, sv);
}
#endif

uint8_t session_text_hint(const uint8_t *s, size_t n, struct pgt_server *sv)
{
	/* only the pairs "vi" (advisory), "mp" (temp) and "_c" (set_config), in
	 * any case, start a closer look: ordinary queries have none */
#ifdef __SSE2__
	return text_hint(s, n, sv);
#else
	uint8_t h = 0;
	for (size_t i = 0; i + 1 < n; i++) {
		uint8_t c = s[i] | 0x20, d = s[i + 1] | 0x20;
		if ((c == 'v' && d == 'i') || (c == 'm' && d == 'p') || (s[i] == '_' && d == 'c'))
			h |= hint_at(s, n, i, sv);
	}
	return h;
#endif
}

/* Two result sets: why the client must keep this connection (empty: no
 * reason), and the settings the session changed.  Everything is
 * schema-qualified: the client's search_path is still in force. */
static const char check_sql[] =
    "SELECT pg_catalog.concat_ws(' ', "
    "CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_class WHERE relnamespace OPERATOR(pg_catalog.=) "
    "pg_catalog.pg_my_temp_schema()) OR EXISTS (SELECT FROM pg_catalog.pg_proc WHERE pronamespace "
    "OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()) THEN 'temp' END, "
    "CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_locks WHERE locktype OPERATOR(pg_catalog.=) 'advisory' "
    "AND pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()) THEN 'advisory_lock' END, "
    "CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_listening_channels()) THEN 'listen' END, "
    "CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_cursors) THEN 'cursor' END, "
    "CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_prepared_statements WHERE from_sql) THEN 'sql_prepare' "
    "END, CASE WHEN current_user OPERATOR(pg_catalog.<>) session_user THEN 'role' END); "
    "SELECT name, setting FROM pg_catalog.pg_settings WHERE source OPERATOR(pg_catalog.=) 'session'";

bool session_check_start(struct pgt_server *s)
{
	static struct pktbuf q;
	static bool built;
	if (!built) {
		pktbuf_init(&q);
		pktbuf_start(&q, 'Q');
		pktbuf_put_str(&q, check_sql);
		pktbuf_finish(&q);
		built = true;
	}
	/* custom settings the client named, or carries already, by name */
	struct pgt_client *c = s->client;
	for (int i = 0; c->tracked && i < c->tracked->n; i++) {
		const char *k = c->tracked->v[i].key;
		if (strchr(k, '.'))
			note_name(s, (const uint8_t *)k, (const uint8_t *)k + strlen(k));
	}
	struct pktbuf dyn;
	const struct pktbuf *msg = &q;
	if (s->check_names[0]) {
		pktbuf_init(&dyn);
		pktbuf_start(&dyn, 'Q');
		pktbuf_put_bytes(&dyn, check_sql, sizeof(check_sql) - 1);
		pktbuf_put_bytes(
		    &dyn,
		    " UNION ALL SELECT n, pg_catalog.current_setting(n, true) FROM pg_catalog.unnest(ARRAY[",
		    strlen(" UNION ALL SELECT n, pg_catalog.current_setting(n, true) FROM "
		           "pg_catalog.unnest(ARRAY["));
		pktbuf_put_bytes(&dyn, s->check_names, strlen(s->check_names));
		pktbuf_put_str(&dyn, "]::pg_catalog.text[]) n");
		pktbuf_finish(&dyn);
		msg = &dyn;
	}
	server_log(s, PGT_LOG_DEBUG, "asking for the session state (%s%s)",
	           s->hint & SESSION_HINT_SET ? "settings " : "", s->hint & SESSION_HINT_PIN ? "pins" : "");
	s->check_names[0] = '\0';
	s->hint = 0;
	s->checking = true;
	s->check_failed = false;
	s->check_rs = 0;
	s->check_pin[0] = '\0';
	vars_free(&s->check_vars);
	s->own_rfq++;
	/* after anything the client already sent (it has its ReadyForQuery) */
	bool ok = sbuf_inject(&c->conn, msg->data, msg->len);
	if (msg == &dyn)
		pktbuf_free(&dyn);
	return ok;
}

/* A setting the client's later transactions should get again. */
static bool carried_over(const struct pgt_pool *pool, const char *name)
{
	static const char *const never[] = {"session_authorization",  "is_superuser",
	                                    "transaction_isolation",  "transaction_read_only",
	                                    "transaction_deferrable", NULL};
	for (int i = 0; never[i]; i++)
		if (strcasecmp(name, never[i]) == 0)
			return false;
	if (!vars_valid_name(name))
		return false;
	if (pool->tenant[0] && !pool->internal) {
		const char *ts = pgt.cfg->tenant_setting;
		if (strcasecmp(name, "search_path") == 0 || (ts && ts[0] && strcasecmp(name, ts) == 0))
			return false;
		if (pool->tconf && pool->tconf->statement_timeout &&
		    strcasecmp(name, "statement_timeout") == 0)
			return false;
	}
	return true;
}

enum sbuf_verdict session_check_packet(struct pgt_server *s, struct pgt_pkt *pkt)
{
	switch (pkt->type) {
	case 'C':
		s->check_rs++;
		return SB_SKIP;
	case 'E':
		s->check_failed = true;
		return SB_SKIP;
	case 'D': {
		if (!pkt->full)
			return SB_NEED_FULL;
		struct proto_reader r;
		proto_reader_init(&r, pkt->data + 5, pkt->total - 5);
		uint16_t ncols = proto_get_u16(&r);
		char *vals[2] = {NULL, NULL};
		for (uint16_t i = 0; i < ncols && i < 2 && !r.bad; i++) {
			uint32_t l = proto_get_u32(&r);
			if (l == 0xffffffffu)
				continue;
			const uint8_t *b = proto_get_bytes(&r, l);
			if (b && l < 4096) {
				vals[i] = xmalloc(l + 1);
				memcpy(vals[i], b, l);
				vals[i][l] = '\0';
			}
		}
		if (s->check_rs == 0 && vals[0])
			snprintf(s->check_pin, sizeof(s->check_pin), "%s", vals[0]);
		else if (s->check_rs == 1 && vals[0] && vals[1] && s->check_vars.n < SESSION_MAX_SETS &&
		         (vals[1][0] ||
		          !strchr(vals[0], '.'))) /* an empty custom setting: never set, or RESET */
			vars_set(&s->check_vars, vals[0], vals[1]);
		free(vals[0]);
		free(vals[1]);
		return SB_SKIP;
	}
	default:
		return SB_SKIP;
	}
}

void session_check_done(struct pgt_server *s)
{
	struct pgt_client *c = s->client;
	s->checking = false;
	if (!c || s->check_failed || s->check_rs != 2) {
		if (c && s->check_failed)
			client_log(c, PGT_LOG_WARNING,
			           "could not read the session state after a transaction");
		vars_free(&s->check_vars);
		return;
	}
	struct pgt_pool *pool = s->pool;
	/* settings: what the session has now replaces what was tracked before */
	struct pgt_vars *old = c->tracked;
	for (int i = 0; old && i < old->n; i++)
		if (!vars_get(&s->check_vars, old->v[i].key))
			vars_del(&c->vars, old->v[i].key);
	if (old)
		vars_free(old);
	for (int i = 0; i < s->check_vars.n; i++) {
		const char *k = s->check_vars.v[i].key, *v = s->check_vars.v[i].value;
		if (!carried_over(pool, k))
			continue;
		if (!c->tracked)
			c->tracked = xcalloc(1, sizeof(*c->tracked));
		vars_set(c->tracked, k, v);
		vars_set(&c->vars, k, v);
	}
	vars_free(&s->check_vars);
	/* pin */
	bool want = pgt.cfg->transaction_pinning == PGT_PIN_AUTO && s->check_pin[0];
	if (want && !c->pin) {
		c->pin = xstrdup(s->check_pin);
		pool->npinned++;
		pool->stats_pins++;
		client_log(c, PGT_LOG_DEBUG, "pinned to its server connection: %s", c->pin);
	} else if (want && strcmp(c->pin, s->check_pin) != 0) {
		free(c->pin);
		c->pin = xstrdup(s->check_pin);
	} else if (!want && c->pin) {
		session_unpin(c);
		client_log(c, PGT_LOG_DEBUG, "unpinned");
	}
}

void session_unpin(struct pgt_client *c)
{
	if (!c->pin)
		return;
	free(c->pin);
	c->pin = NULL;
	if (c->pool)
		c->pool->npinned--;
}

void session_client_free(struct pgt_client *c)
{
	session_unpin(c);
	if (c->tracked) {
		vars_free(c->tracked);
		free(c->tracked);
		c->tracked = NULL;
	}
}
