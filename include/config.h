/*
 * Configuration: one struct, built and validated whole by config_load(), then
 * swapped in by the caller (reload keeps the old one on error).  Keys of the
 * [pgtenant] section are parsed through a table (config.c) of
 * {name, type, offset, reloadable, default} rows.
 */
#ifndef PGT_CONFIG_H
#define PGT_CONFIG_H

#include <regex.h>
#include <stdbool.h>
#include <stdio.h>

#include "util.h"

enum pgt_pool_mode { PGT_POOL_SESSION = 0, PGT_POOL_TRANSACTION = 1 };
/* tenant_pool_mode: server connections per tenant, or per database entry
 * with the pin applied per transaction (pool.c) */
enum pgt_tenant_pool_mode { PGT_TENANT_POOL_DEDICATED = 0, PGT_TENANT_POOL_SHARED = 1 };
enum pgt_auth_type { PGT_AUTH_TRUST = 0, PGT_AUTH_MD5, PGT_AUTH_SCRAM, PGT_AUTH_JWT };
enum pgt_sslmode {
	PGT_SSL_DISABLE = 0,
	PGT_SSL_ALLOW,
	PGT_SSL_PREFER,
	PGT_SSL_REQUIRE,
	PGT_SSL_VERIFY_CA,
	PGT_SSL_VERIFY_FULL
};
enum pgt_unknown_tenant { PGT_UNKNOWN_REJECT = 0, PGT_UNKNOWN_ALLOW };
enum pgt_transaction_reset { PGT_RESET_ALWAYS = 0 };
enum pgt_pinning { PGT_PIN_AUTO = 0, PGT_PIN_OFF };
/* target_session_attrs of a [databases] entry (libpq's names and order) */
enum pgt_tsa {
	PGT_TSA_ANY = 0,
	PGT_TSA_READ_WRITE,
	PGT_TSA_READ_ONLY,
	PGT_TSA_PRIMARY,
	PGT_TSA_STANDBY,
	PGT_TSA_PREFER_STANDBY
};
/* load_balance_hosts of a [databases] entry */
enum pgt_lbh { PGT_LBH_DISABLE = 0, PGT_LBH_RANDOM, PGT_LBH_ROUND_ROBIN };
/* server_auth: how pgtenant proves itself to the server */
enum pgt_server_auth { PGT_SERVER_AUTH_PASSWORD = 0, PGT_SERVER_AUTH_IAM };

/* Hosts of one entry (host=a,b,c port=1,2,3, as libpq). */
#define PGT_MAX_HOSTS 16

/* One [databases] entry. */
struct pgt_database {
	char *name;
	char *host; /* as written (SHOW DATABASES); NULL = default unix socket dir */
	int port;   /* the first host's port */
	/* host= split at commas, each with its port (one port= for all, or one
	 * per host); a leading '/' is a unix socket dir; nhosts >= 1 */
	int nhosts;
	char *hosts[PGT_MAX_HOSTS];
	int ports[PGT_MAX_HOSTS];
	int target_session_attrs; /* PGT_TSA_* */
	int load_balance_hosts;   /* PGT_LBH_* */
	int server_auth;          /* PGT_SERVER_AUTH_*; -1 = global */
	char *aws_region;         /* IAM: NULL = aws_region, else parsed from the host name */
	char *password_file;      /* NULL = server_password_file (SPEC §3) */
	char *dbname;             /* NULL = same as name */
	char *user;               /* forced server user; NULL = the client's user */
	char *password;           /* NULL = from auth_file */
	int pool_size;            /* -1 = default_pool_size */
	int min_pool_size;
	int reserve_pool;
	int max_db_connections; /* -1 = global */
	int pool_mode;          /* -1 = global */
	int tenant_pool_mode;   /* -1 = global */
	int sslmode;            /* server_tls_sslmode of this entry; -1 = global */
	int auth_type;          /* client authentication for this entry; -1 = global */
	char *auth_user;        /* auth_query's user, query and database; NULL = global (authquery.h) */
	char *auth_query;
	char *auth_dbname;
	int line;
};

/* One [tenants] entry: per-tenant overrides (-1 / NULL = the default). */
struct pgt_tenant_conf {
	char *id;
	int pool_size;        /* server connections of the tenant's pool; -1 = tenant_pool_size */
	int min_pool_size;    /* -1 = min_pool_size */
	int reserve_pool;     /* -1 = reserve_pool_size */
	int max_client_conn;  /* -1 = tenant_max_client_conn */
	int pool_mode;        /* -1 = the database's */
	int tenant_pool_mode; /* -1 = the database's */
	int xact_rate;        /* transactions/second; -1 = tenant_xact_rate (ratelimit.h) */
	bool disabled;
	char *database;          /* [databases] entry to route to; NULL = the one asked for */
	char *statement_timeout; /* pinned on the tenant's server connections; NULL = none */
	char *server_user;       /* role the tenant's pool logs in as; NULL = tenant_server_user */
	char *jwt_issuer;        /* tokens naming this tenant only from this issuer; NULL = any */
	int line;
};

