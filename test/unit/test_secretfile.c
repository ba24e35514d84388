/*
 * Password files (secretfile.c): the parser (Secrets Manager JSON with and
 * without a username, other keys ignored, one line with and without its
 * line end, CRLF, empty, broken JSON, too large), the bounded read, errors
 * that never quote the contents, a relative path resolved against the
 * config file's directory, the registry's last good value and versions
 * (a re-read that changes nothing keeps the version; a broken file keeps
 * the value), the stat() watch (in place, rename, Kubernetes' ..data
 * symlink swap), and config_load's file:line errors for an unusable file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "secretfile.h"
#include "tap.h"

static char dir[] = "/tmp/pgt-test-secret-XXXXXX";

static char *path_of(const char *name)
{
	return xasprintf("%s/%s", dir, name);
}

static void write_file(const char *name, const char *text, size_t len)
{
	char *p = path_of(name);
	FILE *f = fopen(p, "w");
	fwrite(text, 1, len, f);
	fclose(f);
	free(p);
}

#define WRITE(name, text) write_file((name), (text), strlen(text))

/* Parse text; ok, password and username (NULL = none) as expected. */
static void parse_is(const char *text, size_t len, bool ok, const char *pw, const char *user,
                     const char *name)
{
	struct pgt_secret s;
	char err[256] = "";
	bool got = secretfile_parse(text, len, &s, err, sizeof(err));
	if (!ok) {
		tap_ok(!got && !s.password && !s.username && err[0], "%s: refused (%s)", name, err);
		/* the error never quotes the contents */
		tap_ok(len < 4 || !strstr(err, "hunter"), "%s: the error quotes nothing of the file", name);
		return;
	}
	tap_ok(got, "%s: parsed (%s)", name, err);
	if (!got)
		return;
	TAP_IS_STR(s.password, pw, name);
	tap_ok(user ? s.username && strcmp(s.username, user) == 0 : s.username == NULL, "%s: username %s",
	       name, user ? user : "(none)");
	secretfile_clear(&s);
	tap_ok(!s.password && !s.username, "%s: cleared", name);
}

#define PARSE(text, ok, pw, user, name) parse_is((text), strlen(text), (ok), (pw), (user), (name))

static void parser(void)
{
	PARSE("{\"username\":\"app\",\"password\":\"hunter2\"}", true, "hunter2", "app",
	      "JSON with username");
	PARSE("{\"password\":\"hunter2\"}\n", true, "hunter2", NULL, "JSON without username");
	PARSE("{\n  \"engine\": \"postgres\",\n  \"host\": \"x.cluster-abc.eu-west-1.rds.amazonaws.com\",\n"
	      "  \"port\": 5432,\n  \"dbname\": \"appdb\",\n  \"username\": \"app_user\",\n"
	      "  \"password\": \"p@ss w\\\"rd\",\n  \"dbClusterIdentifier\": \"x\"\n}\n",
	      true, "p@ss w\"rd", "app_user", "Secrets Manager secret: other keys ignored");
	PARSE("{\"username\":null,\"password\":\"hunter2\"}", true, "hunter2", NULL, "JSON null username");
	PARSE("hunter2", true, "hunter2", NULL, "one line without newline");
	PARSE("hunter2\n", true, "hunter2", NULL, "one line with newline");
	PARSE("hunter2\r\n", true, "hunter2", NULL, "CRLF");
	PARSE(" hunter 2 \n", true, " hunter 2 ", NULL, "blanks inside the line are the password's");
	PARSE("hunter2\nsecond line\n", true, "hunter2", NULL, "only the first line");
	PARSE("{hunter2\n", false, NULL, NULL, "a brace first is JSON, never a password");
	PARSE("{\"username\":\"app\",\"password\":\"hun", false, NULL, NULL, "half-written JSON");
	PARSE("", false, NULL, NULL, "empty file");
	PARSE("\n\n  \r\n", false, NULL, NULL, "only blank lines");
	PARSE("\nhunter2\n", false, NULL, NULL, "empty first line");
	PARSE("{\"password\": \"hunter2\",\n \"username\": \"app\"\n", false, NULL, NULL,
	      "invalid JSON that is not one line");
	PARSE("{\"username\":\"app\"}", false, NULL, NULL, "JSON without password");
	PARSE("{\"password\":\"\"}", false, NULL, NULL, "JSON with an empty password");
	PARSE("{\"password\":42}", false, NULL, NULL, "JSON with a password that is no string");
	PARSE("{\"password\":\"hunter2\",\"username\":\"a b\"}", false, NULL, NULL, "username with a blank");
	PARSE("{\"password\":\"hunter2\",\"username\":7}", false, NULL, NULL, "username that is no string");
	PARSE("{\"password\":\"hunter2\",\"password\":\"x\"}", false, NULL, NULL, "duplicate key");
	PARSE("{\"password\":\"hun\\u0000ter2\"}", false, NULL, NULL, "NUL inside the JSON password");
	parse_is("hun\0ter2\n", 9, false, NULL, NULL, "NUL in the line");

	size_t big = SECRETFILE_MAX + 1;
	char *huge = malloc(big);
	memset(huge, 'x', big);
	parse_is(huge, big, false, NULL, NULL, "huge buffer refused");
	struct pgt_secret s;
	char err[256] = "";
	tap_ok(secretfile_parse(huge, SECRETFILE_MAX, &s, err, sizeof(err)) &&
	           strlen(s.password) == SECRETFILE_MAX,
	       "64 KiB exactly is fine");
	secretfile_clear(&s);
	write_file("huge", huge, big);
	free(huge);
	char *p = path_of("huge");
	tap_ok(!secretfile_read(p, &s, err, sizeof(err)) && strstr(err, "larger than 64 KiB"),
	       "huge file refused: %s", err);
	free(p);
	p = path_of("missing");
	tap_ok(!secretfile_read(p, &s, err, sizeof(err)) && strstr(err, "No such file"), "missing file: %s",
	       err);
	free(p);
	WRITE("bad.json", "{\"password\": \"hunter2\",\n\"x\": [\n");
	p = path_of("bad.json");
	tap_ok(!secretfile_read(p, &s, err, sizeof(err)) && strstr(err, "not valid JSON (line") &&
	           !strstr(err, "hunter"),
	       "broken JSON: %s", err);
	free(p);
	p = path_of("");
	tap_ok(!secretfile_read(p, &s, err, sizeof(err)) && strstr(err, "not a regular file"),
	       "a directory: %s", err);
	free(p);
}

