/*
 * Table-driven pgtenant.ini parser.  Each [pgtenant] key is one row of
 * cf_keys[]: name, type, offset into struct pgt_config, whether RELOAD may
 * change it, and its default (as text, parsed by the same code as a value in
 * the file, so SHOW CONFIG and the man page agree with the code).
 *
 * inih is fed through our own line reader: inih reports neither line numbers
 * to handlers nor lines longer than its compiled-in limit (200 bytes on
 * Debian), and connection strings are often longer.  The reader counts lines
 * and hands inih a short stand-in for a long `key = value` line, whose value
 * the handler then takes from the reader.
 */
#include "config.h"

#include <ctype.h>
#include <event2/util.h>
#include <sys/socket.h>
#include <errno.h>
#include <ini.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "secretfile.h"
#include "userlist.h"
#include "varcache.h"
enum cf_type { CF_INT, CF_BOOL, CF_STR, CF_TIME, CF_ENUM };

struct cf_key {
	const char *name;
	enum cf_type type;
	size_t off;
	bool reloadable;
	const char *def;
	long min, max;              /* CF_INT */
	const char *const *choices; /* CF_ENUM, NULL-terminated */
};

static const char *const pool_modes[] = {"session", "transaction", NULL};
static const char *const tenant_pool_modes[] = {"dedicated", "shared", NULL};

static int parse_tenant_pool_mode(const char *v)
{
	return strcasecmp(v, "dedicated") == 0 ? PGT_TENANT_POOL_DEDICATED
	       : strcasecmp(v, "shared") == 0  ? PGT_TENANT_POOL_SHARED
	                                       : -1;
}
static const char *const auth_types[] = {"trust", "md5", "scram-sha-256", "jwt", NULL};
static const char *const sslmodes[] = {"disable",   "allow",       "prefer", "require",
                                       "verify-ca", "verify-full", NULL};
static const char *const unknown_tenant_modes[] = {"reject", "allow", NULL};
static const char *const transaction_resets[] = {"always", NULL};
static const char *const pinning_modes[] = {"auto", "off", NULL};
static const char *const tsa_names[] = {"any",     "read-write",     "read-only", "primary",
                                        "standby", "prefer-standby", NULL};
static const char *const lbh_names[] = {"disable", "random", "round-robin", NULL};
static const char *const server_auths[] = {"password", "iam", NULL};

#define OFF(f) offsetof(struct pgt_config, f)
#define INT(n, r, d, lo, hi)                                                                                 \
	{                                                                                                    \
#n, CF_INT, OFF(n), r, d, lo, hi, NULL                                                       \
	}
#define BOOL(n, r, d)                                                                                        \
	{                                                                                                    \
#n, CF_BOOL, OFF(n), r, d, 0, 0, NULL                                                        \
	}
#define STR(n, r, d)                                                                                         \
	{                                                                                                    \
#n, CF_STR, OFF(n), r, d, 0, 0, NULL                                                         \
	}
#define TIME(n, r, d)                                                                                        \
	{                                                                                                    \
#n, CF_TIME, OFF(n), r, d, 0, 0, NULL                                                        \
	}
#define TIME_MIN(n, r, d, lo)                                                                                \
	{                                                                                                    \
#n, CF_TIME, OFF(n), r, d, lo, 0, NULL                                                       \
	}
#define ENUM(n, r, d, c)                                                                                     \
	{                                                                                                    \
#n, CF_ENUM, OFF(n), r, d, 0, 0, c                                                           \
	}

static const struct cf_key cf_keys[] = {
    STR(listen_addr, false, "127.0.0.1"),
    INT(listen_port, false, "6432", 1, 65535),
    STR(unix_socket_dir, false, "/tmp"),
    INT(unix_socket_mode, false, "511", 0, 511),
    STR(pidfile, false, ""),
    STR(logfile, true, ""),
    STR(admin_users, true, ""),
    STR(stats_users, true, ""),
    ENUM(auth_type, true, "scram-sha-256", auth_types),
    STR(auth_file, true, ""),
    ENUM(pool_mode, true, "transaction", pool_modes),
    INT(max_client_conn, true, "10000", 1, 1000000),
    INT(default_pool_size, true, "20", 1, 100000),
    INT(min_pool_size, true, "0", 0, 100000),
    INT(reserve_pool_size, true, "0", 0, 100000),
    TIME(reserve_pool_timeout, true, "5"),
    INT(max_db_connections, true, "100", 0, 1000000),
    STR(server_reset_query, true, "DISCARD ALL"),
    TIME(server_lifetime, true, "3600"),
    TIME(server_idle_timeout, true, "600"),
    TIME(autodb_idle_timeout, true, "3600"),
    TIME(server_connect_timeout, true, "15"),
    TIME(server_login_retry, true, "15"),
    TIME(query_timeout, true, "0"),
    TIME(query_wait_timeout, true, "120"),
    TIME(client_idle_timeout, true, "0"),
    TIME(client_login_timeout, true, "60"),
    TIME(idle_transaction_timeout, true, "0"),
    INT(max_prepared_statements, true, "200", 0, 100000),
    INT(pkt_buf, false, "8192", 4096, 1048576),
    STR(ignore_startup_parameters, true, "extra_float_digits"),
    BOOL(tcp_keepalive, true, "yes"),
    INT(tcp_keepidle, true, "0", 0, 32767),
    INT(tcp_keepintvl, true, "0", 0, 32767),
    INT(tcp_keepcnt, true, "0", 0, 127),
    INT(tcp_user_timeout, true, "0", 0, 2147483647),
    INT(max_packet_size, true, "2147483647", 256, 2147483647),
    TIME_MIN(stats_period, true, "60", USEC_PER_SEC),
    BOOL(log_stats, true, "yes"),

    BOOL(tenant_required, true, "yes"),
    STR(tenant_sources, true, "parameter, options, user, sni, jwt"),
    STR(tenant_parameter, true, "tenant"),
    STR(tenant_user_separator, true, "."),
    STR(tenant_sni_suffix, true, ""),
    STR(tenant_id_pattern, true, "[a-z0-9_]{1,48}"),
    STR(tenant_schema, true, "tenant_%s"),
    STR(tenant_search_path, true, "\"$tenant\", public"),
    STR(tenant_setting, true, ""),
    INT(tenant_pool_size, true, "5", 1, 100000),
    INT(tenant_max_client_conn, true, "500", 1, 1000000),
    STR(tenant_query, true, ""),
    TIME(tenant_query_cache_ttl, true, "60"),
    TIME(tenant_idle_timeout, true, "300"),
    ENUM(tenant_pool_mode, true, "dedicated", tenant_pool_modes),
    ENUM(unknown_tenant, true, "reject", unknown_tenant_modes),

    STR(jwt_key_file, true, ""),
    STR(jwt_secret_file, true, ""),
    STR(jwt_algorithms, true, "RS256, ES256"),
    STR(jwt_tenant_claim, true, "custom:tenant_id"),
    STR(jwt_user_claim, true, "sub"),
    STR(jwt_issuer, true, ""),
    STR(jwt_audience, true, ""),
    TIME(jwt_leeway, true, "30"),
    BOOL(jwt_allow_plaintext, true, "no"),
    STR(jwt_jwks_url, true, ""),
    BOOL(jwt_enforce_expiry, true, "yes"),
    STR(jwt_user_map, true, ""),

    ENUM(client_tls_sslmode, true, "disable", sslmodes),
    STR(client_tls_cert_file, true, ""),
    STR(client_tls_key_file, true, ""),
    STR(client_tls_ca_file, true, ""),
    STR(client_tls_protocols, true, "secure"),
    STR(client_tls_ciphers, true, "default"),
    ENUM(server_tls_sslmode, true, "prefer", sslmodes),
    STR(server_tls_ca_file, true, ""),
    STR(server_tls_cert_file, true, ""),
    STR(server_tls_key_file, true, ""),
    STR(server_tls_protocols, true, "secure"),
    STR(server_tls_ciphers, true, "default"),

    STR(metrics_listen, false, ""),
    STR(audit_log, true, ""),
    INT(tenant_xact_rate, true, "0", 0, 100000000),
    INT(tenant_xact_burst, true, "0", 0, 100000000),
    STR(server_password_file, true, ""),
    INT(workers, false, "1", 1, 64),

    ENUM(server_auth, true, "password", server_auths),
    STR(aws_region, true, ""),
    TIME(dns_max_ttl, true, "15"),
    TIME(dns_nxdomain_ttl, true, "15"),
    STR(dns_nameserver, true, ""),
    STR(server_check_query, true, "select 1"),
    TIME(server_check_delay, true, "30"),

    STR(tenant_server_user, true, ""),
    ENUM(transaction_reset, true, "always", transaction_resets),
    INT(max_login_clients, true, "0", 0, 1000000),
    TIME(auth_failure_delay, true, "0.5"),
    STR(auth_user, true, ""),
    STR(auth_query, true, "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"),
    STR(auth_dbname, true, ""),
    TIME(auth_query_cache_ttl, true, "60"),
    ENUM(transaction_pinning, true, "auto", pinning_modes),
};

