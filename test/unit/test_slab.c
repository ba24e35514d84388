/*
 * The page allocator for logins in progress: objects are zeroed, distinct
 * and reused, and a page that empties goes back to the system (the point:
 * a burst of logins leaves no memory behind).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "slab.h"
#include "tap.h"

struct obj {
	char data[200];
};

int main(void)
{
	struct slab sl = SLAB_INIT(struct obj);
	enum { N = 5000 };
	struct obj **v = calloc(N, sizeof(*v));
	bool zeroed = true, distinct = true;
	for (int i = 0; i < N; i++) {
		v[i] = slab_alloc(&sl);
		for (size_t j = 0; j < sizeof(v[i]->data); j++)
			zeroed &= v[i]->data[j] == 0;
		memset(v[i]->data, 0xab, sizeof(v[i]->data));
		if (i && (uintptr_t)v[i] - (uintptr_t)v[i - 1] < sizeof(struct obj) &&
		    (uintptr_t)v[i - 1] - (uintptr_t)v[i] < sizeof(struct obj))
			distinct = false;
	}
	tap_ok(zeroed, "objects come zeroed");
	tap_ok(distinct, "objects do not overlap");
	tap_ok(sl.nused == N && sl.npages >= N * 208 / 65536, "%d objects on %d pages", sl.nused, sl.npages);
	int peak = sl.npages;
	for (int i = 0; i < N; i++)
		slab_free(&sl, v[i]);
	tap_ok(sl.nused == 0 && sl.npages == 1, "all freed: one page kept of %d", peak);
	struct obj *a = slab_alloc(&sl);
	tap_ok(a && a->data[0] == 0, "reused memory is zeroed again");
	/* free in the middle of full pages: the page with room is used next */
	for (int i = 0; i < N; i++)
		v[i] = slab_alloc(&sl);
	int pages = sl.npages;
	slab_free(&sl, v[10]);
	struct obj *b = slab_alloc(&sl);
	tap_ok(b == v[10] && sl.npages == pages, "a freed slot of a full page is taken before a new page");
	free(v);
	return tap_done();
}