static void resolve(void)
{
	char *r = secretfile_resolve("/etc/pgtenant/pgtenant.ini", "secret.json");
	TAP_IS_STR(r, "/etc/pgtenant/secret.json", "relative to the config file's directory");
	free(r);
	r = secretfile_resolve("/etc/pgtenant/pgtenant.ini", "/run/secrets/db");
	TAP_IS_STR(r, "/run/secrets/db", "absolute stays");
	free(r);
	r = secretfile_resolve("pgtenant.ini", "secret.json");
	TAP_IS_STR(r, "secret.json", "config in the working directory");
	free(r);
}

static void registry(void)
{
	struct pgt_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	cfg.path = path_of("pgtenant.ini");
	cfg.server_password_file = "global.txt";
	struct pgt_database own, other;
	memset(&own, 0, sizeof(own));
	memset(&other, 0, sizeof(other));
	own.password_file = "own.json";
	own.user = "config_user";
	other.user = "other_user";
	cfg.dbs = &own;
	cfg.ndbs = 1;

	WRITE("global.txt", "global-pw\n");
	WRITE("own.json", "{\"username\":\"u1\",\"password\":\"pw1\"}");
	const struct pgt_secret *g = secretfile_get(&cfg, &other);
	tap_ok(g && strcmp(g->password, "global-pw") == 0 && !g->username,
	       "an entry without password_file= gets server_password_file, relative to the config");
	TAP_IS_STR(secretfile_db_user(&cfg, &other), "other_user", "no username in the file: user= stays");
	const struct pgt_secret *o = secretfile_get(&cfg, &own);
	tap_ok(o && strcmp(o->password, "pw1") == 0, "password_file= wins over the global file");
	TAP_IS_STR(secretfile_db_user(&cfg, &own), "u1", "the file's username wins over user=");
	uint64_t v1 = o->version;

	/* a re-read that finds the same value keeps its version: a 28P01 with
	 * an unchanged file is not retried */
	o = secretfile_reread(&cfg, &own);
	tap_ok(o && o->version == v1, "unchanged file: same version");

	/* rewritten in place (another size): the watch sees it */
	secretfile_watch(10 * USEC_PER_SEC);
	WRITE("own.json", "{\"username\":\"u1\",\"password\":\"pw-two\"}");
	secretfile_watch(10 * USEC_PER_SEC + USEC_PER_SEC / 2);
	o = secretfile_get(&cfg, &own);
	tap_ok(o->version == v1, "the watch looks at most once a second");
	secretfile_watch(12 * USEC_PER_SEC);
	o = secretfile_get(&cfg, &own);
	tap_ok(o && strcmp(o->password, "pw-two") == 0 && o->version > v1, "in-place rewrite seen");
	uint64_t v2 = o->version;

	/* broken file: the last good value stays */
	WRITE("own.json", "");
	secretfile_watch(14 * USEC_PER_SEC);
	o = secretfile_get(&cfg, &own);
	tap_ok(o && strcmp(o->password, "pw-two") == 0 && o->version == v2,
	       "empty file: last good value kept");
	WRITE("own.json", "{\"password\": \"x\",\n");
	o = secretfile_reread(&cfg, &own);
	tap_ok(o && strcmp(o->password, "pw-two") == 0, "broken JSON: last good value kept");

	/* rename over it (same size as before) */
	WRITE("own.tmp", "{\"username\":\"u2\",\"password\":\"pw-3\"}");
	char *tmp = path_of("own.tmp"), *dst = path_of("own.json");
	tap_ok(rename(tmp, dst) == 0, "renamed");
	secretfile_watch(16 * USEC_PER_SEC);
	o = secretfile_get(&cfg, &own);
	tap_ok(o && strcmp(o->password, "pw-3") == 0 && o->version > v2, "rename seen");
	TAP_IS_STR(secretfile_db_user(&cfg, &own), "u2", "a changed username is taken");

	/* Kubernetes: name -> ..data/name, ..data -> ..v1, swapped to ..v2 */
	char *d1 = path_of("..v1"), *d2 = path_of("..v2");
	mkdir(d1, 0700);
	mkdir(d2, 0700);
	WRITE("..v1/k8s", "k8s-one\n");
	WRITE("..v2/k8s", "k8s-two\n");
	char *data = path_of("..data"), *link = path_of("k8s"), *tmplink = path_of("..data_tmp");
	tap_ok(symlink("..v1", data) == 0 && symlink("..data/k8s", link) == 0, "k8s layout");
	own.password_file = "k8s";
	o = secretfile_get(&cfg, &own);
	tap_ok(o && strcmp(o->password, "k8s-one") == 0, "read through the symlinks");
	tap_ok(symlink("..v2", tmplink) == 0 && rename(tmplink, data) == 0, "..data swapped");
	secretfile_watch(18 * USEC_PER_SEC);
	o = secretfile_get(&cfg, &own);
	tap_ok(o && strcmp(o->password, "k8s-two") == 0, "symlink swap seen");

	/* a reload forgets files no longer named and re-reads the others */
	WRITE("global.txt", "global-pw-2\n");
	secretfile_config_changed(&cfg);
	g = secretfile_get(&cfg, &other);
	tap_ok(g && strcmp(g->password, "global-pw-2") == 0, "reload re-reads");
	secretfile_shutdown();
	free(d1);
	free(d2);
	free(data);
	free(link);
	free(tmplink);
	free(tmp);
	free(dst);
	free(cfg.path);
}