/* Parse value into the field described by k; false with a message. */
static bool cf_set(struct pgt_config *cfg, const struct cf_key *k, const char *value, char *err,
                   size_t errlen)
{
	void *field = (char *)cfg + k->off;
	switch (k->type) {
	case CF_INT: {
		long v;
		if (!util_parse_int(value, k->min, k->max, &v)) {
			snprintf(err, errlen,
			         "invalid value \"%s\" for %s: expected an integer from %ld to %ld", value,
			         k->name, k->min, k->max);
			return false;
		}
		*(int *)field = (int)v;
		return true;
	}
	case CF_BOOL:
		if (!util_parse_bool(value, (bool *)field)) {
			snprintf(err, errlen, "invalid value \"%s\" for %s: expected yes or no", value,
			         k->name);
			return false;
		}
		return true;
	case CF_TIME: {
		usec_t t;
		if (!util_parse_duration(value, &t)) {
			snprintf(err, errlen,
			         "invalid value \"%s\" for %s: expected seconds, or a number with unit ms, "
			         "s, min, h",
			         value, k->name);
			return false;
		}
		if (t < k->min) {
			snprintf(err, errlen, "invalid value \"%s\" for %s: must be at least %ld s", value,
			         k->name, k->min / USEC_PER_SEC);
			return false;
		}
		*(usec_t *)field = t;
		return true;
	}
	case CF_STR: {
		char **s = field;
		free(*s);
		*s = xstrdup(value);
		return true;
	}
	case CF_ENUM:
		for (int i = 0; k->choices[i]; i++) {
			if (strcasecmp(value, k->choices[i]) == 0) {
				*(int *)field = i;
				return true;
			}
		}
		{
			char opts[200] = "";
			for (int i = 0; k->choices[i]; i++) {
				strncat(opts, i ? ", " : "", sizeof(opts) - strlen(opts) - 1);
				strncat(opts, k->choices[i], sizeof(opts) - strlen(opts) - 1);
			}
			snprintf(err, errlen, "invalid value \"%s\" for %s: expected one of %s", value,
			         k->name, opts);
		}
		return false;
	}
	return false;
}

static const struct cf_key *cf_find(const char *name)
{
	for (size_t i = 0; i < PGT_ARRAY_SIZE(cf_keys); i++)
		if (strcasecmp(cf_keys[i].name, name) == 0)
			return &cf_keys[i];
	return NULL;
}

int config_key_count(void)
{
	return (int)PGT_ARRAY_SIZE(cf_keys);
}

void config_key_row(const struct pgt_config *cfg, int i, struct pgt_config_row *row)
{
	/* i < 0 (key -1 - i) with cfg == NULL: name and default only */
	const struct cf_key *k = &cf_keys[i < 0 ? -1 - i : i];
	row->name = k->name;
	row->def = k->def;
	row->reloadable = k->reloadable;
	row->value[0] = '\0';
	if (!cfg)
		return;
	const void *field = (const char *)cfg + k->off;
	switch (k->type) {
	case CF_INT:
		snprintf(row->value, sizeof(row->value), "%d", *(const int *)field);
		break;
	case CF_BOOL:
		snprintf(row->value, sizeof(row->value), "%s", *(const bool *)field ? "yes" : "no");
		break;
	case CF_TIME: {
		usec_t v = *(const usec_t *)field;
		if (v % USEC_PER_SEC == 0)
			snprintf(row->value, sizeof(row->value), "%lld", (long long)(v / USEC_PER_SEC));
		else
			snprintf(row->value, sizeof(row->value), "%lldms", (long long)(v / 1000));
		break;
	}
	case CF_STR: {
		const char *s = *(char *const *)field;
		snprintf(row->value, sizeof(row->value), "%s", s ? s : "");
		break;
	}
	case CF_ENUM:
		snprintf(row->value, sizeof(row->value), "%s", k->choices[*(const int *)field]);
		break;
	}
}

bool config_set_key(struct pgt_config *cfg, const char *name, const char *value, char *err, size_t errlen)
{
	const struct cf_key *k = cf_find(name);
	if (!k) {
		snprintf(err, errlen, "unknown config key \"%s\"", name);
		return false;
	}
	if (!k->reloadable) {
		snprintf(err, errlen, "%s cannot be changed without a restart", k->name);
		return false;
	}
	return cf_set(cfg, k, value, err, errlen);
}

/* ---- errors ---- */

