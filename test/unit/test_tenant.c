/*
 * Tenant rules: sources in tenant_sources order, the last user separator,
 * validation (pattern, length, never quotes or dots), conflicts, and the
 * schema / search_path built from an id.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "tap.h"
#include "tenant.h"

static struct pgt_config *load(const char *extra)
{
	char path[] = "/tmp/pgt-test-tenant-XXXXXX";
	int fd = mkstemp(path);
	FILE *f = fdopen(fd, "w");
	fprintf(f, "[pgtenant]\nauth_type = trust\n%s", extra);
	fclose(f);
	int n = 0;
	struct pgt_config *cfg = config_load(path, stderr, &n);
	unlink(path);
	return cfg;
}

static struct tenant_result id(const struct pgt_config *cfg, const char *param, const char *opt,
                               const char *user)
{
	struct tenant_request req = {param, opt, user, NULL, NULL};
	struct tenant_result r;
	tenant_identify(cfg, &req, &r);
	return r;
}

int main(void)
{
	struct pgt_config *cfg = load("");
	tap_ok(cfg != NULL, "default config loads");
	if (!cfg)
		return tap_done();
	struct tenant_result r = id(cfg, "acme", NULL, "app");
	tap_ok(r.status == TENANT_FOUND && strcmp(r.id, "acme") == 0 && strcmp(r.source, "parameter") == 0,
	       "startup parameter");
	r = id(cfg, NULL, "globex", "app");
	tap_ok(r.status == TENANT_FOUND && strcmp(r.id, "globex") == 0 && strcmp(r.source, "options") == 0,
	       "options");
	r = id(cfg, NULL, NULL, "first.last.acme");
	tap_ok(r.status == TENANT_FOUND && strcmp(r.id, "acme") == 0 && r.user_len == 10,
	       "user suffix after the last separator; user is first.last");
	r = id(cfg, NULL, NULL, "app");
	tap_ok(r.status == TENANT_NONE && r.user_len == 3, "no tenant anywhere");
	r = id(cfg, "acme", "acme", "app.acme");
	tap_ok(r.status == TENANT_FOUND && r.user_len == 3, "three sources that agree");
	r = id(cfg, "acme", NULL, "app.globex");
	tap_ok(r.status == TENANT_CONFLICT && strcmp(r.id, "acme") == 0 && strcmp(r.other, "globex") == 0,
	       "parameter and user disagree");
	const char *bad[] = {
	    "acme;drop", "acme'",    "ac\"me",           "a.b", "ACME", "", "acme ", "ac\\me",
	    "x\ny",      "tenant-1", "\xc3\xa9t\xc3\xa9"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = id(cfg, bad[i], NULL, "app");
		tap_ok(r.status == TENANT_INVALID, "invalid id refused: \"%s\"", bad[i]);
	}
	char longid[201];
	memset(longid, 'a', 200);
	longid[200] = '\0';
	r = id(cfg, longid, NULL, "app");
	tap_ok(r.status == TENANT_INVALID, "200 characters refused");
	memset(longid, 'a', 48);
	longid[48] = '\0';
	r = id(cfg, longid, NULL, "app");
	tap_ok(r.status == TENANT_FOUND, "48 characters (the pattern's limit) accepted");
	r = id(cfg, "acme", "bad'one", "app");
	tap_ok(r.status == TENANT_INVALID && strcmp(r.bad_source, "options") == 0,
	       "a bad second source is named");

	char buf[256];
	tap_ok(tenant_schema_name(cfg, "acme", buf, sizeof(buf)) && strcmp(buf, "tenant_acme") == 0,
	       "schema");
	tap_ok(tenant_search_path(cfg, "acme", buf, sizeof(buf)) &&
	           strcmp(buf, "\"tenant_acme\", public") == 0,
	       "search_path from tenant_search_path: %s", buf);
	config_free(cfg);

	/* order and selection of sources; a wider pattern still never admits quotes or dots */
	cfg = load("tenant_sources = user\ntenant_user_separator = @\ntenant_id_pattern = .*\n");
	tap_ok(cfg != NULL, "custom tenancy config loads");
	if (cfg) {
		r = id(cfg, "acme", NULL, "app");
		tap_ok(r.status == TENANT_NONE, "parameter ignored when not in tenant_sources");
		r = id(cfg, NULL, NULL, "app@beta");
		tap_ok(r.status == TENANT_FOUND && strcmp(r.id, "beta") == 0 && r.user_len == 3,
		       "custom separator");
		r = id(cfg, NULL, NULL, "app@be\"ta");
		tap_ok(r.status == TENANT_INVALID, "quote refused even with pattern .*");
		r = id(cfg, NULL, NULL, "app@be.ta");
		tap_ok(r.status == TENANT_INVALID, "dot refused even with pattern .*");
		config_free(cfg);
	}
	cfg = load("tenant_id_pattern = [a-z\n");
	tap_ok(cfg == NULL, "invalid regular expression is a config error");
	cfg = load("tenant_schema = t_%s_%s\n");
	tap_ok(cfg == NULL, "tenant_schema with two %%s is a config error");
	cfg = load("tenant_setting = app.x;drop\n");
	tap_ok(cfg == NULL, "tenant_setting must be a setting name");
	cfg = load("[tenants]\nacme = pool_size=ten\n");
	tap_ok(cfg == NULL, "bad tenant override is a config error");
	cfg = load("[tenants]\nacme = database=nowhere\n");
	tap_ok(cfg == NULL, "tenant routed to an unknown database is a config error");
	cfg = load("[tenants]\nBad.Id = pool_size=1\n");
	tap_ok(cfg == NULL, "tenant id outside the pattern is a config error");
	cfg = load(
	    "[databases]\nbig = host=x\n[tenants]\nacme = pool_size=10 max_client_conn=1000 xact_rate=500\n"
	    "bigcorp = database=big pool_size=40 statement_timeout=30s\nblocked = disabled=yes\n");
	tap_ok(cfg != NULL, "the spec's [tenants] example loads");
	if (cfg) {
		const struct pgt_tenant_conf *t = config_find_tenant(cfg, "bigcorp");
		tap_ok(t && t->pool_size == 40 && strcmp(t->database, "big") == 0 &&
		           strcmp(t->statement_timeout, "30s") == 0,
		       "bigcorp overrides");
		t = config_find_tenant(cfg, "blocked");
		tap_ok(t && t->disabled, "disabled tenant");
		t = config_find_tenant(cfg, "acme");
		tap_ok(t && t->max_client_conn == 1000 && t->xact_rate == 500 && t->pool_mode == -1,
		       "acme overrides");
		config_free(cfg);
	}
	/* a large [tenants] list: every id found by its index, through its
	 * growth, and nothing else; a duplicate still refused */
	enum { MANY = 20000 };
	size_t cap = 40 + (size_t)MANY * 24;
	char *big = malloc(cap), *w = big;
	w += sprintf(w, "[tenants]\n");
	for (int i = 0; i < MANY; i++)
		w += sprintf(w, "t%d = pool_size=%d\n", i, i % 7 + 1);
	cfg = load(big);
	tap_ok(cfg && cfg->ntenants == MANY, "%d tenants load", MANY);
	if (cfg) {
		int found = 0;
		char name[32];
		for (int i = 0; i < MANY; i++) {
			snprintf(name, sizeof(name), "t%d", i);
			const struct pgt_tenant_conf *t = config_find_tenant(cfg, name);
			found += t && strcmp(t->id, name) == 0 && t->pool_size == i % 7 + 1;
		}
		tap_ok(found == MANY, "each found by id (%d of %d)", found, MANY);
		tap_ok(!config_find_tenant(cfg, "t20000") && !config_find_tenant(cfg, "t") &&
		           !config_find_tenant(cfg, ""),
		       "ids not configured are not found");
		config_free(cfg);
	}
	sprintf(w, "t123 = pool_size=1\n");
	cfg = load(big);
	tap_ok(cfg == NULL, "a tenant defined twice among many is a config error");
	free(big);
	return tap_done();
}
