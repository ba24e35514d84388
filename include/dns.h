/*
 * Name resolution for backend hosts through libevent's evdns, so that a slow
 * DNS server never blocks the event loop.
 */
#ifndef PGT_DNS_H
#define PGT_DNS_H

#include <stdbool.h>
#include <sys/socket.h>

#include "util.h"

struct evdns_getaddrinfo_request;

#define DNS_MAX_ADDRS 4

/* Resolved addresses in resolver order (IPv4 and IPv6), to be tried in turn. */
struct dns_result {
	int n;
	struct sockaddr_storage addr[DNS_MAX_ADDRS];
	socklen_t len[DNS_MAX_ADDRS];
};

typedef void (*dns_cb)(const struct dns_result *res, const char *error, void *arg);

bool dns_init(void) _MUSTCHECK;
void dns_shutdown(void);
/* Ask these name servers ("addr[:port], ...") instead of resolv.conf's
 * (empty: resolv.conf); at start and on reload. */
bool dns_configure(const char *nameservers);
/* Resolve host:port; cb may run before dns_resolve returns.  Returns a
 * handle for dns_cancel, or NULL if cb already ran. */
struct evdns_getaddrinfo_request *dns_resolve(const char *host, int port, dns_cb cb, void *arg);
void dns_cancel(struct evdns_getaddrinfo_request *req);

#endif