/* dns_nameserver: "addr[:port], ..." (dns.c uses it) */
static bool nameservers_valid(const char *list)
{
	char *copy = xstrdup(list), *save = NULL;
	bool ok = true;
	for (char *tok = strtok_r(copy, ", \t", &save); tok && ok; tok = strtok_r(NULL, ", \t", &save)) {
		struct sockaddr_storage ss;
		int len = sizeof(ss);
		ok = evutil_parse_sockaddr_port(tok, (struct sockaddr *)&ss, &len) == 0;
	}
	free(copy);
	return ok;
}

PGT_PRINTF(3, 4)
static void cf_error(struct pgt_config *cfg, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cfg->nerrors++;
	if (cfg->errout)
		fprintf(cfg->errout, "%s:%d: %s\n", cfg->path, line, msg);
	else
		log_error("%s:%d: %s", cfg->path, line, msg);
}

/* ---- connection strings ---- */

static void db_defaults(struct pgt_database *db)
{
	memset(db, 0, sizeof(*db));
	db->port = 5432;
	db->pool_size = -1;
	db->min_pool_size = -1;
	db->reserve_pool = -1;
	db->max_db_connections = -1;
	db->pool_mode = db->tenant_pool_mode = -1;
	db->sslmode = -1;
	db->auth_type = -1;
	db->server_auth = -1;
}

const char *config_sslmode_name(int mode)
{
	return mode >= 0 && mode < (int)PGT_ARRAY_SIZE(sslmodes) - 1 ? sslmodes[mode] : "?";
}

const char *config_tsa_name(int tsa)
{
	return tsa >= 0 && tsa < (int)PGT_ARRAY_SIZE(tsa_names) - 1 ? tsa_names[tsa] : "?";
}

const char *config_lbh_name(int lbh)
{
	return lbh >= 0 && lbh < (int)PGT_ARRAY_SIZE(lbh_names) - 1 ? lbh_names[lbh] : "?";
}

int config_db_server_auth(const struct pgt_config *cfg, const struct pgt_database *db)
{
	return db->server_auth >= 0 ? db->server_auth : cfg->server_auth;
}

static void db_free(struct pgt_database *db)
{
	free(db->name);
	free(db->host);
	for (int i = 0; i < db->nhosts; i++)
		free(db->hosts[i]);
	free(db->aws_region);
	free(db->password_file);
	free(db->dbname);
	free(db->user);
	free(db->auth_user);
	free(db->auth_query);
	free(db->auth_dbname);
	if (db->password) {
		memset(db->password, 0, strlen(db->password));
		free(db->password);
	}
}

struct pgt_database *config_db_copy(const struct pgt_database *db)
{
	struct pgt_database *c = xcalloc(1, sizeof(*c));
	*c = *db;
	c->name = xstrdup(db->name);
	c->host = db->host ? xstrdup(db->host) : NULL;
	for (int i = 0; i < db->nhosts; i++)
		c->hosts[i] = db->hosts[i] ? xstrdup(db->hosts[i]) : NULL;
	c->aws_region = db->aws_region ? xstrdup(db->aws_region) : NULL;
	c->password_file = db->password_file ? xstrdup(db->password_file) : NULL;
	c->dbname = db->dbname ? xstrdup(db->dbname) : NULL;
	c->user = db->user ? xstrdup(db->user) : NULL;
	c->password = db->password ? xstrdup(db->password) : NULL;
	c->auth_user = db->auth_user ? xstrdup(db->auth_user) : NULL;
	c->auth_query = db->auth_query ? xstrdup(db->auth_query) : NULL;
	c->auth_dbname = db->auth_dbname ? xstrdup(db->auth_dbname) : NULL;
	return c;
}

void config_db_free(struct pgt_database *db)
{
	if (!db)
		return;
	db_free(db);
	free(db);
}

/* An enum value by name (case-insensitive), -1 if none. */
static int enum_find(const char *const *names, const char *v)
{
	for (int i = 0; names[i]; i++)
		if (strcasecmp(v, names[i]) == 0)
			return i;
	return -1;
}

/* Split host= at commas and give each host its port: one port for all, or
 * exactly one per host, as libpq. */
static bool hosts_finish(struct pgt_database *db, const char *ports, char *err, size_t errlen)
{
	int nports = 0;
	int plist[PGT_MAX_HOSTS];
	if (ports) {
		char *copy = xstrdup(ports), *save = NULL;
		char *tok = strtok_r(copy, ",", &save);
		bool ok = true;
		for (; tok && ok; tok = strtok_r(NULL, ",", &save)) {
			long n;
			if (nports == PGT_MAX_HOSTS || !util_parse_int(util_trim(tok), 1, 65535, &n)) {
				snprintf(err, errlen, "invalid port \"%s\"", ports);
				ok = false;
				break;
			}
			plist[nports++] = (int)n;
		}
		free(copy);
		if (!ok)
			return false;
		if (nports == 0) {
			snprintf(err, errlen, "invalid port \"%s\"", ports);
			return false;
		}
	}
	db->nhosts = 0;
	if (db->host && *db->host) {
		const char *p = db->host;
		for (;;) {
			const char *comma = strchr(p, ',');
			size_t n = comma ? (size_t)(comma - p) : strlen(p);
			if (db->nhosts == PGT_MAX_HOSTS) {
				snprintf(err, errlen, "more than %d hosts", PGT_MAX_HOSTS);
				return false;
			}
			char *h = xstrndup(p, n);
			char *t = util_trim(h);
			if (!*t) {
				free(h);
				snprintf(err, errlen, "empty host name in \"%s\"", db->host);
				return false;
			}
			db->hosts[db->nhosts++] = xstrdup(t);
			free(h);
			if (!comma)
				break;
			p = comma + 1;
		}
	} else {
		db->hosts[db->nhosts++] = NULL; /* the default unix socket dir */
	}
	if (nports > 1 && nports != db->nhosts) {
		snprintf(err, errlen, "%d ports for %d hosts: give one port, or one per host", nports,
		         db->nhosts);
		return false;
	}
	for (int i = 0; i < db->nhosts; i++)
		db->ports[i] = nports == 0 ? 5432 : plist[nports == 1 ? 0 : i];
	db->port = db->ports[0];
	return true;
}

