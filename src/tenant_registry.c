/*
 * Per-tenant run-time state (see tenant_registry.h).  Entries are kept for
 * the life of the process: a tenant that connected once is likely to again,
 * and SHOW TENANTS lists it.
 */
#include "tenant_registry.h"

#include <string.h>

#include "util.h"

struct list pgt_tenant_states = {&pgt_tenant_states, &pgt_tenant_states};

struct pgt_tenant_state *tenant_state_find(const char *id)
{
	struct list *i;
	list_for_each (i, &pgt_tenant_states) {
		struct pgt_tenant_state *t = container_of(i, struct pgt_tenant_state, node);
		if (strcmp(t->id, id) == 0)
			return t;
	}
	return NULL;
}

struct pgt_tenant_state *tenant_state_get(const char *id)
{
	struct pgt_tenant_state *t = tenant_state_find(id);
	if (t)
		return t;
	t = xcalloc(1, sizeof(*t));
	t->id = xstrdup(id);
	list_append(&pgt_tenant_states, &t->node);
	return t;
}
