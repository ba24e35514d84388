/*
 * evdns wrapper.  The base is created without failing when the machine has
 * no resolv.conf (containers): numeric addresses and /etc/hosts still work.
 */
#include "dns.h"

#include <event2/dns.h>
#include <event2/util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "loop.h"

struct dns_req {
	dns_cb cb;
	void *arg;
	bool done_sync;
};

bool dns_init(void)
{
	pgt.dns = evdns_base_new(pgt.base, 0);
	if (!pgt.dns)
		return false;
	int r = evdns_base_resolv_conf_parse(pgt.dns, DNS_OPTIONS_ALL, "/etc/resolv.conf");
	if (r != 0)
		log_debug("no usable /etc/resolv.conf (%d): only numeric hosts and /etc/hosts", r);
	evdns_base_load_hosts(pgt.dns, NULL);
	return true;
}

void dns_shutdown(void)
{
	if (pgt.dns)
		evdns_base_free(pgt.dns, 0);
	pgt.dns = NULL;
}

static void gai_cb(int err, struct evutil_addrinfo *res, void *arg)
{
	struct dns_req *r = arg;
	if (err == EVUTIL_EAI_CANCEL) {
		free(r);
		return;
	}
	if (err || !res) {
		r->cb(NULL, evutil_gai_strerror(err), r->arg);
	} else {
		struct dns_result out;
		out.n = 0;
		for (struct evutil_addrinfo *ai = res; ai && out.n < DNS_MAX_ADDRS; ai = ai->ai_next) {
			if (ai->ai_addrlen > sizeof(out.addr[0]))
				continue;
			memcpy(&out.addr[out.n], ai->ai_addr, ai->ai_addrlen);
			out.len[out.n] = (socklen_t)ai->ai_addrlen;
			out.n++;
		}
		r->cb(&out, out.n ? NULL : "no usable address", r->arg);
	}
	if (res)
		evutil_freeaddrinfo(res);
	r->done_sync = true;
	free(r);
}

struct evdns_getaddrinfo_request *dns_resolve(const char *host, int port, dns_cb cb, void *arg)
{
	struct evutil_addrinfo hints;
	char portstr[16];
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
	snprintf(portstr, sizeof(portstr), "%d", port);
	struct dns_req *r = xcalloc(1, sizeof(*r));
	r->cb = cb;
	r->arg = arg;
	/* may call gai_cb synchronously (numeric host, hosts file) and return NULL */
	return evdns_getaddrinfo(pgt.dns, host, portstr, &hints, gai_cb, r);
}

void dns_cancel(struct evdns_getaddrinfo_request *req)
{
	evdns_getaddrinfo_cancel(req);
}