bool connstr_parse(const char *s, struct pgt_database *db, char *err, size_t errlen)
{
	const char *p = s;
	char key[64], val[1024];
	char *ports = NULL;
	bool ok = false;
	for (;;) {
		while (isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		size_t kn = 0;
		while (*p && *p != '=' && !isspace((unsigned char)*p)) {
			if (kn + 1 >= sizeof(key)) {
				snprintf(err, errlen, "connection string key too long");
				goto out;
			}
			key[kn++] = *p++;
		}
		key[kn] = '\0';
		while (isspace((unsigned char)*p))
			p++;
		if (*p != '=') {
			snprintf(err, errlen, "expected key=value in connection string near \"%s\"", key);
			goto out;
		}
		p++;
		while (isspace((unsigned char)*p))
			p++;
		size_t vn = 0;
		if (*p == '\'') {
			p++;
			for (;;) {
				if (!*p) {
					snprintf(err, errlen, "unterminated quote in connection string");
					goto out;
				}
				if (*p == '\\' && p[1]) {
					p++;
				} else if (*p == '\'') {
					p++;
					break;
				}
				if (vn + 1 >= sizeof(val)) {
					snprintf(err, errlen, "value too long in connection string");
					goto out;
				}
				val[vn++] = *p++;
			}
		} else {
			while (*p && !isspace((unsigned char)*p)) {
				if (vn + 1 >= sizeof(val)) {
					snprintf(err, errlen, "value too long in connection string");
					goto out;
				}
				val[vn++] = *p++;
			}
		}
		val[vn] = '\0';
		long n;
		if (strcmp(key, "host") == 0) {
			free(db->host);
			db->host = xstrdup(val);
		} else if (strcmp(key, "port") == 0) {
			free(ports);
			ports = xstrdup(val);
		} else if (strcmp(key, "target_session_attrs") == 0) {
			if ((db->target_session_attrs = enum_find(tsa_names, val)) < 0) {
				snprintf(err, errlen,
				         "invalid target_session_attrs \"%s\": expected any, read-write, "
				         "read-only, primary, standby or prefer-standby",
				         val);
				goto out;
			}
		} else if (strcmp(key, "load_balance_hosts") == 0) {
			if ((db->load_balance_hosts = enum_find(lbh_names, val)) < 0) {
				snprintf(err, errlen,
				         "invalid load_balance_hosts \"%s\": expected disable, random or "
				         "round-robin",
				         val);
				goto out;
			}
		} else if (strcmp(key, "server_auth") == 0) {
			if ((db->server_auth = enum_find(server_auths, val)) < 0) {
				snprintf(err, errlen, "invalid server_auth \"%s\": expected password or iam",
				         val);
				goto out;
			}
		} else if (strcmp(key, "aws_region") == 0 || strcmp(key, "password_file") == 0) {
			char **f = key[0] == 'a' ? &db->aws_region : &db->password_file;
			free(*f);
			*f = *val ? xstrdup(val) : NULL;
		} else if (strcmp(key, "dbname") == 0) {
			free(db->dbname);
			db->dbname = xstrdup(val);
		} else if (strcmp(key, "user") == 0) {
			free(db->user);
			db->user = xstrdup(val);
		} else if (strcmp(key, "password") == 0) {
			free(db->password);
			db->password = xstrdup(val);
		} else if (strcmp(key, "auth_user") == 0 || strcmp(key, "auth_dbname") == 0) {
			char **f = key[5] == 'u' ? &db->auth_user : &db->auth_dbname;
			if (*val && !config_role_name_valid(val)) {
				snprintf(err, errlen, "invalid %s \"%s\"", key, val);
				goto out;
			}
			free(*f);
			*f = xstrdup(val);
		} else if (strcmp(key, "auth_query") == 0) {
			free(db->auth_query);
			db->auth_query = xstrdup(val);
		} else if (strcmp(key, "pool_size") == 0 || strcmp(key, "min_pool_size") == 0 ||
		           strcmp(key, "reserve_pool") == 0 || strcmp(key, "reserve_pool_size") == 0 ||
		           strcmp(key, "max_db_connections") == 0) {
			if (!util_parse_int(val, 0, 1000000, &n)) {
				snprintf(err, errlen, "invalid %s \"%s\"", key, val);
				goto out;
			}
			if (key[0] == 'p')
				db->pool_size = (int)n;
			else if (key[0] == 'm' && key[1] == 'i')
				db->min_pool_size = (int)n;
			else if (key[0] == 'r')
				db->reserve_pool = (int)n;
			else
				db->max_db_connections = (int)n;
		} else if (strcmp(key, "tenant_pool_mode") == 0) {
			if ((db->tenant_pool_mode = parse_tenant_pool_mode(val)) < 0) {
				snprintf(err, errlen,
				         "invalid tenant_pool_mode \"%s\": expected dedicated or shared",
				         val);
				goto out;
			}
		} else if (strcmp(key, "auth_type") == 0) {
			db->auth_type = -1;
			for (int i = 0; auth_types[i]; i++)
				if (strcasecmp(val, auth_types[i]) == 0)
					db->auth_type = i;
			if (db->auth_type < 0) {
				snprintf(
				    err, errlen,
				    "invalid auth_type \"%s\": expected trust, md5, scram-sha-256 or jwt",
				    val);
				goto out;
			}
		} else if (strcmp(key, "sslmode") == 0) {
			db->sslmode = -1;
			for (int i = 0; sslmodes[i]; i++)
				if (strcasecmp(val, sslmodes[i]) == 0)
					db->sslmode = i;
			if (db->sslmode < 0) {
				snprintf(err, errlen,
				         "invalid sslmode \"%s\": expected disable, allow, prefer, require, "
				         "verify-ca or verify-full",
				         val);
				goto out;
			}
		} else if (strcmp(key, "pool_mode") == 0) {
			if (strcasecmp(val, "session") == 0)
				db->pool_mode = PGT_POOL_SESSION;
			else if (strcasecmp(val, "transaction") == 0)
				db->pool_mode = PGT_POOL_TRANSACTION;
			else {
				snprintf(err, errlen, "invalid pool_mode \"%s\"", val);
				goto out;
			}
		} else {
			snprintf(err, errlen, "unknown connection string key \"%s\"", key);
			goto out;
		}
	}
	ok = hosts_finish(db, ports, err, errlen);
out:
	free(ports);
	return ok;
}

/* ---- [tenants] ---- */

static void tenant_conf_free(struct pgt_tenant_conf *t)
{
	free(t->id);
	free(t->database);
	free(t->statement_timeout);
	free(t->server_user);
	free(t->jwt_issuer);
	memset(t, 0, sizeof(*t));
}

/* "pool_size=10 max_client_conn=1000 database=bigcorp_db statement_timeout=30s disabled=yes" */
static bool tenant_conf_parse(const char *id, const char *spec, struct pgt_tenant_conf *t, char *err,
                              size_t errlen)
{
	memset(t, 0, sizeof(*t));
	t->id = xstrdup(id);
	t->pool_size = t->min_pool_size = t->reserve_pool = t->max_client_conn = -1;
	t->pool_mode = t->xact_rate = t->tenant_pool_mode = -1;
	char *copy = xstrdup(spec);
	bool ok = true;
	for (char *save = NULL, *tok = strtok_r(copy, " \t", &save); tok && ok;
	     tok = strtok_r(NULL, " \t", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq || eq == tok || !eq[1]) {
			snprintf(err, errlen, "expected key=value, got \"%s\"", tok);
			ok = false;
			break;
		}
		*eq = '\0';
		const char *k = tok, *v = eq + 1;
		long n;
		int *intfield = NULL;
		if (strcmp(k, "pool_size") == 0)
			intfield = &t->pool_size;
		else if (strcmp(k, "min_pool_size") == 0)
			intfield = &t->min_pool_size;
		else if (strcmp(k, "reserve_pool") == 0 || strcmp(k, "reserve_pool_size") == 0)
			intfield = &t->reserve_pool;
		else if (strcmp(k, "max_client_conn") == 0)
			intfield = &t->max_client_conn;
		else if (strcmp(k, "xact_rate") == 0)
			intfield = &t->xact_rate;
		if (intfield) {
			if (!util_parse_int(v, 0, 1000000, &n)) {
				snprintf(err, errlen, "invalid %s \"%s\"", k, v);
				ok = false;
			} else {
				*intfield = (int)n;
			}
		} else if (strcmp(k, "disabled") == 0) {
			if (!util_parse_bool(v, &t->disabled)) {
				snprintf(err, errlen, "invalid disabled \"%s\": expected yes or no", v);
				ok = false;
			}
		} else if (strcmp(k, "tenant_pool_mode") == 0) {
			if ((t->tenant_pool_mode = parse_tenant_pool_mode(v)) < 0) {
				snprintf(err, errlen,
				         "invalid tenant_pool_mode \"%s\": expected dedicated or shared", v);
				ok = false;
			}
		} else if (strcmp(k, "pool_mode") == 0) {
			if (strcasecmp(v, "session") == 0)
				t->pool_mode = PGT_POOL_SESSION;
			else if (strcasecmp(v, "transaction") == 0)
				t->pool_mode = PGT_POOL_TRANSACTION;
			else {
				snprintf(err, errlen, "invalid pool_mode \"%s\"", v);
				ok = false;
			}
		} else if (strcmp(k, "database") == 0) {
			free(t->database);
			t->database = xstrdup(v);
		} else if (strcmp(k, "server_user") == 0) {
			if (!config_role_name_valid(v)) {
				snprintf(err, errlen, "invalid server_user \"%s\"", v);
				ok = false;
			} else {
				free(t->server_user);
				t->server_user = xstrdup(v);
			}
		} else if (strcmp(k, "jwt_issuer") == 0) {
			free(t->jwt_issuer);
			t->jwt_issuer = xstrdup(v);
		} else if (strcmp(k, "statement_timeout") == 0) {
			/* goes into the server's startup options: digits and a unit only */
			bool plain = strlen(v) < 32;
			for (const char *c = v; *c; c++)
				if (!isalnum((unsigned char)*c))
					plain = false;
			if (!plain || !isdigit((unsigned char)v[0])) {
				snprintf(err, errlen,
				         "invalid statement_timeout \"%s\": expected e.g. 30s or 500ms", v);
				ok = false;
			} else {
				free(t->statement_timeout);
				t->statement_timeout = xstrdup(v);
			}
		} else {
			snprintf(err, errlen, "unknown tenant setting \"%s\"", k);
			ok = false;
		}
	}
	free(copy);
	return ok;
}

/* ---- [users] ---- */

static void user_conf_free(struct pgt_user_conf *u)
{
	free(u->name);
	memset(u, 0, sizeof(*u));
}

/* One integer setting of a [users] entry. */
static bool user_int(const char *k, const char *v, long min, long max, int *out, char *err, size_t errlen)
{
	long n;
	if (!util_parse_int(v, min, max, &n)) {
		snprintf(err, errlen, "invalid %s \"%s\": expected an integer from %ld to %ld", k, v, min,
		         max);
		return false;
	}
	*out = (int)n;
	return true;
}

/* "pool_mode=session pool_size=5 max_user_connections=10": PgBouncer's
 * [users] syntax, blanks around '=' allowed. */
static bool user_conf_parse(const char *name, const char *spec, struct pgt_user_conf *u, char *err,
                            size_t errlen)
{
	memset(u, 0, sizeof(*u));
	u->name = xstrdup(name);
	u->pool_mode = u->pool_size = u->reserve_pool = u->auth_type = -1;
	u->max_user_connections = u->max_user_client_connections = -1;
	const char *p = spec;
	for (;;) {
		while (isspace((unsigned char)*p))
			p++;
		if (!*p)
			return true;
		const char *ks = p;
		while (*p && *p != '=' && !isspace((unsigned char)*p))
			p++;
		size_t kn = (size_t)(p - ks);
		while (isspace((unsigned char)*p))
			p++;
		if (kn == 0 || *p != '=') {
			snprintf(err, errlen, "expected key=value, got \"%.*s\"",
			         (int)(kn ? kn : strcspn(p, " \t")), kn ? ks : p);
			return false;
		}
		p++;
		while (isspace((unsigned char)*p))
			p++;
		const char *vs = p;
		while (*p && !isspace((unsigned char)*p))
			p++;
		size_t vn = (size_t)(p - vs);
		char k[64], v[64];
		if (kn >= sizeof(k) || vn >= sizeof(v) || vn == 0) {
			snprintf(err, errlen, "%s value for \"%.*s\"", vn ? "overlong" : "missing",
			         (int)PGT_MIN(kn, sizeof(k)), ks);
			return false;
		}
		memcpy(k, ks, kn);
		k[kn] = '\0';
		memcpy(v, vs, vn);
		v[vn] = '\0';
		if (strcmp(k, "pool_mode") == 0) {
			if (strcasecmp(v, "session") == 0)
				u->pool_mode = PGT_POOL_SESSION;
			else if (strcasecmp(v, "transaction") == 0)
				u->pool_mode = PGT_POOL_TRANSACTION;
			else {
				snprintf(err, errlen,
				         "invalid pool_mode \"%s\": expected session or transaction", v);
				return false;
			}
		} else if (strcmp(k, "pool_size") == 0) {
			if (!user_int(k, v, 1, 100000, &u->pool_size, err, errlen))
				return false;
		} else if (strcmp(k, "reserve_pool_size") == 0 || strcmp(k, "reserve_pool") == 0) {
			if (!user_int(k, v, 0, 100000, &u->reserve_pool, err, errlen))
				return false;
		} else if (strcmp(k, "max_user_connections") == 0) {
			if (!user_int(k, v, 0, 1000000, &u->max_user_connections, err, errlen))
				return false;
		} else if (strcmp(k, "max_user_client_connections") == 0) {
			if (!user_int(k, v, 0, 1000000, &u->max_user_client_connections, err, errlen))
				return false;
		} else if (strcmp(k, "auth_type") == 0) {
			u->auth_type = -1;
			for (int i = 0; auth_types[i]; i++)
				if (strcasecmp(v, auth_types[i]) == 0)
					u->auth_type = i;
			if (u->auth_type < 0) {
				snprintf(
				    err, errlen,
				    "invalid auth_type \"%s\": expected trust, md5, scram-sha-256 or jwt", v);
				return false;
			}
		} else {
			snprintf(
			    err, errlen,
			    "unknown user setting \"%s\" (expected pool_mode, pool_size, reserve_pool_size, "
			    "max_user_connections, max_user_client_connections or auth_type)",
			    k);
			return false;
		}
	}
}

/* Name indexes ([tenants] ids, [users] names): open addressing over an
 * array of entries, slot = index + 1 (0 = empty), at most half full, so
 * that a login costs the same with 10 entries as with 100,000. */
typedef const char *(*index_key_fn)(const struct pgt_config *cfg, uint32_t n);

/* The entry named name + 1, or 0. */
static uint32_t index_find(const struct pgt_config *cfg, const uint32_t *idx, uint32_t cap, index_key_fn key,
                           const char *name)
{
	if (!cap)
		return 0;
	uint32_t mask = cap - 1;
	for (uint32_t i = (uint32_t)util_hash_str(name) & mask;; i = (i + 1) & mask) {
		if (!idx[i] || strcmp(key(cfg, idx[i] - 1), name) == 0)
			return idx[i];
	}
}

/* Index entry n (its name is not indexed yet). */
static void index_add(const struct pgt_config *cfg, uint32_t **idx, uint32_t *cap, uint32_t first_cap,
                      index_key_fn key, uint32_t n)
{
	if ((n + 1) * 2 > *cap) {
		*cap = *cap ? *cap * 2 : first_cap;
		free(*idx);
		*idx = xcalloc(*cap, sizeof(**idx));
		for (uint32_t i = 0; i < n; i++)
			index_add(cfg, idx, cap, first_cap, key, i);
	}
	uint32_t mask = *cap - 1;
	uint32_t i = (uint32_t)util_hash_str(key(cfg, n)) & mask;
	while ((*idx)[i])
		i = (i + 1) & mask;
	(*idx)[i] = n + 1;
}

static const char *user_key(const struct pgt_config *cfg, uint32_t n)
{
	return cfg->user_confs[n].name;
}

static const char *tenant_key(const struct pgt_config *cfg, uint32_t n)
{
	return cfg->tenants[n].id;
}

const struct pgt_user_conf *config_find_user(const struct pgt_config *cfg, const char *name)
{
	uint32_t k = index_find(cfg, cfg->user_index, cfg->user_index_cap, user_key, name);
	return k ? &cfg->user_confs[k - 1] : NULL;
}

static void user_index_add(struct pgt_config *cfg, int n)
{
	index_add(cfg, &cfg->user_index, &cfg->user_index_cap, 16, user_key, (uint32_t)n);
}

bool config_role_name_valid(const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > 63)
		return false;
	for (const char *c = name; *c; c++)
		if ((unsigned char)*c <= ' ' || *c == '"' || *c == '\'' || *c == '\\' || *c == 0x7f)
			return false;
	return true;
}

