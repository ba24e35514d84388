/*
 * The audit log without a network: the JSON line builder (SPEC §10's key
 * order, only the keys that apply, RFC 3339 time, strings that are not
 * UTF-8), SET values that are never written, and the writer: nothing
 * reaches the file before a flush, a rename + reopen puts the waiting lines
 * in the old file and the next ones in the new, an unwritable path is
 * counted, and beyond 1 MiB lines are dropped and counted.
 */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "client.h"
#include "loop.h"
#include "tap.h"

/* main.c's; no event loop here, so the writer flushes only when told to */
struct pgt_loop pgt;

static char dir[] = "/tmp/pgt-test-audit-XXXXXX";

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	static char buf[1 << 16];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static int lines(const char *s)
{
	int n = 0;
	for (; s && *s; s++)
		n += *s == '\n';
	return n;
}

/* Remove the line's newline; false if it had none. */
static bool chop(char *line)
{
	size_t n = line ? strlen(line) : 0;
	if (n == 0 || line[n - 1] != '\n')
		return false;
	line[n - 1] = '\0';
	return true;
}

static void test_format(void)
{
	struct audit_record r = {
	    .event = AUDIT_DISCONNECT,
	    .conn = 42,
	    .tenant = "acme",
	    .tenant_source = "user",
	    .user = "app",
	    .database = "appdb",
	    .addr = "127.0.0.1:5000",
	    .tls = 1,
	    .auth = "jwt",
	    .jwt_iss = "https://issuer",
	    .jwt_sub = "app",
	    .reason = "why",
	    .sqlstate = "08P01",
	    .duration_ms = 1500,
	    .xacts = 7,
	    .bytes_in = 100,
	    .bytes_out = 200,
	    .command = "PAUSE",
	};
	/* 2024-02-29 23:59:58.123456 UTC */
	char *line = audit_format(&r, (usec_t)1709251198 * USEC_PER_SEC + 123456);
	tap_ok(line != NULL && chop(line), "a line, ending with a newline");
	TAP_IS_STR(line,
	           "{\"ts\":\"2024-02-29T23:59:58.123Z\",\"event\":\"disconnect\",\"conn\":\"C-42\","
	           "\"tenant\":\"acme\",\"tenant_source\":\"user\",\"user\":\"app\",\"database\":\"appdb\","
	           "\"addr\":\"127.0.0.1:5000\",\"tls\":true,\"auth\":\"jwt\",\"jwt_iss\":\"https://issuer\","
	           "\"jwt_sub\":\"app\",\"reason\":\"why\",\"sqlstate\":\"08P01\",\"duration_ms\":1500,"
	           "\"xacts\":7,\"bytes_in\":100,\"bytes_out\":200,\"command\":\"PAUSE\"}",
	           "every key, in SPEC order, one line");
	free(line);

	struct audit_record s = {.event = AUDIT_RELOAD,
	                         .tls = -1,
	                         .duration_ms = -1,
	                         .xacts = -1,
	                         .bytes_in = -1,
	                         .bytes_out = -1,
	                         .command = "SIGHUP"};
	line = audit_format(&s, (usec_t)86400 * USEC_PER_SEC);
	chop(line);
	TAP_IS_STR(line, "{\"ts\":\"1970-01-02T00:00:00.000Z\",\"event\":\"reload\",\"command\":\"SIGHUP\"}",
	           "only the keys that apply");
	free(line);

	struct audit_record t = {.event = AUDIT_REFUSAL,
	                         .user = "a\"b\nc\xff\xfe",
	                         .database = "d\xc3\xa9",
	                         .tls = 0,
	                         .xacts = 0,
	                         .duration_ms = -1,
	                         .bytes_in = -1,
	                         .bytes_out = -1};
	line = audit_format(&t, 0);
	tap_ok(line && lines(line) == 1, "a newline inside a value does not end the line");
	json_error_t err;
	json_t *o = line ? json_loads(line, 0, &err) : NULL;
	tap_ok(o != NULL, "a value that is not UTF-8 still gives valid JSON");
	const char *user = json_string_value(json_object_get(o, "user"));
	tap_ok(user && strcmp(user, "a\"b\nc??") == 0, "... its high bytes become '?'");
	TAP_IS_STR(json_string_value(json_object_get(o, "database")), "d\xc3\xa9", "UTF-8 stays as is");
	tap_ok(json_is_false(json_object_get(o, "tls")) &&
	           json_integer_value(json_object_get(o, "xacts")) == 0,
	       "false and 0 are values, not absent");
	json_decref(o);
	free(line);
}

static void test_sources(void)
{
	const char *names[] = {"parameter", "options", "user", "sni", "jwt"};
	bool ok = true;
	for (int i = 0; i < 5; i++)
		ok = ok && audit_source_code(names[i]) == i + 1;
	tap_ok(ok, "tenant sources have codes 1..5");
	tap_ok(audit_source_code(NULL) == 0 && audit_source_code("bogus") == 0, "none and unknown are 0");
}

