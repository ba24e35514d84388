/*
 * Config and userlist parsing: every error is reported with its line, all
 * errors are reported (not just the first), and long lines survive inih.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "tap.h"
#include "userlist.h"

static char tmpdir[] = "/tmp/pgt-test-config-XXXXXX";

static char *write_file(const char *name, const char *text)
{
	char *path = malloc(strlen(tmpdir) + strlen(name) + 2);
	sprintf(path, "%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	return path;
}

/* Load and capture the error output. */
static struct pgt_config *load(const char *text, char *errs, size_t errlen, int *nerr)
{
	char *path = write_file("pgtenant.ini", text);
	FILE *f = fmemopen(errs, errlen, "w");
	struct pgt_config *cfg = config_load(path, f, nerr);
	fclose(f);
	free(path);
	return cfg;
}

static void good(void)
{
	char errs[4096] = "";
	int n = 0;
	char longhost[300];
	memset(longhost, 'h', 250);
	longhost[250] = '\0';
	char text[2048];
	snprintf(
	    text, sizeof(text),
	    "; comment\n[databases]\nappdb = host=127.0.0.1 port=5433 dbname=real user=app password='p w'\n"
	    "long = host=%s.example.com dbname=x   ; trailing comment\n* = host=10.0.0.1\n"
	    "[pgtenant]\nlisten_port = 7432\npool_mode = session\nquery_wait_timeout = 500ms\n"
	    "auth_type = trust\ntenant_search_path = \"$tenant\", public\n"
	    "[tenants]\nacme = pool_size=10\n",
	    longhost);
	struct pgt_config *cfg = load(text, errs, sizeof(errs), &n);
	tap_ok(cfg != NULL && n == 0, "valid config loads (errors: %s)", errs);
	if (!cfg)
		return;
	tap_ok(cfg->listen_port == 7432 && cfg->pool_mode == PGT_POOL_SESSION, "ints and enums");
	tap_ok(cfg->query_wait_timeout == 500000, "duration with unit");
	tap_ok(cfg->ndbs == 3, "three databases");
	const struct pgt_database *db = config_find_db(cfg, "appdb");
	tap_ok(db && db->port == 5433 && strcmp(db->dbname, "real") == 0 && strcmp(db->password, "p w") == 0,
	       "connection string with a quoted value");
	db = config_find_db(cfg, "long");
	tap_ok(db && db->host && strlen(db->host) == 262 && strcmp(db->dbname, "x") == 0,
	       "a line longer than inih's limit keeps its whole value");
	db = config_find_db(cfg, "unknown_db");
	tap_ok(db && strcmp(db->name, "*") == 0, "fallback database");
	TAP_IS_STR(cfg->tenant_search_path, "\"$tenant\", public", "quoted value kept as written");
	tap_ok(cfg->ntenants == 1 && strcmp(cfg->tenants[0].id, "acme") == 0, "[tenants] entries kept");
	tap_ok(cfg->default_pool_size == 20 && cfg->max_db_connections == 100, "defaults from the table");
	config_free(cfg);
}