const struct pgt_tenant_conf *config_find_tenant(const struct pgt_config *cfg, const char *id)
{
	uint32_t k = index_find(cfg, cfg->tenant_index, cfg->tenant_index_cap, tenant_key, id);
	return k ? &cfg->tenants[k - 1] : NULL;
}

static void tenant_index_add(struct pgt_config *cfg, int n)
{
	index_add(cfg, &cfg->tenant_index, &cfg->tenant_index_cap, 64, tenant_key, (uint32_t)n);
}

bool config_tenant_id_valid(const struct pgt_config *cfg, const char *id)
{
	/* the schema name built from it must fit PostgreSQL's 63-byte identifiers */
	size_t n = strlen(id);
	if (n == 0 || n + strlen(cfg->tenant_schema) > 63 + 2 || !cfg->tenant_re_ok)
		return false;
	for (const char *c = id; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == '"' || *c == '.' || *c == '\'' || *c == '\\')
			return false; /* never, whatever the pattern says */
	return regexec(&cfg->tenant_re, id, 0, NULL, 0) == 0;
}

/* ---- the ini reader (util_ini_read_line: values longer than inih's lines) ---- */

struct cf_ctx {
	struct pgt_config *cfg;
	struct util_ini_reader *rd;
	bool seen_pgtenant;
};