/* One [users] entry: PgBouncer's per-user settings (-1 = not set).  The
 * pool settings apply to the pools whose server user it names, the
 * client-side ones to the clients that log in with that name. */
struct pgt_user_conf {
	char *name;
	int pool_mode;                   /* over the database's; a [tenants] entry's wins */
	int pool_size;                   /* over the database's and tenant_pool_size; a tenant's wins */
	int reserve_pool;                /* likewise */
	int max_user_connections;        /* server connections of the user across its pools; 0 = no cap */
	int max_user_client_connections; /* clients logged in as the user; 0 = no cap */
	int auth_type;                   /* over the database entry's and the global one */
	int line;
};

struct pgt_config {
	char *path;

	/* [pgtenant] */
	char *listen_addr;
	int listen_port;
	char *unix_socket_dir;
	int unix_socket_mode;
	char *pidfile;
	char *logfile;
	char *admin_users;
	char *stats_users;
	int auth_type;
	char *auth_file;
	int pool_mode;
	int max_client_conn;
	int default_pool_size;
	int min_pool_size;
	int reserve_pool_size;
	usec_t reserve_pool_timeout;
	int max_db_connections;
	char *server_reset_query;
	usec_t server_lifetime;
	usec_t server_idle_timeout;
	usec_t autodb_idle_timeout; /* a pool of the "*" entry with nobody in it is dropped after this */
	usec_t server_connect_timeout;
	usec_t server_login_retry;
	usec_t query_timeout;
	usec_t query_wait_timeout;
	usec_t client_idle_timeout;
	usec_t client_login_timeout;
	usec_t idle_transaction_timeout;
	int max_prepared_statements;
	int pkt_buf;
	char *ignore_startup_parameters;
	bool tcp_keepalive;
	/* TCP_KEEPIDLE, TCP_KEEPINTVL (seconds), TCP_KEEPCNT and TCP_USER_TIMEOUT
	 * (milliseconds, as PgBouncer's) of new sockets; 0 = the OS default */
	int tcp_keepidle;
	int tcp_keepintvl;
	int tcp_keepcnt;
	int tcp_user_timeout;
	/* the largest message a client may send (PgBouncer's key); checked on
	 * the header, so a larger one is refused before it is buffered */
	int max_packet_size;
	usec_t stats_period;
	bool log_stats;

	bool tenant_required;
	char *tenant_sources;
	char *tenant_parameter;
	char *tenant_user_separator;
	char *tenant_sni_suffix;
	char *tenant_id_pattern;
	char *tenant_schema;
	char *tenant_search_path;
	char *tenant_setting;
	int tenant_pool_size;
	int tenant_max_client_conn;
	char *tenant_query;
	usec_t tenant_query_cache_ttl;
	usec_t tenant_idle_timeout; /* a dynamic tenant without clients this long is forgotten */
	int tenant_pool_mode;       /* PGT_TENANT_POOL_* */
	int unknown_tenant;

	char *jwt_key_file;
	char *jwt_secret_file;
	char *jwt_algorithms;
	char *jwt_tenant_claim;
	char *jwt_user_claim;
	char *jwt_issuer;
	char *jwt_audience;
	usec_t jwt_leeway;
	bool jwt_allow_plaintext;
	char *jwt_jwks_url;
	bool jwt_enforce_expiry;
	char *jwt_user_map;

	int client_tls_sslmode;
	char *client_tls_cert_file;
	char *client_tls_key_file;
	char *client_tls_ca_file;
	char *client_tls_protocols;
	char *client_tls_ciphers;
	int server_tls_sslmode;
	char *server_tls_ca_file;
	char *server_tls_cert_file;
	char *server_tls_key_file;
	char *server_tls_protocols;
	char *server_tls_ciphers;

	char *metrics_listen;
	char *audit_log;
	int tenant_xact_rate;  /* transactions/second per tenant, 0 = unlimited (ratelimit.h) */
	int tenant_xact_burst; /* 0 = one second's worth */
	char *server_password_file;
	int server_password_file_line; /* where it was set (errors about the file) */
	int workers;

