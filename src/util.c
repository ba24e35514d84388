/*
 * Shared helpers.  Allocation failures on cold paths (configuration, admin
 * output) abort: a pooler that cannot allocate a few hundred bytes for its
 * config is not going to recover.  Hot paths use the free lists in conn.c.
 */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

static void oom(void)
{
	fputs("pgtenant: out of memory\n", stderr);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom();
	return p;
}

void **util_rehash(void **old, uint32_t n, uint32_t nb, uint64_t (*hash)(const void *node))
{
	void **b = xcalloc(nb, sizeof(*b));
	for (uint32_t i = 0; i < n; i++) {
		for (void *x = old[i], *next; x; x = next) {
			next = *(void **)x;
			uint64_t h = hash(x) & (nb - 1);
			*(void **)x = b[h];
			b[h] = x;
		}
	}
	free(old);
	return b;
}

uint64_t util_hash_str(const char *s)
{
	uint64_t h = 14695981039346656037ull;
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h ^ (h >> 29);
}

void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n ? n : 1, sz ? sz : 1);
	if (!p)
		oom();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom();
	return q;
}

char *xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *out;
	va_start(ap, fmt);
	if (vasprintf(&out, fmt, ap) < 0)
		oom();
	va_end(ap);
	return out;
}

usec_t util_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (usec_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

char *util_trim(char *s)
{
	while (*s && isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

bool util_list_contains(const char *list, const char *name)
{
	size_t nlen = strlen(name);
	const char *p = list;
	if (!list)
		return false;
	while (*p) {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		const char *start = p;
		while (*p && *p != ',' && !isspace((unsigned char)*p))
			p++;
		if ((size_t)(p - start) == nlen && nlen > 0 && strncasecmp(start, name, nlen) == 0)
			return true;
	}
	return false;
}

bool util_secure_eq(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}

int util_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return 0;
}

bool util_random(void *buf, size_t n)
{
	return RAND_bytes(buf, (int)n) == 1;
}

bool util_parse_duration(const char *s, usec_t *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno || v < 0 || !isfinite(v))
		return false;
	while (isspace((unsigned char)*end))
		end++;
	double mult = 1e6;
	if (*end == '\0' || strcmp(end, "s") == 0 || strcmp(end, "sec") == 0)
		mult = 1e6;
	else if (strcmp(end, "ms") == 0)
		mult = 1e3;
	else if (strcmp(end, "us") == 0)
		mult = 1;
	else if (strcmp(end, "min") == 0)
		mult = 60e6;
	else if (strcmp(end, "h") == 0)
		mult = 3600e6;
	else if (strcmp(end, "d") == 0)
		mult = 86400e6;
	else
		return false;
	double r = v * mult;
	if (r > 9e18)
		return false;
	*out = (usec_t)r;
	return true;
}

bool util_parse_int(const char *s, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (end == s || *end != '\0' || errno || v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool util_parse_bool(const char *s, bool *out)
{
	static const char *yes[] = {"1", "yes", "on", "true"};
	static const char *no[] = {"0", "no", "off", "false"};
	for (size_t i = 0; i < PGT_ARRAY_SIZE(yes); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return true;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return true;
		}
	}
	return false;
}

static void cleansing_free(void *p)
{
	if (p) {
		OPENSSL_cleanse(p, malloc_usable_size(p));
		free(p);
	}
}

static void wipe_free(char *s, size_t n)
{
	if (s) {
		OPENSSL_cleanse(s, n);
		free(s);
	}
}

char *util_ini_read_line(char *str, int num, void *stream)
{
	struct util_ini_reader *r = stream;
	ssize_t n = getline(&r->buf, &r->bufcap, r->f);
	if (n < 0)
		return NULL;
	r->line++;
	if (r->long_value) {
		wipe_free(r->long_value, strlen(r->long_value));
		r->long_value = NULL;
	}
	if (n < num - 1) {
		memcpy(str, r->buf, (size_t)n + 1);
		return str;
	}
	/* too long for inih: hand it "key = \x01" and keep the value aside
	 * (a comment or a line without a key becomes one inih reads the same) */
	char *line = util_trim(r->buf);
	char *eq = strchr(line, '=');
	if (line[0] == ';' || line[0] == '#' || !eq || (size_t)(eq - line) > (size_t)num - 8) {
		snprintf(str, (size_t)num, "%s\n", (line[0] == ';' || line[0] == '#') ? ";" : "=");
		return str;
	}
	*eq = '\0';
	r->long_value = xstrdup(util_trim(eq + 1));
	for (char *c = r->long_value; *c; c++) {
		if (*c == ';' && c > r->long_value && isspace((unsigned char)c[-1])) {
			*c = '\0';
			util_trim(r->long_value);
			break;
		}
	}
	snprintf(str, (size_t)num, "%s = \x01\n", util_trim(line));
	return str;
}

void util_ini_close(struct util_ini_reader *r)
{
	if (r->f)
		fclose(r->f);
	r->f = NULL;
	wipe_free(r->buf, r->bufcap);
	r->buf = NULL;
	r->bufcap = 0;
	if (r->long_value)
		wipe_free(r->long_value, strlen(r->long_value));
	r->long_value = NULL;
}

void util_json_cleansing(void)
{
	static bool done;
	if (!done) {
		json_set_alloc_funcs(malloc, cleansing_free);
		done = true;
	}
}

void util_tcp_options(int fd, bool keepalive, int idle, int intvl, int cnt, int user_timeout_ms)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (keepalive) {
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		if (idle > 0)
			setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
		if (intvl > 0)
			setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
		if (cnt > 0)
			setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	}
	/* independent of keepalives: bounds how long sent data may stay
	 * unacknowledged (a dead peer behind a full window) */
	if (user_timeout_ms > 0)
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
}