static int cf_handler(void *user, const char *section, const char *name, const char *value)
{
	struct cf_ctx *ctx = user;
	struct pgt_config *cfg = ctx->cfg;
	int line = ctx->rd->line;
	char err[512];
	value = util_ini_value(ctx->rd, value);
	if (!name) /* section header alone (INI_CALL_HANDLER_ON_NEW_SECTION) */
		return 1;
	if (!value)
		value = "";
	if (strcasecmp(section, "pgtenant") == 0 || strcasecmp(section, "pgbouncer") == 0) {
		ctx->seen_pgtenant = true;
		const struct cf_key *k = cf_find(name);
		if (!k) {
			cf_error(cfg, line, "unknown key \"%s\" in section [%s]", name, section);
			return 1;
		}
		if (!cf_set(cfg, k, value, err, sizeof(err)))
			cf_error(cfg, line, "%s", err);
		else if (strcmp(k->name, "server_password_file") == 0)
			cfg->server_password_file_line = line;
	} else if (strcasecmp(section, "databases") == 0) {
		struct pgt_database db;
		db_defaults(&db);
		if (!connstr_parse(value, &db, err, sizeof(err))) {
			cf_error(cfg, line, "database \"%s\": %s", name, err);
			db_free(&db);
			return 1;
		}
		for (int i = 0; i < cfg->ndbs; i++) {
			if (strcmp(cfg->dbs[i].name, name) == 0) {
				cf_error(cfg, line, "database \"%s\" defined twice (first at line %d)", name,
				         cfg->dbs[i].line);
				db_free(&db);
				return 1;
			}
		}
		db.name = xstrdup(name);
		db.line = line;
		cfg->dbs = xrealloc(cfg->dbs, sizeof(*cfg->dbs) * (size_t)(cfg->ndbs + 1));
		cfg->dbs[cfg->ndbs++] = db;
	} else if (strcasecmp(section, "tenants") == 0) {
		struct pgt_tenant_conf t;
		if (!tenant_conf_parse(name, value, &t, err, sizeof(err))) {
			cf_error(cfg, line, "tenant \"%s\": %s", name, err);
			tenant_conf_free(&t);
			return 1;
		}
		if (config_find_tenant(cfg, name)) {
			cf_error(cfg, line, "tenant \"%s\" defined twice", name);
			tenant_conf_free(&t);
			return 1;
		}
		t.line = line;
		if (cfg->ntenants == cfg->tenants_cap) {
			cfg->tenants_cap = cfg->tenants_cap ? cfg->tenants_cap * 2 : 16;
			cfg->tenants =
			    xrealloc(cfg->tenants, sizeof(*cfg->tenants) * (size_t)cfg->tenants_cap);
		}
		cfg->tenants[cfg->ntenants] = t;
		tenant_index_add(cfg, cfg->ntenants);
		cfg->ntenants++;
	} else if (strcasecmp(section, "users") == 0) {
		struct pgt_user_conf u;
		if (!config_role_name_valid(name)) {
			cf_error(cfg, line, "invalid user name \"%s\" in [users]", name);
			return 1;
		}
		if (!user_conf_parse(name, value, &u, err, sizeof(err))) {
			cf_error(cfg, line, "user \"%s\": %s", name, err);
			user_conf_free(&u);
			return 1;
		}
		const struct pgt_user_conf *dup = config_find_user(cfg, name);
		if (dup) {
			cf_error(cfg, line, "user \"%s\" defined twice (first at line %d)", name, dup->line);
			user_conf_free(&u);
			return 1;
		}
		u.line = line;
		if (cfg->nuser_confs == cfg->user_confs_cap) {
			cfg->user_confs_cap = cfg->user_confs_cap ? cfg->user_confs_cap * 2 : 8;
			cfg->user_confs =
			    xrealloc(cfg->user_confs, sizeof(*cfg->user_confs) * (size_t)cfg->user_confs_cap);
		}
		cfg->user_confs[cfg->nuser_confs] = u;
		user_index_add(cfg, cfg->nuser_confs);
		cfg->nuser_confs++;
	} else {
		cf_error(cfg, line, "unknown section [%s]", section);
	}
	return 1;
}

