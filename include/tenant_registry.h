/*
 * Run-time state per tenant: how many clients it has (for its
 * max_client_conn quota).  Configured overrides live in the config
 * ([tenants]); this holds what changes as clients come and go.
 */
#ifndef PGT_TENANT_REGISTRY_H
#define PGT_TENANT_REGISTRY_H

#include "list.h"

struct pgt_tenant_state {
	struct list node;
	char *id;
	int nclients;
};

extern struct list pgt_tenant_states;

struct pgt_tenant_state *tenant_state_get(const char *id);
struct pgt_tenant_state *tenant_state_find(const char *id);

#endif
