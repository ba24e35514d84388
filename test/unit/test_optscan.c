/*
 * Option scan (PgBouncer's optscan): every key of the config table is
 * documented in man/pgtenant.ini.5 and present in etc/pgtenant.ini, and
 * neither file names a key the table does not have.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "tap.h"

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc((size_t)n + 1);
	size_t r = fread(buf, 1, (size_t)n, f);
	buf[r] = '\0';
	fclose(f);
	return buf;
}

static bool known_key(const char *name, size_t len)
{
	for (int i = 0; i < config_key_count(); i++) {
		struct pgt_config_row r;
		config_key_row(NULL, -1 - i, &r);
		if (strlen(r.name) == len && strncmp(r.name, name, len) == 0)
			return true;
	}
	return false;
}

int main(void)
{
	const char *root = getenv("PGT_SOURCE_ROOT");
	char path[4096];
	snprintf(path, sizeof(path), "%s/man/pgtenant.ini.5", root ? root : ".");
	char *man = slurp(path);
	snprintf(path, sizeof(path), "%s/etc/pgtenant.ini", root ? root : ".");
	char *ini = slurp(path);
	tap_ok(man && ini, "man page and example config found");
	if (!man || !ini)
		return tap_done();
	for (int i = 0; i < config_key_count(); i++) {
		struct pgt_config_row r;
		config_key_row(NULL, -1 - i, &r);
		char needle[128];
		snprintf(needle, sizeof(needle), "\n.B %s\n", r.name);
		tap_ok(strstr(man, needle) != NULL, "%s is documented in pgtenant.ini.5", r.name);
		snprintf(needle, sizeof(needle), "\n%s =", r.name);
		tap_ok(strstr(ini, needle) != NULL, "%s is in etc/pgtenant.ini", r.name);
	}
	/* the other direction: [pgtenant] keys in the example that the table lacks */
	const char *sec = strstr(ini, "\n[pgtenant]");
	const char *end = sec ? strstr(sec + 1, "\n[") : NULL;
	int unknown = 0;
	for (const char *p = sec; p && p < end; p = strchr(p + 1, '\n')) {
		const char *line = p + 1;
		const char *first = line + strspn(line, " \t"); /* a comment may continue indented */
		if (*first == ';' || *line == '[' || *line == '\n')
			continue;
		const char *eq = strchr(line, '=');
		const char *eol = strchr(line, '\n');
		if (eq && eol && eq > eol)
			eq = NULL;
		size_t len = 0;
		while (line + len < eq && line[len] != ' ')
			len++;
		if (eq && !known_key(line, len)) {
			unknown++;
			tap_ok(false, "etc/pgtenant.ini has unknown key %.*s", (int)len, line);
		}
	}
	tap_ok(unknown == 0, "no unknown keys in etc/pgtenant.ini");
	free(man);
	free(ini);
	return tap_done();
}