static void bad(void)
{
	char errs[4096] = "";
	int n = 0;
	const char *text = "[pgtenant]\n"            /* 1 */
	                   "listen_port = 99999\n"   /* 2 */
	                   "pool_mode = statement\n" /* 3 */
	                   "no_such_key = 1\n"       /* 4 */
	                   "query_timeout = soon\n"  /* 5 */
	                   "auth_type = trust\n"     /* 6 */
	                   "[databases]\n"           /* 7 */
	                   "x = host=a bogus=1\n"    /* 8 */
	                   "y = port=abc\n"          /* 9 */
	                   "[wat]\n"                 /* 10 */
	                   "a = b\n";                /* 11 */
	struct pgt_config *cfg = load(text, errs, sizeof(errs), &n);
	tap_ok(cfg == NULL, "config with errors is refused");
	tap_ok(n == 7, "all seven errors are counted (got %d)", n);
	const char *want[] = {"pgtenant.ini:2: invalid value \"99999\" for listen_port",
	                      "pgtenant.ini:3: invalid value \"statement\" for pool_mode",
	                      "pgtenant.ini:4: unknown key \"no_such_key\"",
	                      "pgtenant.ini:5: invalid value \"soon\" for query_timeout",
	                      "pgtenant.ini:8: database \"x\": unknown connection string key \"bogus\"",
	                      "pgtenant.ini:9: database \"y\": invalid port",
	                      "pgtenant.ini:11: unknown section [wat]"};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		tap_ok(strstr(errs, want[i]) != NULL, "error reported: %s", want[i]);
	(void)n;

	cfg = load("[pgtenant]\nauth_type = trust\nthis is not ini\n", errs, sizeof(errs), &n);
	tap_ok(cfg == NULL && strstr(errs, "pgtenant.ini:3: syntax error"), "syntax error with its line: %s",
	       errs);

	cfg = load("[pgtenant]\nauth_type = md5\n", errs, sizeof(errs), &n);
	tap_ok(cfg == NULL && strstr(errs, "needs auth_file"), "md5 without auth_file is an error");

	memset(errs, 0, sizeof(errs));
	char *ul = write_file("users.txt", "\"ok\" \"pw\"\n\"broken \"pw\"\n");
	(void)ul;
	cfg = load("[pgtenant]\nauth_type = md5\nauth_file = users.txt\n", errs, sizeof(errs), &n);
	tap_ok(cfg == NULL && strstr(errs, "users.txt:2:"),
	       "userlist error names the userlist and its line: %s", errs);
	free(ul);
}

static void userlist(void)
{
	struct pgt_userlist ul;
	int line = 0;
	char err[256];
	const char *text = "; comment\n\"app\" \"secret\"\n\n\"we\"\"ird\" \"md5abcdef\"\n# another\n"
	                   "\"s\" \"SCRAM-SHA-256$4096:c2FsdA==$a:b\"\n";
	tap_ok(userlist_parse(text, &ul, &line, err, sizeof(err)), "userlist parses");
	tap_ok(ul.n == 3, "three users");
	const struct pgt_user *u = userlist_find(&ul, "we\"ird");
	tap_ok(u && strcmp(u->password, "md5abcdef") == 0, "doubled quote inside a field");
	tap_ok(userlist_find(&ul, "nobody") == NULL, "unknown user");
	userlist_free(&ul);
	const char *bad[] = {"\"a\" \"b\" extra\n", "a b\n", "\"a\"\n", "\"ok\" \"1\"\n\"\" \"x\"\n"};
	const int lines[] = {1, 1, 1, 2};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		bool ok = userlist_parse(bad[i], &ul, &line, err, sizeof(err));
		tap_ok(!ok && line == lines[i], "bad userlist %zu refused at line %d (%s)", i, line, err);
	}
}

/* tenant_pool_mode: the tenant's, else the entry's, else the global one;
 * xact_rate and tenant_xact_burst parsed; bad values refused with a line. */
