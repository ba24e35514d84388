/*
 * The audit log (see audit.h).
 *
 * Lines wait in one buffer.  The first line of an empty buffer arms a
 * 250 ms timer, so an idle pooler never wakes up for the audit log, and a
 * busy one writes once per tick (or at 64 KiB) with one write() per batch.
 * The file is opened O_APPEND, so a rotated file that is still open keeps
 * getting whole lines until the SIGHUP / RELOAD that reopens the path, and
 * what waits at that moment goes to the old file first: a logrotate rename
 * loses nothing.  A failure (EACCES at open, ENOSPC at write, ...) keeps
 * the lines in memory and retries every second; beyond AUDIT_MAX_PENDING
 * new lines are dropped, so a dead disk costs bounded memory and never the
 * service.
 */
#include "audit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "client.h"
#include "log.h"
#include "loop.h"
#include "sbuf.h"

#define AUDIT_FLUSH_DELAY (250 * 1000)     /* usec: SPEC says within one second */
#define AUDIT_RETRY_DELAY USEC_PER_SEC     /* after a failed open or write */
#define AUDIT_FLUSH_AT (64u << 10)         /* write at once from this much on */
#define AUDIT_MAX_PENDING (1u << 20)       /* beyond it, lines are dropped */
#define AUDIT_MIN_CAP (16u << 10)          /* the buffer shrinks back to this */
#define AUDIT_COMMAND_MAX 200              /* an admin command is cut here */
#define AUDIT_SYSLOG_FACILITY LOG_AUTHPRIV /* readable by root only on most systems */

bool audit_enabled;
uint64_t audit_lines, audit_dropped, audit_errors;

static struct {
	char *target;  /* audit_log in force; NULL = off */
	bool syslog;   /* target is "syslog" */
	int fd;        /* the file; -1 = not open (off, syslog, or it failed to open) */
	bool failing;  /* a failure was logged; the next success is logged, no further failure */
	bool dropping; /* lines are being dropped; logged once until one fits again */
	char *buf;     /* [0, len): whole lines waiting, oldest first */
	size_t len, cap;
	struct event *timer;
} A = {.fd = -1};

static const char *const event_names[] = {"login", "refusal", "disconnect", "admin", "reload"};
static const char *const auth_names[] = {NULL, "trust", "md5", "scram-sha-256", "jwt"};
/* tenant_sources' names; code 0 is "none" */
static const char *const source_names[] = {NULL, "parameter", "options", "user", "sni", "jwt"};

uint8_t audit_source_code(const char *name)
{
	for (uint8_t i = 1; name && i < PGT_ARRAY_SIZE(source_names); i++)
		if (strcmp(name, source_names[i]) == 0)
			return i;
	return 0;
}

/* ---- the line ---- */

/* A JSON string of s; bytes of a string that is not UTF-8 (a client's
 * user or database name can be any bytes) become '?', so the line parses. */
static json_t *jstr(const char *s)
{
	json_t *v = json_string(s);
	if (v)
		return v;
	char *copy = xstrdup(s);
	for (char *p = copy; *p; p++)
		if ((unsigned char)*p >= 0x80)
			*p = '?';
	v = json_string(copy);
	free(copy);
	return v;
}

static void put_str(json_t *o, const char *key, const char *v)
{
	if (v)
		json_object_set_new(o, key, jstr(v));
}

static void put_int(json_t *o, const char *key, int64_t v)
{
	if (v >= 0)
		json_object_set_new(o, key, json_integer(v));
}