/* An unusable file is a config error at the key's line (--check, startup). */
static void config_errors(void)
{
	char text[1024];
	snprintf(text, sizeof(text),
	         "[databases]\n"
	         "a = host=127.0.0.1 dbname=x password_file=nope.json\n"
	         "b = host=127.0.0.1 dbname=x password_file=%s/empty\n"
	         "c = host=127.0.0.1 dbname=x password_file=good\n"
	         "[pgtenant]\n"
	         "auth_type = trust\n"
	         "server_password_file = missing-global\n",
	         dir);
	WRITE("empty", "");
	WRITE("good", "hunter2\n");
	WRITE("cfg.ini", text);
	char errs[4096] = "";
	FILE *f = fmemopen(errs, sizeof(errs), "w");
	int n = 0;
	char *p = path_of("cfg.ini");
	struct pgt_config *cfg = config_load(p, f, &n);
	fclose(f);
	tap_ok(!cfg && n == 3, "three unusable files, three errors (%d)", n);
	char want[512];
	snprintf(want, sizeof(want), "cfg.ini:2: password file %s/nope.json: cannot open", dir);
	tap_ok(strstr(errs, want) != NULL, "missing password_file= at its entry's line");
	snprintf(want, sizeof(want), "cfg.ini:3: password file %s/empty: empty", dir);
	tap_ok(strstr(errs, want) != NULL, "empty file at its line");
	snprintf(want, sizeof(want), "cfg.ini:7: password file %s/missing-global: cannot open", dir);
	tap_ok(strstr(errs, want) != NULL, "server_password_file at its key's line");
	tap_ok(!strstr(errs, "hunter2"), "no contents in the errors");
	config_free(cfg);
	free(p);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	parser();
	resolve();
	registry();
	config_errors();
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		return 1;
	return tap_done();
}