static struct pgt_client *fake_admin(void)
{
	static struct pgt_client c;
	c.conn.id = 7;
	c.user = "admin";
	c.dbname = "pgtenant";
	c.conn.addr.in.sin_family = AF_INET;
	c.conn.addr.in.sin_port = htons(6000);
	c.conn.addr.in.sin_addr.s_addr = htonl(0x7f000001);
	return &c;
}

static void test_writer(void)
{
	char path[256], old[256];
	snprintf(path, sizeof(path), "%s/audit.log", dir);
	snprintf(old, sizeof(old), "%s/audit.log.1", dir);
	audit_configure(path);
	tap_ok(audit_enabled, "a path turns it on");
	struct pgt_client *c = fake_admin();
	audit_admin(c, "pause", "appdb", NULL, NULL);
	audit_admin(c, "set", "auth_query = 'select passwd from pg_shadow'", NULL, NULL);
	audit_admin(c, "set", "server_password_file = '/run/secret'", NULL, NULL);
	audit_admin(c, "set", "default_pool_size = 30", NULL, NULL);
	audit_admin(c, "set", "jwt_secret_file TO '/x'", "22023", "bad");
	char longargs[600];
	memset(longargs, 'x', sizeof(longargs) - 1);
	longargs[sizeof(longargs) - 1] = '\0';
	audit_admin(c, "kill", longargs, NULL, NULL);
	struct stat st;
	tap_ok(stat(path, &st) == 0 && st.st_size == 0, "nothing written before a flush");
	tap_ok((st.st_mode & 077) == 0, "the file is not readable by others");
	rename(path, old);
	audit_configure(path); /* SIGHUP */
	audit_reload(NULL, true);
	char *text = slurp(old);
	tap_ok(lines(text) == 6, "the waiting lines went to the renamed file");
	tap_ok(strstr(text,
	              "\"event\":\"admin\",\"conn\":\"C-7\",\"user\":\"admin\",\"addr\":\"127.0.0.1:6000\","
	              "\"command\":\"PAUSE appdb\"}") != NULL,
	       "an admin line: who, from where, what");
	tap_ok(strstr(text, "\"SET auth_query = (hidden)\"") && !strstr(text, "pg_shadow"),
	       "SQL of a SET is hidden");
	tap_ok(strstr(text, "\"SET server_password_file = (hidden)\"") && !strstr(text, "/run/secret"),
	       "a password key's SET value is hidden");
	tap_ok(strstr(text, "\"SET jwt_secret_file = (hidden)\",") == NULL &&
	           strstr(text, "\"reason\":\"bad\",\"sqlstate\":\"22023\",\"command\":\"SET jwt_secret_file "
	                        "= (hidden)\"") != NULL,
	       "... also when spelled SET key TO value, and a refusal says why");
	tap_ok(strstr(text, "\"SET default_pool_size = 30\"") != NULL, "other values are written");
	char want[300] = "\"command\":\"KILL ";
	memset(want + strlen(want), 'x', 200 - 5);
	strcat(want, "...\"}");
	tap_ok(strstr(text, want) != NULL, "a long command is cut at 200 bytes");
	tap_ok(!slurp(path) || lines(slurp(path)) == 0, "the new file waits for the next flush");
	audit_shutdown();
	text = slurp(path);
	tap_ok(lines(text) == 1 && strstr(text, "\"event\":\"reload\",\"command\":\"SIGHUP\"}\n"),
	       "after the reopen, lines go to the new file; exit flushes");
	tap_ok(audit_lines == 7 && audit_errors == 0 && audit_dropped == 0, "counted: 7 lines, no error");
	unlink(path);
	unlink(old);
}

static void test_failures(void)
{
	char path[256];
	snprintf(path, sizeof(path), "%s/missing/audit.log", dir);
	audit_configure(path);
	tap_ok(audit_enabled && audit_errors == 1, "a path that does not open: counted, still on");
	uint64_t lines_before = audit_lines;
	for (int i = 0; i < 20000; i++)
		audit_reload(NULL, true);
	tap_ok(audit_dropped > 0 && audit_dropped < 20000,
	       "beyond 1 MiB waiting, lines are dropped and counted");
	uint64_t dropped = audit_dropped;
	char d[256];
	snprintf(d, sizeof(d), "%s/missing", dir);
	mkdir(d, 0700);
	audit_configure(path); /* works again: what waited is written */
	char *text = slurp(path);
	tap_ok(text && (uint64_t)lines(text) > 0 && audit_lines - lines_before == 20000 - dropped,
	       "once it opens, the lines kept in memory are written");
	audit_configure("");
	tap_ok(!audit_enabled, "empty turns it off");
	audit_reload(NULL, true);
	tap_ok(audit_lines - lines_before == 20000 - dropped, "off: nothing is written");
	audit_configure("/dev/full");
	audit_reload(NULL, true);
	uint64_t errors = audit_errors;
	audit_shutdown();
	tap_ok(audit_errors == errors + 1, "a full disk is counted");
	unlink(path);
	rmdir(d);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	test_format();
	test_sources();
	test_writer();
	test_failures();
	rmdir(dir);
	return tap_done();
}