char *audit_format(const struct audit_record *r, usec_t now)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	/* RFC 3339, UTC, milliseconds */
	char ts[96];
	time_t sec = (time_t)(now / USEC_PER_SEC);
	struct tm tm;
	gmtime_r(&sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(now % USEC_PER_SEC / 1000));
	put_str(o, "ts", ts);
	put_str(o, "event", event_names[r->event]);
	if (r->conn) {
		char id[32];
		snprintf(id, sizeof(id), "C-%llu", (unsigned long long)r->conn);
		put_str(o, "conn", id);
	}
	put_str(o, "tenant", r->tenant);
	put_str(o, "tenant_source", r->tenant_source);
	put_str(o, "user", r->user);
	put_str(o, "database", r->database);
	put_str(o, "addr", r->addr);
	if (r->tls >= 0)
		json_object_set_new(o, "tls", json_boolean(r->tls));
	put_str(o, "auth", r->auth);
	put_str(o, "jwt_iss", r->jwt_iss);
	put_str(o, "jwt_sub", r->jwt_sub);
	put_str(o, "reason", r->reason);
	put_str(o, "sqlstate", r->sqlstate);
	put_int(o, "duration_ms", r->duration_ms);
	put_int(o, "xacts", r->xacts);
	put_int(o, "bytes_in", r->bytes_in);
	put_int(o, "bytes_out", r->bytes_out);
	put_str(o, "command", r->command);
	/* jansson keeps insertion order: the keys come out in SPEC §10's */
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!s)
		return NULL;
	size_t n = strlen(s);
	char *line = realloc(s, n + 2);
	if (!line) {
		free(s);
		return NULL;
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	return line;
}

/* ---- writing ---- */

static void failed(const char *what)
{
	int e = errno;
	audit_errors++;
	if (A.failing)
		return;
	A.failing = true;
	log_error("audit log %s: %s: %s; lines wait in memory (up to %u KiB, then they are dropped) and the "
	          "file is tried again every second",
	          A.target, what, strerror(e), AUDIT_MAX_PENDING >> 10);
}

static bool open_file(void)
{
	/* O_NONBLOCK: a FIFO without a reader fails at once instead of hanging the loop */
	A.fd = open(A.target, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0600);
	if (A.fd < 0) {
		failed("cannot open");
		return false;
	}
	return true;
}

static void arm(usec_t delay)
{
	if (!A.timer || evtimer_pending(A.timer, NULL))
		return;
	struct timeval tv = {.tv_sec = delay / USEC_PER_SEC, .tv_usec = delay % USEC_PER_SEC};
	evtimer_add(A.timer, &tv);
}

static uint64_t count_lines(const char *p, size_t n)
{
	uint64_t k = 0;
	for (const char *e = p + n; (p = memchr(p, '\n', (size_t)(e - p))) != NULL; p++)
		k++;
	return k;
}

/* Write what waits; what cannot be written stays for the next try. */
static void flush(void)
{
	if (A.len == 0 || !A.target)
		return;
	size_t done = 0;
	if (A.syslog) {
		/* one message per line; syslog(3) reports no failure */
		while (done < A.len) {
			char *nl = memchr(A.buf + done, '\n', A.len - done);
			size_t n = (size_t)(nl - (A.buf + done));
			syslog(AUDIT_SYSLOG_FACILITY | LOG_INFO, "%.*s", (int)n, A.buf + done);
			done += n + 1;
			audit_lines++;
		}
	} else if (A.fd >= 0 || open_file()) {
		while (done < A.len) {
			ssize_t w = write(A.fd, A.buf + done, A.len - done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0) {
				if (w == 0)
					errno = EIO;
				failed("cannot write");
				break;
			}
			done += (size_t)w;
		}
		if (done > 0) {
			audit_lines += count_lines(A.buf, done);
			if (A.failing && done == A.len) {
				A.failing = false;
				log_info("audit log %s: written again", A.target);
			}
		}
	}
	memmove(A.buf, A.buf + done, A.len - done);
	A.len -= done;
	if (A.len == 0 && A.cap > AUDIT_MIN_CAP) {
		/* a burst, or an outage, is over: give the memory back */
		free(A.buf);
		A.buf = NULL;
		A.cap = 0;
	}
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	flush();
	if (A.len > 0)
		arm(AUDIT_RETRY_DELAY);
}

static void emit(const struct audit_record *r)
{
	if (!audit_enabled)
		return;
	char *line = audit_format(r, util_now());
	if (!line) {
		audit_dropped++;
		return;
	}
	size_t n = strlen(line);
	if (A.len + n > AUDIT_MAX_PENDING) {
		audit_dropped++;
		if (!A.dropping)
			log_error("audit log %s: %u KiB wait to be written; further lines are dropped "
			          "(pgtenant_audit_dropped_total)",
			          A.target, AUDIT_MAX_PENDING >> 10);
		A.dropping = true;
		free(line);
		return;
	}
	A.dropping = false;
	if (A.len + n > A.cap) {
		size_t cap = A.cap ? A.cap : AUDIT_MIN_CAP;
		while (cap < A.len + n)
			cap *= 2;
		char *b = realloc(A.buf, cap);
		if (!b) {
			audit_dropped++;
			free(line);
			return;
		}
		A.buf = b;
		A.cap = cap;
	}
	memcpy(A.buf + A.len, line, n);
	A.len += n;
	free(line);
	if (A.len >= AUDIT_FLUSH_AT && !A.failing)
		flush();
	if (A.len > 0)
		arm(A.failing ? AUDIT_RETRY_DELAY : AUDIT_FLUSH_DELAY);
}