static void many_tenants(void)
{
	char errs[4096] = "";
	int n = 0;
	struct pgt_config *cfg =
	    load("[databases]\nappdb = host=127.0.0.1 tenant_pool_mode=shared\nother = host=127.0.0.1\n"
	         "[pgtenant]\nauth_type = trust\ntenant_xact_rate = 50\ntenant_xact_burst = 7\n"
	         "[tenants]\nbig = tenant_pool_mode=dedicated xact_rate=0\nsmall = xact_rate=3\n",
	         errs, sizeof(errs), &n);
	tap_ok(cfg != NULL && n == 0, "tenant_pool_mode and xact_rate keys load (errors: %s)", errs);
	if (!cfg)
		return;
	const struct pgt_database *app = config_find_db(cfg, "appdb"), *other = config_find_db(cfg, "other");
	const struct pgt_tenant_conf *big = config_find_tenant(cfg, "big"),
	                             *small = config_find_tenant(cfg, "small");
	tap_ok(config_tenant_pool_mode(cfg, app, NULL) == PGT_TENANT_POOL_SHARED, "the entry's mode");
	tap_ok(config_tenant_pool_mode(cfg, app, big) == PGT_TENANT_POOL_DEDICATED, "the tenant's wins");
	tap_ok(config_tenant_pool_mode(cfg, other, small) == PGT_TENANT_POOL_DEDICATED, "the global default");
	tap_ok(cfg->tenant_xact_rate == 50 && cfg->tenant_xact_burst == 7 && big->xact_rate == 0 &&
	           small->xact_rate == 3,
	       "rates and burst");
	config_free(cfg);
	cfg = load(
	    "[databases]\nappdb = host=127.0.0.1 tenant_pool_mode=pooled\n[pgtenant]\nauth_type = trust\n"
	    "tenant_pool_mode = sometimes\n[tenants]\nx = tenant_pool_mode=mine\n",
	    errs, sizeof(errs), &n);
	tap_ok(cfg == NULL && n == 3, "three bad tenant_pool_mode values refused (got %d: %s)", n, errs);
	tap_ok(strstr(errs, "pgtenant.ini:2:") && strstr(errs, "invalid tenant_pool_mode \"pooled\"") &&
	           strstr(errs, "pgtenant.ini:7:") && strstr(errs, "\"sometimes\""),
	       "with their lines: %s", errs);
}

/* [users]: PgBouncer's per-user keys, blanks around '=' allowed, looked
 * up by name; unknown keys, bad values, bad names and duplicates refused
 * with their lines. */
