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
#include <netinet/in.h>

#include "config.h"
#include "log.h"
#include "util.h"
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
	evdns_base_load_hosts(pgt.dns, NULL);
	return dns_configure(pgt.cfg->dns_nameserver);
}

/* Add "addr[:port], ..." as the name servers; false if one does not parse. */
static bool add_nameservers(struct evdns_base *base, const char *list)
{
	char *copy = xstrdup(list), *save = NULL;
	bool ok = true;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		struct sockaddr_storage ss;
		int len = sizeof(ss);
		if (evutil_parse_sockaddr_port(tok, (struct sockaddr *)&ss, &len) != 0) {
			ok = false;
			break;
		}
		if (((struct sockaddr_in *)&ss)->sin_port == 0)
			((struct sockaddr_in *)&ss)->sin_port = htons(53); /* same offset for in6 */
		if (evdns_base_nameserver_sockaddr_add(base, (struct sockaddr *)&ss, (ev_socklen_t)len, 0) !=
		    0)
			ok = false;
	}
	free(copy);
	return ok;
}

bool dns_configure(const char *nameservers)
{
	static char *current;
	if (current && strcmp(current, nameservers) == 0)
		return true;
	if (current) /* a reload: the old servers go, lookups in flight wait for the new ones */
		evdns_base_clear_nameservers_and_suspend(pgt.dns);
	free(current);
	current = xstrdup(nameservers);
	bool ok = true;
	if (*nameservers) {
		ok = add_nameservers(pgt.dns, nameservers);
		log_debug("DNS: asking %s", nameservers);
	} else {
		int r = evdns_base_resolv_conf_parse(pgt.dns, DNS_OPTIONS_ALL, "/etc/resolv.conf");
		if (r != 0)
			log_debug("no usable /etc/resolv.conf (%d): only numeric hosts and /etc/hosts", r);
	}
	evdns_base_resume(pgt.dns);
	return ok;
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
