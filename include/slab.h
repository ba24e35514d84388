/*
 * Fixed-size objects carved from 64 KiB pages of their own (mmap), for
 * objects that are many at once and short-lived, such as the state of a
 * login in progress.  A page that becomes empty goes back to the system, so
 * a burst of thousands of logins leaves no memory behind between the
 * long-lived client structs (malloc would keep those holes).
 */
#ifndef PGT_SLAB_H
#define PGT_SLAB_H

#include <stddef.h>

struct slab_page;

struct slab {
	size_t objsize;          /* rounded up to 16 bytes */
	struct slab_page *pages; /* pages with at least one free object first */
	int npages, nused;       /* for SHOW MEM and tests */
};

#define SLAB_INIT(type)                                                                                      \
	{                                                                                                    \
		(sizeof(type) + 15) & ~(size_t)15, NULL, 0, 0                                                \
	}

/* A zeroed object, or NULL when out of memory. */
void *slab_alloc(struct slab *sl);
void slab_free(struct slab *sl, void *obj);

#endif