static void cf_check_secret(struct pgt_config *cfg, const char *name, int line)
{
	struct pgt_secret sec;
	char err[256];
	char *path = secretfile_resolve(cfg->path, name);
	if (!secretfile_read(path, &sec, err, sizeof(err)))
		cf_error(cfg, line, "password file %s: %s", path, err);
	secretfile_clear(&sec);
	free(path);
}

static void cf_validate(struct pgt_config *cfg)
{
	char *anchored = xasprintf("^(%s)$", cfg->tenant_id_pattern);
	if (regcomp(&cfg->tenant_re, anchored, REG_EXTENDED | REG_NOSUB) != 0)
		cf_error(cfg, 0, "tenant_id_pattern \"%s\" is not a valid regular expression",
		         cfg->tenant_id_pattern);
	else
		cfg->tenant_re_ok = true;
	free(anchored);
	if (cfg->tenant_setting[0] && !vars_valid_name(cfg->tenant_setting))
		cf_error(cfg, 0, "tenant_setting \"%s\" is not a valid setting name", cfg->tenant_setting);
	if (!vars_valid_name(cfg->tenant_parameter))
		cf_error(cfg, 0, "tenant_parameter \"%s\" is not a valid parameter name",
		         cfg->tenant_parameter);
	const char *pct = strstr(cfg->tenant_schema, "%s");
	if (!pct || strchr(cfg->tenant_schema, '%') != pct || strchr(pct + 2, '%'))
		cf_error(cfg, 0, "tenant_schema must contain %%s exactly once and no other %%");
	for (int i = 0; i < cfg->ntenants; i++) {
		const struct pgt_tenant_conf *t = &cfg->tenants[i];
		if (cfg->tenant_re_ok && !config_tenant_id_valid(cfg, t->id))
			cf_error(cfg, t->line, "tenant \"%s\" does not match tenant_id_pattern", t->id);
		if (t->database && !config_find_db(cfg, t->database))
			cf_error(cfg, t->line, "tenant \"%s\": no database entry \"%s\" in [databases]",
			         t->id, t->database);
	}
	if (cfg->tenant_server_user[0]) {
		const char *ps = strstr(cfg->tenant_server_user, "%s");
		if (!ps || strchr(cfg->tenant_server_user, '%') != ps || strchr(ps + 2, '%'))
			cf_error(cfg, 0, "tenant_server_user must contain %%s exactly once and no other %%");
	}
	bool jwt_db = false;
	/* passwords can come from auth_query instead of auth_file */
	bool lookups = cfg->auth_user[0] != '\0';
	for (int i = 0; i < cfg->ndbs; i++) {
		jwt_db |= cfg->dbs[i].auth_type == PGT_AUTH_JWT;
		lookups |= cfg->dbs[i].auth_user && cfg->dbs[i].auth_user[0];
	}
	for (int i = 0; i < cfg->nuser_confs; i++) {
		const struct pgt_user_conf *u = &cfg->user_confs[i];
		jwt_db |= u->auth_type == PGT_AUTH_JWT;
		if ((u->auth_type == PGT_AUTH_MD5 || u->auth_type == PGT_AUTH_SCRAM) && !*cfg->auth_file &&
		    !lookups)
			cf_error(cfg, u->line, "user \"%s\": auth_type %s needs auth_file or auth_user",
			         u->name, auth_types[u->auth_type]);
	}
	/* (jwt: tokens need no auth_file; the admin console's users do, and
	 * without one nobody can log in to it) */
	if (cfg->auth_type != PGT_AUTH_TRUST && cfg->auth_type != PGT_AUTH_JWT && !*cfg->auth_file &&
	    !lookups)
		cf_error(cfg, 0, "auth_type %s needs auth_file or auth_user", auth_types[cfg->auth_type]);
	if ((cfg->auth_type == PGT_AUTH_JWT || jwt_db) && !cfg->jwt_key_file[0] && !cfg->jwt_secret_file[0] &&
	    !cfg->jwt_jwks_url[0])
		cf_error(cfg, 0, "auth_type jwt needs jwt_key_file, jwt_jwks_url or jwt_secret_file");
	/* verify-ca checks no host name: against the system's public CAs any
	 * certificate anyone can buy would pass */
	bool verify_ca = cfg->server_tls_sslmode == PGT_SSL_VERIFY_CA;
	for (int i = 0; i < cfg->ndbs; i++)
		verify_ca |= cfg->dbs[i].sslmode == PGT_SSL_VERIFY_CA;
	for (int i = 0; i < cfg->ndbs; i++) {
		const struct pgt_database *db = &cfg->dbs[i];
		if (config_db_server_auth(cfg, db) != PGT_SERVER_AUTH_IAM)
			continue;
		/* the token is a bearer credential for 15 minutes: never in the clear */
		int mode = db->sslmode >= 0 ? db->sslmode : cfg->server_tls_sslmode;
		if (mode < PGT_SSL_REQUIRE)
			cf_error(cfg, db->line,
			         "database \"%s\": server_auth iam needs TLS: sslmode require or stricter "
			         "(now %s)",
			         db->name, config_sslmode_name(mode));
		for (int h = 0; h < db->nhosts; h++)
			if (!db->hosts[h] || db->hosts[h][0] == '/')
				cf_error(
				    cfg, db->line,
				    "database \"%s\": server_auth iam needs a TCP host, not a unix socket",
				    db->name);
	}
	if (cfg->dns_nameserver[0] && !nameservers_valid(cfg->dns_nameserver))
		cf_error(cfg, 0, "dns_nameserver \"%s\": expected address[:port], ...", cfg->dns_nameserver);
	if (verify_ca && !cfg->server_tls_ca_file[0])
		cf_error(
		    cfg, 0,
		    "server sslmode verify-ca needs server_tls_ca_file (verify-full may use the system CAs)");
	/* a password file that cannot be used is an error where it is named
	 * (at startup, with --check, and a reload keeps the old config); one
	 * that breaks later is logged and its last good value kept
	 * (secretfile.c) */
	if (cfg->server_password_file[0])
		cf_check_secret(cfg, cfg->server_password_file, cfg->server_password_file_line);
	for (int i = 0; i < cfg->ndbs; i++)
		if (cfg->dbs[i].password_file)
			cf_check_secret(cfg, cfg->dbs[i].password_file, cfg->dbs[i].line);
	if (*cfg->auth_file) {
		struct pgt_userlist *ul = xcalloc(1, sizeof(*ul));
		char err[512];
		int errline = 0;
		char *path = cfg->auth_file;
		char *resolved = NULL;
		/* a relative auth_file is relative to the config file, like pgbouncer.ini users expect */
		if (path[0] != '/') {
			const char *slash = strrchr(cfg->path, '/');
			if (slash)
				path = resolved =
				    xasprintf("%.*s/%s", (int)(slash - cfg->path), cfg->path, path);
		}
		if (!userlist_load(path, ul, &errline, err, sizeof(err))) {
			cfg->nerrors++;
			if (cfg->errout)
				fprintf(cfg->errout, "%s:%d: %s\n", errline ? path : cfg->path, errline, err);
			else
				log_error("%s:%d: %s", errline ? path : cfg->path, errline, err);
			free(ul);
		} else {
			cfg->users = ul;
		}
		free(resolved);
	}
	if (cfg->listen_addr[0] == '\0' && cfg->unix_socket_dir[0] == '\0')
		cf_error(cfg, 0, "neither listen_addr nor unix_socket_dir is set: nothing to listen on");
}

