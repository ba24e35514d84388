/*
 * Intrusive doubly-linked lists.  A connection's state is the list it is on
 * (STYLE.md): moving between states is list_del + list_append, O(1), with no
 * allocation.
 */
#ifndef PGT_LIST_H
#define PGT_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list {
	struct list *next, *prev;
};

#define container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

static inline void list_init(struct list *l)
{
	l->next = l->prev = l;
}
static inline bool list_empty(const struct list *l)
{
	return l->next == l;
}

/* Append at the tail, so that the head is the oldest item (FIFO). */
static inline void list_append(struct list *head, struct list *item)
{
	item->prev = head->prev;
	item->next = head;
	head->prev->next = item;
	head->prev = item;
}

static inline void list_prepend(struct list *head, struct list *item)
{
	item->next = head->next;
	item->prev = head;
	head->next->prev = item;
	head->next = item;
}

static inline void list_del(struct list *item)
{
	item->prev->next = item->next;
	item->next->prev = item->prev;
	list_init(item);
}

static inline struct list *list_first(const struct list *head)
{
	return list_empty(head) ? NULL : head->next;
}

static inline struct list *list_last(const struct list *head)
{
	return list_empty(head) ? NULL : head->prev;
}

static inline int list_count(const struct list *head)
{
	int n = 0;
	for (const struct list *i = head->next; i != head; i = i->next)
		n++;
	return n;
}

#define list_for_each(item, head) for ((item) = (head)->next; (item) != (head); (item) = (item)->next)
#define list_for_each_safe(item, tmp, head)                                                                  \
	for ((item) = (head)->next, (tmp) = (item)->next; (item) != (head);                                  \
	     (item) = (tmp), (tmp) = (item)->next)

#endif