static void users(void)
{
	char errs[4096] = "";
	int n = 0;
	char *ul = write_file("userlist.txt", "\"app\" \"pw\"\n");
	free(ul);
	struct pgt_config *cfg =
	    load("[pgtenant]\nauth_type = scram-sha-256\nauth_file = userlist.txt\n"
	         "[users]\n"
	         "app = pool_mode=session pool_size=3 reserve_pool_size=1 max_user_connections=7 "
	         "max_user_client_connections=9 auth_type=md5\n"
	         "report = pool_mode = transaction   auth_type = trust ; trailing comment\n"
	         "Mixed.Case = reserve_pool=0 max_user_connections=0\n",
	         errs, sizeof(errs), &n);
	tap_ok(cfg != NULL && n == 0, "[users] loads (errors: %s)", errs);
	if (!cfg)
		return;
	const struct pgt_user_conf *app = config_find_user(cfg, "app"),
	                           *rep = config_find_user(cfg, "report"),
	                           *mixed = config_find_user(cfg, "Mixed.Case");
	tap_ok(app && app->pool_mode == PGT_POOL_SESSION && app->pool_size == 3 && app->reserve_pool == 1 &&
	           app->max_user_connections == 7 && app->max_user_client_connections == 9 &&
	           app->auth_type == PGT_AUTH_MD5 && app->line == 5,
	       "every key of an entry, and its line");
	tap_ok(rep && rep->pool_mode == PGT_POOL_TRANSACTION && rep->auth_type == PGT_AUTH_TRUST &&
	           rep->pool_size == -1 && rep->max_user_connections == -1 &&
	           rep->max_user_client_connections == -1,
	       "blanks around '=', unset keys are -1");
	tap_ok(mixed && mixed->reserve_pool == 0 && mixed->max_user_connections == 0,
	       "names are case-sensitive");
	tap_ok(config_find_user(cfg, "mixed.case") == NULL && config_find_user(cfg, "nobody") == NULL,
	       "unknown names are not found");
	config_free(cfg);

	/* many entries: the index grows */
	char big[65536] = "[pgtenant]\nauth_type = trust\n[users]\n";
	for (int i = 0; i < 500; i++)
		snprintf(big + strlen(big), sizeof(big) - strlen(big), "u%d = pool_size=%d\n", i, i + 1);
	cfg = load(big, errs, sizeof(errs), &n);
	bool all = cfg != NULL;
	for (int i = 0; cfg && i < 500; i++) {
		char name[16];
		snprintf(name, sizeof(name), "u%d", i);
		const struct pgt_user_conf *u = config_find_user(cfg, name);
		all = all && u && u->pool_size == i + 1;
	}
	tap_ok(all, "500 entries, each found by name");
	config_free(cfg);

	memset(errs, 0, sizeof(errs));
	const char *text = "[pgtenant]\n"                           /* 1 */
	                   "auth_type = trust\n"                    /* 2 */
	                   "[users]\n"                              /* 3 */
	                   "a = query_timeout=30\n"                 /* 4 */
	                   "b = pool_mode=statement\n"              /* 5 */
	                   "c = pool_size=0\n"                      /* 6 */
	                   "d = max_user_connections=-1\n"          /* 7 */
	                   "e = max_user_client_connections=lots\n" /* 8 */
	                   "f = auth_type=password\n"               /* 9 */
	                   "g = pool_size\n"                        /* 10 */
	                   "h = auth_type=md5\n"                    /* 11 */
	                   "\"q\" = pool_size=1\n"                  /* 12 */
	                   "ok = pool_size=2\n"                     /* 13 */
	                   "ok = pool_size=3\n"                     /* 14 */
	                   "i = auth_type=jwt\n";                   /* 15 */
	cfg = load(text, errs, sizeof(errs), &n);
	tap_ok(cfg == NULL, "bad [users] entries refuse the config");
	const char *want[] = {
	    "pgtenant.ini:4: user \"a\": unknown user setting \"query_timeout\"",
	    "pgtenant.ini:5: user \"b\": invalid pool_mode \"statement\": expected session or transaction",
	    "pgtenant.ini:6: user \"c\": invalid pool_size \"0\": expected an integer from 1 to 100000",
	    "pgtenant.ini:7: user \"d\": invalid max_user_connections \"-1\"",
	    "pgtenant.ini:8: user \"e\": invalid max_user_client_connections \"lots\"",
	    "pgtenant.ini:9: user \"f\": invalid auth_type \"password\"",
	    "pgtenant.ini:10: user \"g\": expected key=value, got \"pool_size\"",
	    "pgtenant.ini:12: invalid user name \"\"q\"\" in [users]",
	    "pgtenant.ini:14: user \"ok\" defined twice (first at line 13)"};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		tap_ok(strstr(errs, want[i]) != NULL, "error reported: %s", want[i]);
	tap_ok(n == 9, "nine errors while parsing, the checks of the whole config wait (got %d: %s)", n,
	       errs);

	/* checks of the whole config: md5 for a user needs auth_file, jwt keys */
	cfg = load("[pgtenant]\nauth_type = trust\n[users]\nh = auth_type=md5\ni = auth_type=jwt\n", errs,
	           sizeof(errs), &n);
	tap_ok(cfg == NULL && n == 2 &&
	           strstr(errs, "pgtenant.ini:4: user \"h\": auth_type md5 needs auth_file") &&
	           strstr(errs, "auth_type jwt needs jwt_key_file"),
	       "a user's md5 needs auth_file, its jwt needs keys: %s", errs);
}

/* host=a,b,c with port lists, target_session_attrs, load_balance_hosts,
 * the Aurora keys (issue 13) */