static void close_target(void)
{
	if (A.fd >= 0)
		close(A.fd);
	A.fd = -1;
	if (A.syslog)
		closelog();
	A.syslog = false;
	free(A.target);
	A.target = NULL;
}

void audit_configure(const char *target)
{
	if (!A.timer && pgt.base)
		A.timer = evtimer_new(pgt.base, timer_cb, NULL);
	/* what waits belongs to the destination it was written for (the old,
	 * maybe renamed, file): a rotation loses no line */
	flush();
	bool same = A.target && target && strcmp(A.target, target) == 0;
	close_target();
	if (!target || !*target) {
		audit_enabled = false;
		if (A.len > 0) {
			audit_dropped += count_lines(A.buf, A.len);
			log_warning(
			    "audit log turned off: %llu line(s) that could not be written are dropped",
			    (unsigned long long)count_lines(A.buf, A.len));
		}
		A.len = 0;
		A.failing = false;
		return;
	}
	if (!same)
		A.failing = false; /* a new file's failure is news */
	A.target = xstrdup(target);
	audit_enabled = true;
	if (strcmp(target, "syslog") == 0) {
		A.syslog = true;
		openlog("pgtenant", LOG_PID | LOG_NDELAY, AUDIT_SYSLOG_FACILITY);
	} else {
		open_file();
	}
	if (A.len > 0) {
		flush();
		if (A.len > 0)
			arm(AUDIT_RETRY_DELAY);
	}
}

void audit_shutdown(void)
{
	flush();
	if (A.len > 0)
		log_error("audit log %s: %llu line(s) could not be written before exit", A.target,
		          (unsigned long long)count_lines(A.buf, A.len));
	close_target();
	audit_enabled = false;
	if (A.timer)
		event_free(A.timer);
	A.timer = NULL;
	free(A.buf);
	A.buf = NULL;
	A.len = A.cap = 0;
}

/* ---- events ---- */

/* The fields every event about a client has. */
static void client_fields(const struct pgt_client *c, struct audit_record *r, char *addr, size_t addrlen)
{
	r->conn = c->conn.id;
	r->tenant = c->tenant;
	r->tenant_source =
	    source_names[c->tenant_source < PGT_ARRAY_SIZE(source_names) ? c->tenant_source : 0];
	r->user = c->user;
	r->database = c->dbname;
	const union pgt_addr *a = &c->conn.addr;
	char ip[INET6_ADDRSTRLEN] = "?";
	if (a->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &a->in.sin_addr, ip, sizeof(ip));
		snprintf(addr, addrlen, "%s:%d", ip, ntohs(a->in.sin_port));
	} else if (a->sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &a->in6.sin6_addr, ip, sizeof(ip));
		snprintf(addr, addrlen, "[%s]:%d", ip, ntohs(a->in6.sin6_port));
	} else {
		snprintf(addr, addrlen, "unix");
	}
	r->addr = addr;
	r->tls = c->conn.ssl != NULL;
	r->auth = auth_names[c->auth_method < PGT_ARRAY_SIZE(auth_names) ? c->auth_method : 0];
	if (c->audit_jwt) {
		r->jwt_iss = c->audit_jwt;
		r->jwt_sub = c->audit_jwt + strlen(c->audit_jwt) + 1;
	}
}

static void record_init(struct audit_record *r, enum audit_event ev)
{
	memset(r, 0, sizeof(*r));
	r->event = ev;
	r->tls = -1;
	r->duration_ms = r->xacts = r->bytes_in = r->bytes_out = -1;
}

void audit_note_jwt(struct pgt_client *c, const char *iss, const char *sub)
{
	free(c->audit_jwt);
	size_t a = strlen(iss), b = strlen(sub);
	c->audit_jwt = xmalloc(a + b + 2);
	memcpy(c->audit_jwt, iss, a + 1);
	memcpy(c->audit_jwt + a + 1, sub, b + 1);
}

