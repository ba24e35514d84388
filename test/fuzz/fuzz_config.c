/*
 * fuzz_config: the ini loader (inih, the [pgtenant] key table, [databases],
 * [users], [tenants], every value parser and the whole-config checks)
 * through config_load of the input as a file, and the [databases]
 * connection-string parser (connstr_parse) through the same loader with
 * the input as one entry's value, so that it starts from the entry
 * defaults config.c gives it.  A config that loads is also read through
 * the key table as SHOW CONFIG does, and freed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fuzz_util.h"

static void load(const char *text, size_t n)
{
	struct pgt_config *cfg = fuzz_config_load(text, n);
	if (!cfg)
		return;
	for (int i = 0; i < config_key_count(); i++) {
		struct pgt_config_row row;
		config_key_row(cfg, i, &row);
	}
	for (int i = 0; i < cfg->ndbs; i++) {
		struct pgt_database *copy = config_db_copy(&cfg->dbs[i]);
		config_db_free(copy);
	}
	config_free(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	load((const char *)data, size);

	/* the input as a connection string: one line, after "name =" */
	static const char head[] = "[pgtenant]\nauth_type = trust\n[databases]\nfuzzdb = ";
	size_t hl = sizeof(head) - 1;
	char *text = malloc(hl + size + 2);
	if (!text)
		abort();
	memcpy(text, head, hl);
	for (size_t i = 0; i < size; i++)
		text[hl + i] = data[i] == '\n' || data[i] == '\r' || data[i] == '\0' ? ' ' : (char)data[i];
	text[hl + size] = '\n';
	load(text, hl + size + 1);
	free(text);
	return 0;
}
