/*
 * Tenant identification: which tenant a connection belongs to, from the
 * sources named in tenant_sources (startup parameter, -c tenant=X in
 * options, user name suffix, TLS server name, JWT claim), in that order.
 * Every value found is validated against tenant_id_pattern; two sources that
 * name different tenants are a conflict.  Pure functions over the startup
 * data, so that the unit tests can drive them.
 */
#ifndef PGT_TENANT_H
#define PGT_TENANT_H

#include <stdbool.h>
#include <stddef.h>

struct pgt_config;
struct pktbuf;

enum tenant_status { TENANT_NONE = 0, TENANT_FOUND, TENANT_INVALID, TENANT_CONFLICT };

#define TENANT_ID_MAX 64

struct tenant_request {
	const char *parameter; /* value of the tenant_parameter startup parameter */
	const char *option;    /* -c tenant=X taken out of options */
	const char *user;      /* user name as the client sent it */
	const char *sni;       /* TLS server name (not available yet) */
	const char *jwt;       /* tenant claim of a verified token (not available yet) */
};

struct tenant_result {
	enum tenant_status status;
	char id[TENANT_ID_MAX];
	const char *source;        /* where id came from */
	char other[TENANT_ID_MAX]; /* TENANT_CONFLICT: the other value */
	const char *other_source;
	const char *bad_source; /* TENANT_INVALID: which source had a bad value */
	size_t user_len;        /* length of the real user name (suffix removed) */
};

void tenant_identify(const struct pgt_config *cfg, const struct tenant_request *req,
                     struct tenant_result *out);

/* The tenant's schema (tenant_schema with %s = id) into out; false if too long. */
bool tenant_schema_name(const struct pgt_config *cfg, const char *id, char *out, size_t outlen);
/* The pinned search_path (tenant_search_path with $tenant = schema). */
bool tenant_search_path(const struct pgt_config *cfg, const char *id, char *out, size_t outlen);

#endif
