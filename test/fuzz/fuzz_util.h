/*
 * Helpers shared by the fuzz targets: NUL-terminated copies of the input,
 * and splitting one input into several fields at a separator, so that a
 * target taking several strings gets them all from one corpus file.
 */
#ifndef PGT_FUZZ_UTIL_H
#define PGT_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A malloc'd NUL-terminated copy of n bytes (the fuzzer's input has none). */
static inline char *fuzz_strndup(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);
	if (!s)
		abort();
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

/* The next field of *p (up to sep or the end), advancing past it. */
static inline size_t fuzz_field(const uint8_t **p, const uint8_t *end, uint8_t sep, const uint8_t **field)
{
	const uint8_t *q = *p < end ? memchr(*p, sep, (size_t)(end - *p)) : NULL;
	size_t n = q ? (size_t)(q - *p) : (size_t)(end - *p);
	*field = *p;
	*p = q ? q + 1 : end;
	return n;
}

/* config_load() of text through a scratch file (errors go to /dev/null);
 * NULL when it does not load. */
static inline struct pgt_config *fuzz_config_load(const char *text, size_t n)
{
	static char path[64];
	static FILE *devnull;
	if (!path[0]) {
		const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
		snprintf(path, sizeof(path), "%s/pgt-fuzz-%d.ini", dir, (int)getpid());
		devnull = fopen("/dev/null", "w");
	}
	FILE *f = fopen(path, "w");
	if (!f)
		abort();
	fwrite(text, 1, n, f);
	fclose(f);
	int nerr = 0;
	struct pgt_config *cfg = config_load(path, devnull, &nerr);
	unlink(path);
	return cfg;
}

#endif