void audit_login(const struct pgt_client *c)
{
	struct audit_record r;
	char addr[80];
	record_init(&r, AUDIT_LOGIN);
	client_fields(c, &r, addr, sizeof(addr));
	emit(&r);
}

static void disconnect(const struct pgt_client *c, const char *sqlstate, const char *reason)
{
	struct audit_record r;
	char addr[80];
	record_init(&r, AUDIT_DISCONNECT);
	client_fields(c, &r, addr, sizeof(addr));
	r.reason = reason;
	r.sqlstate = sqlstate;
	usec_t d = util_now() - c->conn.connect_time;
	r.duration_ms = d > 0 ? d / 1000 : 0;
	r.xacts = (int64_t)c->xacts;
	r.bytes_in = (int64_t)c->conn.bytes_in;
	r.bytes_out = (int64_t)c->conn.bytes_out;
	emit(&r);
}

void audit_disconnect(const struct pgt_client *c, const char *reason)
{
	disconnect(c, NULL, reason);
}

void audit_fail(const struct pgt_client *c, const char *sqlstate, const char *msg)
{
	if (c->logged_in) {
		disconnect(c, sqlstate, msg);
		return;
	}
	struct audit_record r;
	char addr[80];
	record_init(&r, AUDIT_REFUSAL);
	client_fields(c, &r, addr, sizeof(addr));
	r.reason = msg;
	r.sqlstate = sqlstate;
	emit(&r);
}

/* Could a value of config key k be a secret, or SQL (auth_query,
 * tenant_query, ...)?  Then SET's value is left out. */
static bool secret_key(const char *k)
{
	static const char *const words[] = {"password", "secret", "token", "key"};
	for (size_t i = 0; i < PGT_ARRAY_SIZE(words); i++)
		if (strcasestr(k, words[i]))
			return true;
	size_t n = strlen(k);
	return n >= 6 && strcasecmp(k + n - 6, "_query") == 0;
}

void audit_admin(const struct pgt_client *c, const char *word, const char *args, const char *sqlstate,
                 const char *reason)
{
	char cmd[AUDIT_COMMAND_MAX + 8];
	size_t n = 0;
	for (const char *p = word; *p && n < 32; p++)
		cmd[n++] = (char)((*p >= 'a' && *p <= 'z') ? *p - 32 : *p);
	cmd[n] = '\0';
	if (strcasecmp(word, "set") == 0) {
		/* SET key = value: the key always, the value unless it could be secret */
		size_t k = strspn(args, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
		char key[64];
		snprintf(key, sizeof(key), "%.*s", (int)PGT_MIN(k, sizeof(key) - 1), args);
		if (secret_key(key))
			snprintf(cmd + n, sizeof(cmd) - n, " %s = (hidden)", key);
		else
			snprintf(cmd + n, sizeof(cmd) - n, " %s", args);
	} else if (*args) {
		snprintf(cmd + n, sizeof(cmd) - n, " %s", args);
	}
	n = strlen(cmd);
	if (n > AUDIT_COMMAND_MAX) {
		/* cut at a character boundary, and say so */
		n = AUDIT_COMMAND_MAX;
		while (n > 0 && ((unsigned char)cmd[n] & 0xc0) == 0x80)
			n--;
		memcpy(cmd + n, "...", 4);
	}
	struct audit_record r;
	char addr[80];
	record_init(&r, AUDIT_ADMIN);
	client_fields(c, &r, addr, sizeof(addr));
	r.database = NULL;
	r.tls = -1;
	r.auth = NULL;
	r.reason = reason;
	r.sqlstate = sqlstate;
	r.command = cmd;
	emit(&r);
}

void audit_reload(const struct pgt_client *c, bool ok)
{
	struct audit_record r;
	char addr[80];
	record_init(&r, AUDIT_RELOAD);
	if (c) {
		client_fields(c, &r, addr, sizeof(addr));
		r.database = NULL;
		r.tls = -1;
		r.auth = NULL;
	}
	r.command = c ? "RELOAD" : "SIGHUP";
	if (!ok)
		r.reason =
		    "reload failed: the configuration has errors (see the log); the old one stays in force";
	emit(&r);
}
