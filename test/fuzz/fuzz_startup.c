/*
 * fuzz_startup: what a client sends before it is anyone.  The input is a
 * whole startup-style packet (length word first: StartupMessage,
 * CancelRequest, SSLRequest, GSSENCRequest) through proto_parse_startup;
 * a v3 StartupMessage's parameters then go where client.c sends them: the
 * options parameter to vars_parse_options ("-c a=b --c=d", backslash
 * escapes) with the tenant watched, client_encoding to vars_encoding_name,
 * and the tenant sources to tenant_identify under a config that has them
 * all.  The same bytes are also given to vars_parse_options as a bare
 * options string, so that seeds of either kind are useful.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz_util.h"
#include "proto.h"
#include "tenant.h"
#include "varcache.h"

static struct pgt_config *cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	static const char ini[] = "[pgtenant]\nauth_type = trust\n"
	                          "tenant_sources = parameter, options, user, sni, jwt\n"
	                          "tenant_parameter = tenant\ntenant_user_separator = .\n";
	cfg = fuzz_config_load(ini, sizeof(ini) - 1);
	if (!cfg)
		abort();
	return 0;
}

static void options(const char *opt)
{
	struct pgt_vars v = {0};
	struct vars_watch w = {"tenant", false, ""};
	const char *reason = NULL;
	bool ok = vars_parse_options(opt, &v, &w, &reason);
	if (!ok && !reason && !w.conflict)
		abort(); /* a refusal always says why */
	for (int i = 0; i < v.n; i++)
		if (!vars_valid_name(v.v[i].key))
			abort(); /* only names PostgreSQL accepts may reach a SET */
	vars_free(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_hdr hdr;
	(void)proto_parse_startup_header(data, size, &hdr);
	struct proto_startup st;
	const char *reason = NULL;
	if (proto_parse_startup(data, size, &st, &reason) && (st.code >> 16) == 3) {
		for (int i = 0; i < st.nparams; i++) {
			(void)vars_valid_name(st.params[i].name);
			(void)strlen(st.params[i].value); /* inside the packet, terminated */
		}
		const char *opt = proto_startup_get(&st, "options");
		struct vars_watch w = {"tenant", false, ""};
		struct pgt_vars v = {0};
		const char *tenant_opt = NULL;
		if (opt) {
			options(opt);
			if (vars_parse_options(opt, &v, &w, &reason))
				tenant_opt = vars_get(&v, "tenant");
		}
		const char *enc = proto_startup_get(&st, "client_encoding");
		if (enc)
			(void)vars_encoding_name(enc);
		struct tenant_request req = {proto_startup_get(&st, "tenant"), tenant_opt,
		                             proto_startup_get(&st, "user"), proto_startup_get(&st, "sni"),
		                             proto_startup_get(&st, "jwt_tenant")};
		struct tenant_result r;
		tenant_identify(cfg, &req, &r);
		if (r.status == TENANT_FOUND) {
			char buf[256];
			if (!config_tenant_id_valid(cfg, r.id))
				abort(); /* a tenant found is a valid one */
			(void)tenant_schema_name(cfg, r.id, buf, sizeof(buf));
			(void)tenant_search_path(cfg, r.id, buf, sizeof(buf));
			if (req.user && r.user_len > strlen(req.user))
				abort();
		}
		vars_free(&v);
	}
	char *s = fuzz_strndup(data, size);
	options(s);
	free(s);
	return 0;
}