	int server_auth; /* PGT_SERVER_AUTH_* */
	char *aws_region;
	usec_t dns_max_ttl;      /* a resolved name is kept this long */
	usec_t dns_nxdomain_ttl; /* a failed lookup is kept this long */
	char *dns_nameserver;    /* host[:port] list instead of resolv.conf; empty = resolv.conf */
	char *server_check_query;
	usec_t server_check_delay;

	char *tenant_server_user; /* e.g. tenant_%s: each tenant's pool logs in as its own role */
	int transaction_reset;    /* PGT_RESET_ALWAYS */
	int max_login_clients; /* cap on unauthenticated connections; 0 = derived (config_max_login_clients) */
	usec_t auth_failure_delay;
	int transaction_pinning; /* PGT_PIN_AUTO: keep a client on its server while it holds session-only state */
	char *auth_user;         /* users not in auth_file are looked up with auth_query (authquery.h) */
	char *auth_query;
	char *auth_dbname;
	usec_t auth_query_cache_ttl;

	/* [databases] */
	struct pgt_database *dbs;
	int ndbs;
	/* [tenants] */
	struct pgt_tenant_conf *tenants;
	int ntenants, tenants_cap;
	/* tenants by id: open addressing, index + 1 (0 = empty), a power of two
	 * at most half full, so that a login costs the same with 10 tenants
	 * configured as with 100,000 */
	uint32_t *tenant_index;
	uint32_t tenant_index_cap;
	/* [users], indexed by name the same way */
	struct pgt_user_conf *user_confs;
	int nuser_confs, user_confs_cap;
	uint32_t *user_index;
	uint32_t user_index_cap;
	/* tenant_id_pattern, anchored and compiled */
	regex_t tenant_re;
	bool tenant_re_ok;
	/* auth_file contents */
	struct pgt_userlist *users;

	int nerrors;
	FILE *errout; /* where errors are printed (NULL = log) */
};

/* Load and validate a config file.  Every error is reported as file:line.
 * Returns NULL if there was any error; *nerrors receives the count. */
struct pgt_config *config_load(const char *path, FILE *errout, int *nerrors);
void config_free(struct pgt_config *cfg);

/* [tenants] entry by id, or NULL. */
const struct pgt_tenant_conf *config_find_tenant(const struct pgt_config *cfg, const char *id);
/* [users] entry by name, or NULL. */
const struct pgt_user_conf *config_find_user(const struct pgt_config *cfg, const char *name);
/* A role name pgtenant may put in a startup packet (no quotes, blanks or controls, <= 63 bytes). */
bool config_role_name_valid(const char *name);
/* "disable" ... "verify-full" */
const char *config_sslmode_name(int mode);
/* "any" ... "prefer-standby" */
const char *config_tsa_name(int tsa);
/* "disable" | "random" | "round-robin" */
const char *config_lbh_name(int lbh);
/* The entry's server_auth, else the global one. */
int config_db_server_auth(const struct pgt_config *cfg, const struct pgt_database *db);
/* Whole-string match of tenant_id_pattern (and a length that fits a schema name). */
bool config_tenant_id_valid(const struct pgt_config *cfg, const char *id);

/* Database entry by name, else the `*` fallback, else NULL. */
const struct pgt_database *config_find_db(const struct pgt_config *cfg, const char *name);

/* max_login_clients, or its derived default when 0. */
int config_max_login_clients(const struct pgt_config *cfg);

/* Effective per-database settings. */
int config_db_pool_size(const struct pgt_config *cfg, const struct pgt_database *db);
int config_db_pool_mode(const struct pgt_config *cfg, const struct pgt_database *db);
/* PGT_TENANT_POOL_*: the tenant's, else the entry's, else the global one. */
int config_tenant_pool_mode(const struct pgt_config *cfg, const struct pgt_database *db,
                            const struct pgt_tenant_conf *tc);
int config_db_max_connections(const struct pgt_config *cfg, const struct pgt_database *db);

/* Iteration over the [pgtenant] key table (SHOW CONFIG, the option scan). */
struct pgt_config_row {
	const char *name;
	char value[256];
	const char *def;
	bool reloadable;
};
int config_key_count(void);
void config_key_row(const struct pgt_config *cfg, int i, struct pgt_config_row *row);
/* Set one [pgtenant] key at run time (admin SET); false with a message on error. */
bool config_set_key(struct pgt_config *cfg, const char *name, const char *value, char *err, size_t errlen);

/* Parse a [databases] connection string into db (fields not given keep their
 * defaults).  Returns false and fills err on error. */
/* A database entry that outlives its config (a removed entry whose pool drains). */
struct pgt_database *config_db_copy(const struct pgt_database *db);
void config_db_free(struct pgt_database *db);
bool connstr_parse(const char *s, struct pgt_database *db, char *err, size_t errlen);

#endif
