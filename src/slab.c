/*
 * Page allocator for fixed-size objects (see slab.h).  A page is 64 KiB,
 * aligned to its size, so that an object finds its page by masking its
 * address.  Pages with a free object are kept at the front of the list, full
 * ones at the back, so an allocation looks at the first page only.
 */
#include "slab.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define SLAB_PAGE ((size_t)64 * 1024)

struct slab_page {
	struct slab_page *next, *prev;
	void *free;    /* freed objects, linked through their first word */
	size_t carved; /* bytes from the first object on handed out at least once */
	int used;
};

#define FIRST_OBJ ((sizeof(struct slab_page) + 15) & ~(size_t)15)

static void unlink_page(struct slab *sl, struct slab_page *p)
{
	if (p->prev)
		p->prev->next = p->next;
	else
		sl->pages = p->next;
	if (p->next)
		p->next->prev = p->prev;
	p->next = p->prev = NULL;
}

static void push_front(struct slab *sl, struct slab_page *p)
{
	p->prev = NULL;
	p->next = sl->pages;
	if (sl->pages)
		sl->pages->prev = p;
	sl->pages = p;
}

static void push_back(struct slab *sl, struct slab_page *p)
{
	struct slab_page *last = sl->pages;
	if (!last) {
		push_front(sl, p);
		return;
	}
	while (last->next)
		last = last->next;
	last->next = p;
	p->prev = last;
	p->next = NULL;
}

static bool page_full(const struct slab *sl, const struct slab_page *p)
{
	return !p->free && FIRST_OBJ + p->carved + sl->objsize > SLAB_PAGE;
}

static struct slab_page *page_new(void)
{
	/* twice the size, then trim to an aligned page */
	uint8_t *m = mmap(NULL, 2 * SLAB_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	uint8_t *p = (uint8_t *)(((uintptr_t)m + SLAB_PAGE - 1) & ~(uintptr_t)(SLAB_PAGE - 1));
	if (p > m)
		munmap(m, (size_t)(p - m));
	if (p + SLAB_PAGE < m + 2 * SLAB_PAGE)
		munmap(p + SLAB_PAGE, (size_t)(m + 2 * SLAB_PAGE - (p + SLAB_PAGE)));
	struct slab_page *pg = (struct slab_page *)p;
	memset(pg, 0, sizeof(*pg));
	return pg;
}

void *slab_alloc(struct slab *sl)
{
	struct slab_page *p = sl->pages;
	if (!p || page_full(sl, p)) {
		p = page_new();
		if (!p)
			return NULL;
		push_front(sl, p);
		sl->npages++;
	}
	void *obj;
	if (p->free) {
		obj = p->free;
		memcpy(&p->free, obj, sizeof(void *));
	} else {
		obj = (uint8_t *)p + FIRST_OBJ + p->carved;
		p->carved += sl->objsize;
	}
	p->used++;
	sl->nused++;
	if (page_full(sl, p)) {
		unlink_page(sl, p);
		push_back(sl, p);
	}
	memset(obj, 0, sl->objsize);
	return obj;
}

void slab_free(struct slab *sl, void *obj)
{
	if (!obj)
		return;
	struct slab_page *p = (struct slab_page *)((uintptr_t)obj & ~(uintptr_t)(SLAB_PAGE - 1));
	bool was_full = page_full(sl, p);
	memcpy(obj, &p->free, sizeof(void *));
	p->free = obj;
	p->used--;
	sl->nused--;
	if (p->used == 0 && sl->npages > 1) {
		/* empty: back to the system (one page stays for the next burst) */
		unlink_page(sl, p);
		munmap(p, SLAB_PAGE);
		sl->npages--;
		return;
	}
	if (was_full) {
		unlink_page(sl, p);
		push_front(sl, p);
	}
}
