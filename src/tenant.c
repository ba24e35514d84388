/*
 * Tenant identification (see tenant.h).  A tenant id reaches SQL only after
 * it matched tenant_id_pattern (which config_tenant_id_valid also refuses to
 * widen to quotes, dots or control characters).
 */
#include "tenant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "util.h"

/* Take one candidate value; returns false once the outcome is decided. */
static bool consider(const struct pgt_config *cfg, struct tenant_result *out, const char *source,
                     const char *value, size_t len)
{
	char id[TENANT_ID_MAX];
	if (len >= sizeof(id) || memchr(value, 0, len) != NULL) {
		out->status = TENANT_INVALID;
		out->bad_source = source;
		return false;
	}
	memcpy(id, value, len);
	id[len] = '\0';
	if (!config_tenant_id_valid(cfg, id)) {
		out->status = TENANT_INVALID;
		out->bad_source = source;
		return false;
	}
	if (out->status == TENANT_FOUND) {
		if (strcmp(out->id, id) != 0) {
			out->status = TENANT_CONFLICT;
			snprintf(out->other, sizeof(out->other), "%s", id);
			out->other_source = source;
			return false;
		}
		return true;
	}
	out->status = TENANT_FOUND;
	snprintf(out->id, sizeof(out->id), "%s", id);
	out->source = source;
	return true;
}

void tenant_identify(const struct pgt_config *cfg, const struct tenant_request *req,
                     struct tenant_result *out)
{
	memset(out, 0, sizeof(*out));
	out->user_len = req->user ? strlen(req->user) : 0;
	/* walk tenant_sources in the order written */
	char *list = xstrdup(cfg->tenant_sources);
	for (char *save = NULL, *src = strtok_r(list, ", \t", &save); src;
	     src = strtok_r(NULL, ", \t", &save)) {
		const char *v = NULL;
		size_t len = 0;
		const char *name = NULL;
		if (strcmp(src, "parameter") == 0 && req->parameter) {
			v = req->parameter;
			name = "parameter";
		} else if (strcmp(src, "options") == 0 && req->option) {
			v = req->option;
			name = "options";
		} else if (strcmp(src, "user") == 0 && req->user && cfg->tenant_user_separator[0]) {
			/* the last separator: "first.last.acme" is user first.last, tenant acme */
			const char *sep = NULL;
			size_t sl = strlen(cfg->tenant_user_separator);
			for (const char *p = strstr(req->user, cfg->tenant_user_separator); p;
			     p = strstr(p + 1, cfg->tenant_user_separator))
				sep = p;
			if (sep) {
				v = sep + sl;
				out->user_len = (size_t)(sep - req->user);
				name = "user";
			}
		} else if (strcmp(src, "sni") == 0 && req->sni) {
			v = req->sni;
			name = "sni";
		} else if (strcmp(src, "jwt") == 0 && req->jwt) {
			v = req->jwt;
			name = "jwt";
		}
		if (!v)
			continue;
		len = strlen(v);
		if (!consider(cfg, out, name, v, len))
			break;
	}
	free(list);
	if (out->status == TENANT_INVALID)
		out->id[0] = '\0'; /* never echo a refused value */
}

bool tenant_schema_name(const struct pgt_config *cfg, const char *id, char *out, size_t outlen)
{
	const char *pct = strstr(cfg->tenant_schema, "%s");
	if (!pct)
		return false;
	int n = snprintf(out, outlen, "%.*s%s%s", (int)(pct - cfg->tenant_schema), cfg->tenant_schema, id,
	                 pct + 2);
	return n > 0 && (size_t)n < outlen && n <= 63;
}

bool tenant_search_path(const struct pgt_config *cfg, const char *id, char *out, size_t outlen)
{
	char schema[128];
	if (!tenant_schema_name(cfg, id, schema, sizeof(schema)))
		return false;
	size_t o = 0;
	for (const char *p = cfg->tenant_search_path; *p;) {
		if (strncmp(p, "$tenant", 7) == 0) {
			/* the id matched the pattern, and never contains a quote; double
			 * any quote of the configured schema template all the same */
			for (const char *q = schema; *q; q++) {
				if (o + 2 >= outlen)
					return false;
				if (*q == '"')
					out[o++] = '"';
				out[o++] = *q;
			}
			p += 7;
			continue;
		}
		if (o + 1 >= outlen)
			return false;
		out[o++] = *p++;
	}
	out[o] = '\0';
	return true;
}
