/* Keeping LISTEN/NOTIFY inside a tenant: which notifications a client may
 * see, by the pid of the backend that sent them (notify.c). */
#ifndef PGT_NOTIFY_H
#define PGT_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

struct pgt_server;

/* s has reported its backend pid (BackendKeyData): list it. */
void notify_track(struct pgt_server *s);
/* s is closing: forget it (nothing if it was never listed). */
void notify_untrack(struct pgt_server *s);
/* May s's client see a notification sent by backend pid?  False only when
 * pid is one of pgtenant's connections in a dedicated pool of another tenant. */
bool notify_allowed(const struct pgt_server *s, uint32_t pid);

#endif
