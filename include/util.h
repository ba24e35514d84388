/*
 * Small helpers shared by every module: allocation that aborts on failure
 * (used for configuration and other cold paths only), time in microseconds,
 * and string helpers.
 */
#ifndef PGT_UTIL_H
#define PGT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef int64_t usec_t;

#define USEC_PER_SEC ((usec_t)1000000)
#define PGT_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define PGT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PGT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define _MUSTCHECK __attribute__((warn_unused_result))
#define PGT_PRINTF(a, b) __attribute__((format(printf, a, b)))

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
/* Chained hash tables whose nodes begin with their chain pointer: a table
 * of nb buckets (a power of two) holding every node of `old` (n buckets,
 * freed), each placed by hash(node). */
void **util_rehash(void **old, uint32_t n, uint32_t nb, uint64_t (*hash)(const void *node));
/* A hash of a string (FNV-1a, mixed), for the tables above and others. */
uint64_t util_hash_str(const char *s);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PGT_PRINTF(1, 2);

/* Wall clock in microseconds. */
usec_t util_now(void);

/* Trim ASCII whitespace in place; returns the start of the trimmed string. */
char *util_trim(char *s);

/* Case-insensitive membership of name in a comma/space separated list. */
bool util_list_contains(const char *list, const char *name);

/* Constant-time comparison for secrets. */
bool util_secure_eq(const void *a, const void *b, size_t n);

/* OpenSSL's passphrase callback that gives none: an encrypted key is
 * refused instead of being prompted for on a terminal (which would block
 * a reload, or hang a daemon). */
int util_no_passphrase(char *buf, int size, int rwflag, void *u);
/* Random bytes from OpenSSL's CSPRNG; false on failure. */
bool util_random(void *buf, size_t n) _MUSTCHECK;
/* From now on jansson's frees wipe the memory first: parsed documents may
 * hold secrets (secret files, AWS credentials).  Idempotent; malloc and free
 * underneath either way, so memory jansson allocated before is freed fine. */
void util_json_cleansing(void);

/* inih's line reader (ini_parse_stream) for files whose values may be
 * longer than inih's line buffer (session tokens, long connection strings):
 * such a line reaches the handler as "key = \x01" and util_ini_value()
 * gives its real value, with an inline " ;" comment cut as inih cuts short
 * lines'.  These files hold passwords: what was read is wiped when freed. */
struct util_ini_reader {
	FILE *f;
	int line; /* of the line last read */
	char *buf;
	size_t bufcap;
	char *long_value; /* the current line's value when it was too long for inih */
};
char *util_ini_read_line(char *str, int num, void *stream);
static inline const char *util_ini_value(const struct util_ini_reader *r, const char *value)
{
	return value && value[0] == '\x01' && value[1] == '\0' && r->long_value ? r->long_value : value;
}
/* fclose and wipe; the reader may be opened again. */
void util_ini_close(struct util_ini_reader *r);

/* Parse a duration "15", "15s", "500ms", "2min", "1h", "1.5" into usec. */
bool util_parse_duration(const char *s, usec_t *out) _MUSTCHECK;

/* Parse a whole decimal integer in [min, max]. */
bool util_parse_int(const char *s, long min, long max, long *out) _MUSTCHECK;

/* Parse yes/no/on/off/true/false/1/0. */
bool util_parse_bool(const char *s, bool *out) _MUSTCHECK;

/* TCP_NODELAY, and SO_KEEPALIVE with its TCP_KEEPIDLE, TCP_KEEPINTVL,
 * TCP_KEEPCNT (seconds, count), plus TCP_USER_TIMEOUT (milliseconds) on a
 * new TCP socket; 0 leaves the OS default.  Failures are ignored: a socket
 * without these options still works. */
void util_tcp_options(int fd, bool keepalive, int idle, int intvl, int cnt, int user_timeout_ms);

#endif