struct pgt_config *config_load(const char *path, FILE *errout, int *nerrors)
{
	struct pgt_config *cfg = xcalloc(1, sizeof(*cfg));
	cfg->path = xstrdup(path);
	cfg->errout = errout;
	char err[512];
	for (size_t i = 0; i < PGT_ARRAY_SIZE(cf_keys); i++) {
		if (!cf_set(cfg, &cf_keys[i], cf_keys[i].def, err, sizeof(err))) {
			fprintf(stderr, "BUG: default of %s: %s\n", cf_keys[i].name, err);
			abort();
		}
	}
	struct util_ini_reader rd = {0};
	rd.f = fopen(path, "r");
	if (!rd.f) {
		cf_error(cfg, 0, "cannot open config file: %s", strerror(errno));
		goto done;
	}
	ini_allow_multiline = false;
	struct cf_ctx ctx = {cfg, &rd, false};
	int r = ini_parse_stream(util_ini_read_line, &rd, cf_handler, &ctx);
	util_ini_close(&rd);
	if (r > 0)
		cf_error(cfg, r, "syntax error: expected [section] or key = value");
	else if (r < 0)
		cf_error(cfg, 0, "cannot read config file");
	if (r == 0 && !ctx.seen_pgtenant && cfg->nerrors == 0)
		cf_error(cfg, 0, "no [pgtenant] section");
	if (cfg->nerrors == 0)
		cf_validate(cfg);
done:
	*nerrors = cfg->nerrors;
	cfg->errout = NULL;
	if (cfg->nerrors) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

void config_free(struct pgt_config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < PGT_ARRAY_SIZE(cf_keys); i++)
		if (cf_keys[i].type == CF_STR)
			free(*(char **)((char *)cfg + cf_keys[i].off));
	for (int i = 0; i < cfg->ndbs; i++)
		db_free(&cfg->dbs[i]);
	free(cfg->dbs);
	for (int i = 0; i < cfg->ntenants; i++)
		tenant_conf_free(&cfg->tenants[i]);
	free(cfg->tenants);
	free(cfg->tenant_index);
	for (int i = 0; i < cfg->nuser_confs; i++)
		user_conf_free(&cfg->user_confs[i]);
	free(cfg->user_confs);
	free(cfg->user_index);
	if (cfg->tenant_re_ok)
		regfree(&cfg->tenant_re);
	if (cfg->users) {
		userlist_free(cfg->users);
		free(cfg->users);
	}
	free(cfg->path);
	free(cfg);
}

const struct pgt_database *config_find_db(const struct pgt_config *cfg, const char *name)
{
	const struct pgt_database *fallback = NULL;
	for (int i = 0; i < cfg->ndbs; i++) {
		if (strcmp(cfg->dbs[i].name, name) == 0)
			return &cfg->dbs[i];
		if (strcmp(cfg->dbs[i].name, "*") == 0)
			fallback = &cfg->dbs[i];
	}
	return fallback;
}

int config_max_login_clients(const struct pgt_config *cfg)
{
	return cfg->max_login_clients > 0 ? cfg->max_login_clients : PGT_MAX(100, cfg->max_client_conn / 10);
}

int config_db_pool_size(const struct pgt_config *cfg, const struct pgt_database *db)
{
	return db->pool_size >= 0 ? db->pool_size : cfg->default_pool_size;
}

int config_tenant_pool_mode(const struct pgt_config *cfg, const struct pgt_database *db,
                            const struct pgt_tenant_conf *tc)
{
	if (tc && tc->tenant_pool_mode >= 0)
		return tc->tenant_pool_mode;
	return db->tenant_pool_mode >= 0 ? db->tenant_pool_mode : cfg->tenant_pool_mode;
}

int config_db_pool_mode(const struct pgt_config *cfg, const struct pgt_database *db)
{
	return db->pool_mode >= 0 ? db->pool_mode : cfg->pool_mode;
}

int config_db_max_connections(const struct pgt_config *cfg, const struct pgt_database *db)
{
	return db->max_db_connections >= 0 ? db->max_db_connections : cfg->max_db_connections;
}