static void hosts(void)
{
	char errs[4096] = "";
	int n = 0;
	free(write_file("secret.json", "{\"username\": \"app\", \"password\": \"pw\"}\n"));
	struct pgt_config *cfg = load(
	    "[databases]\n"
	    "a = host='h1,h2 , h3' port=5433 target_session_attrs=read-write load_balance_hosts=round-robin\n"
	    "b = host=10.0.0.1,/run/pg port=5432,6432 target_session_attrs=PREFER-STANDBY\n"
	    "c = dbname=x\n"
	    "d = host=db.example.com sslmode=verify-full server_auth=iam aws_region=eu-west-1 "
	    "password_file=secret.json\n"
	    "[pgtenant]\nauth_type = trust\ndns_nameserver = 127.0.0.1:5353, [::1]:53, 10.0.0.2\n"
	    "dns_max_ttl = 5\nserver_check_delay = 0\nserver_check_query =\n",
	    errs, sizeof(errs), &n);
	tap_ok(cfg && n == 0, "host lists load (errors: %s)", errs);
	if (cfg) {
		const struct pgt_database *a = config_find_db(cfg, "a"), *b = config_find_db(cfg, "b"),
		                          *c = config_find_db(cfg, "c"), *d = config_find_db(cfg, "d");
		tap_ok(a->nhosts == 3 && strcmp(a->hosts[1], "h2") == 0 && strcmp(a->hosts[2], "h3") == 0 &&
		           a->ports[0] == 5433 && a->ports[2] == 5433,
		       "three hosts, blanks trimmed, one port for all");
		tap_ok(a->target_session_attrs == PGT_TSA_READ_WRITE &&
		           a->load_balance_hosts == PGT_LBH_ROUND_ROBIN,
		       "target_session_attrs and load_balance_hosts");
		tap_ok(b->nhosts == 2 && b->ports[0] == 5432 && b->ports[1] == 6432 && b->port == 5432 &&
		           b->target_session_attrs == PGT_TSA_PREFER_STANDBY,
		       "one port per host, a unix socket dir among them, names case-insensitive");
		tap_ok(c->nhosts == 1 && c->hosts[0] == NULL && c->ports[0] == 5432 &&
		           c->target_session_attrs == PGT_TSA_ANY && c->load_balance_hosts == PGT_LBH_DISABLE,
		       "no host: the default socket dir, any, disable");
		tap_ok(config_db_server_auth(cfg, d) == PGT_SERVER_AUTH_IAM &&
		           strcmp(d->aws_region, "eu-west-1") == 0,
		       "server_auth=iam and aws_region= per entry");
		tap_ok(cfg->dns_max_ttl == 5 * USEC_PER_SEC && cfg->server_check_delay == 0 &&
		           cfg->server_check_query[0] == '\0',
		       "dns_max_ttl, server_check_delay 0, empty server_check_query");
		config_free(cfg);
	}
	static const struct {
		const char *text, *want;
	} bad_cases[] = {
	    {"[databases]\na = host=h1,h2,h3 port=1,2\n", "2 ports for 3 hosts"},
	    {"[databases]\na = host=h1,,h2\n", "empty host name"},
	    {"[databases]\na = host=a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\n", "more than 16 hosts"},
	    {"[databases]\na = host=h port=0\n", "invalid port"},
	    {"[databases]\na = host=h target_session_attrs=writer\n", "invalid target_session_attrs"},
	    {"[databases]\na = host=h load_balance_hosts=yes\n", "invalid load_balance_hosts"},
	    {"[databases]\na = host=h server_auth=kerberos\n", "invalid server_auth"},
	    {"[databases]\na = host=h server_auth=iam sslmode=prefer\n", "server_auth iam needs TLS"},
	    {"[databases]\na = host=/run/pg server_auth=iam sslmode=require\n", "needs a TCP host"},
	    {"[databases]\na = host=h\n[pgtenant]\ndns_nameserver = not an address\n", "dns_nameserver"},
	};
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		char text[512];
		snprintf(text, sizeof(text), "%s%s", bad_cases[i].text,
		         strstr(bad_cases[i].text, "[pgtenant]") ? "auth_type = trust\n"
		                                                 : "[pgtenant]\nauth_type = trust\n");
		errs[0] = '\0';
		n = 0;
		cfg = load(text, errs, sizeof(errs), &n);
		tap_ok(!cfg && n >= 1 && strstr(errs, bad_cases[i].want), "refused: %s (got: %s)",
		       bad_cases[i].want, errs);
		config_free(cfg);
	}
}

int main(void)
{
	if (!mkdtemp(tmpdir))
		return 1;
	good();
	bad();
	many_tenants();
	users();
	hosts();
	userlist();
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		return 1;
	return tap_done();
}
