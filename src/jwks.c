/*
 * Fetching jwt_jwks_url (see jwks.h).  Each URL of the list is a source
 * with one request at a time, on the event loop: evhttp with a
 * bufferevent_openssl for https (SNI, peer and host name verified), evdns
 * for the name.  The body (at most 1 MB) goes to jwt.c, which keeps the
 * source's previous keys if it is not a usable key set.
 *
 * A source is bound to the issuer whose URL it lies under (the longest of
 * jwt_issuer and the [tenants] jwt_issuer values that is a prefix of it, up
 * to a '/'): Cognito's, Auth0's, Okta's and Keycloak's key sets all live
 * under their issuer.  Its keys then sign for that issuer only, so that
 * whoever controls one tenant's user pool (and so its keys) cannot mint a
 * token that claims another pool's issuer.  A URL under no configured
 * issuer is unbound.
 */
#include "jwks.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "jwt.h"
#include "log.h"
#include "loop.h"

#define JWKS_MAX_BODY (1u << 20)
#define JWKS_TIMEOUT_S 10
#define JWKS_RETRY (30 * USEC_PER_SEC) /* after a failed fetch */

uint64_t jwks_fetches, jwks_fetch_failures;

struct source {
	char *url;
	char *issuer; /* its keys sign for this issuer only; NULL = any */
	struct evhttp_connection *conn;
	bool in_flight, last_failed;
	uint64_t last_start;
};

static struct source src[JWKS_MAX_URLS];
static int nsrc;
static struct jwks_waiter *waiters;
static SSL_CTX *ctx;

static void free_conn_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	evhttp_connection_free(arg);
}

static void wake_waiters(void)
{
	/* none of them is on the list any more before any is called: a
	 * callback that closes another waiting client must not cut the walk */
	struct jwks_waiter *w = waiters;
	waiters = NULL;
	for (struct jwks_waiter *i = w; i; i = i->next)
		i->waiting = false;
	while (w) {
		struct jwks_waiter *next = w->next;
		w->next = NULL;
		w->done(w);
		w = next;
	}
}

static bool any_in_flight(void)
{
	for (int i = 0; i < nsrc; i++)
		if (src[i].in_flight)
			return true;
	return false;
}

static void finish(struct source *so, bool ok)
{
	so->in_flight = false;
	so->last_failed = !ok;
	if (ok)
		jwks_fetches++;
	else
		jwks_fetch_failures++;
	if (so->conn) {
		/* not from inside its own callback */
		struct timeval now = {0, 0};
		event_base_once(pgt.base, -1, EV_TIMEOUT, free_conn_cb, so->conn, &now);
		so->conn = NULL;
	}
	if (!any_in_flight())
		wake_waiters();
}

static void fetch_done(struct evhttp_request *req, void *arg)
{
	struct source *so = arg;
	if (!so->in_flight)
		return;
	int code = req ? evhttp_request_get_response_code(req) : 0;
	if (code != 200) {
		log_error("jwt_jwks_url %s: %s %d; keeping the keys in use", so->url,
		          code ? "HTTP status" : "fetch failed (connection, TLS or timeout), status", code);
		finish(so, false);
		return;
	}
	struct evbuffer *body = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(body);
	char err[512];
	const char *data = (const char *)evbuffer_pullup(body, -1);
	if (!data || !jwt_set_jwks((int)(so - src), so->issuer, data, len, err, sizeof(err))) {
		log_error("jwt_jwks_url %s: %s; keeping the keys in use", so->url, data ? err : "empty body");
		finish(so, false);
		return;
	}
	log_info("jwt_jwks_url %s: key set loaded%s%s", so->url, so->issuer ? " for issuer " : "",
	         so->issuer ? so->issuer : "");
	finish(so, true);
}

static bool numeric(const char *h)
{
	uint8_t a[16];
	return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

static void fetch_start(struct source *so)
{
	const char *url = so->url;
	struct evhttp_uri *u = evhttp_uri_parse(url);
	const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
	const char *host = u ? evhttp_uri_get_host(u) : NULL;
	bool tls = scheme && strcasecmp(scheme, "https") == 0;
	so->last_start = loop_now();
	/* plain http only on loopback (a local test or sidecar): keys fetched
	 * in clear could be swapped by anyone on the path */
	bool loopback = host && (strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
	                         strcmp(host, "::1") == 0 || strcmp(host, "[::1]") == 0);
	if (!host || !scheme || (!tls && (strcasecmp(scheme, "http") != 0 || !loopback))) {
		log_error("jwt_jwks_url %s: not an https URL (http only on loopback)", url);
		evhttp_uri_free(u);
		jwks_fetch_failures++;
		so->last_failed = true;
		return;
	}
	int port = evhttp_uri_get_port(u);
	if (port < 0)
		port = tls ? 443 : 80;
	struct bufferevent *bev;
	if (tls) {
		if (!ctx) {
			ctx = SSL_CTX_new(TLS_client_method());
			if (ctx) {
				SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
				SSL_CTX_set_default_verify_paths(ctx);
				SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
			}
		}
		SSL *ssl = ctx ? SSL_new(ctx) : NULL;
		if (ssl) {
			if (numeric(host)) {
				X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
			} else {
				SSL_set_tlsext_host_name(ssl, host);
				SSL_set1_host(ssl, host);
			}
		}
		bev = ssl ? bufferevent_openssl_socket_new(pgt.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
		                                           BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)
		          : NULL;
		if (bev)
			bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
		else
			SSL_free(ssl);
	} else {
		bev = bufferevent_socket_new(pgt.base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	}
	so->conn =
	    bev ? evhttp_connection_base_bufferevent_new(pgt.base, pgt.dns, bev, host, (unsigned short)port)
	        : NULL;
	struct evhttp_request *req = so->conn ? evhttp_request_new(fetch_done, so) : NULL;
	if (!req) {
		log_error("jwt_jwks_url %s: cannot start a request", url);
		if (so->conn)
			evhttp_connection_free(so->conn);
		else if (bev)
			bufferevent_free(bev);
		so->conn = NULL;
		evhttp_uri_free(u);
		jwks_fetch_failures++;
		so->last_failed = true;
		return;
	}
	evhttp_connection_set_timeout(so->conn, JWKS_TIMEOUT_S);
	evhttp_connection_set_max_body_size(so->conn, JWKS_MAX_BODY);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", host);
	evhttp_add_header(h, "Accept", "application/json");
	evhttp_add_header(h, "Connection", "close");
	const char *path = evhttp_uri_get_path(u), *query = evhttp_uri_get_query(u);
	char *target = xasprintf("%s%s%s", path && *path ? path : "/", query ? "?" : "", query ? query : "");
	so->in_flight = true;
	if (evhttp_make_request(so->conn, req, EVHTTP_REQ_GET, target) != 0) {
		/* the request is freed by libevent on failure */
		log_error("jwt_jwks_url %s: cannot send the request", url);
		so->in_flight = false;
		evhttp_connection_free(so->conn);
		so->conn = NULL;
		jwks_fetch_failures++;
		so->last_failed = true;
	}
	free(target);
	evhttp_uri_free(u);
}

/* The issuer url lies under ("https://x/pool" for "https://x/pool/.well-known/jwks.json"). */
static char *bound_issuer(const struct pgt_config *cfg, const char *url)
{
	const char *best = NULL;
	size_t bestlen = 0;
	for (int t = -1; t < cfg->ntenants; t++) {
		const char *list = t < 0 ? cfg->jwt_issuer : cfg->tenants[t].jwt_issuer;
		if (!list)
			continue;
		/* jwt_issuer is a comma-separated list; a [tenants] value is one */
		const char *p = list;
		while (*p) {
			while (*p == ' ' || *p == ',')
				p++;
			size_t n = strcspn(p, t < 0 ? "," : "");
			while (n > 0 && p[n - 1] == ' ')
				n--;
			bool under = n > 0 && strncmp(url, p, n) == 0 && (p[n - 1] == '/' || url[n] == '/');
			if (under && n > bestlen) {
				best = p;
				bestlen = n;
			}
			p += n;
			while (*p && *p != ',')
				p++;
		}
	}
	return best ? xstrndup(best, bestlen) : NULL;
}

static void source_stop(struct source *so)
{
	if (so->in_flight) {
		so->in_flight = false;
		evhttp_connection_free(so->conn); /* its request's callback sees in_flight false */
		so->conn = NULL;
	}
	free(so->url);
	free(so->issuer);
	memset(so, 0, sizeof(*so));
}

void jwks_configure(const struct pgt_config *cfg)
{
	/* the list as it is now, bindings included: unchanged = nothing to do */
	struct source want[JWKS_MAX_URLS];
	int n = 0;
	char *list = xstrdup(cfg->jwt_jwks_url);
	for (char *save = NULL, *tok = strtok_r(list, ", \t", &save); tok;
	     tok = strtok_r(NULL, ", \t", &save)) {
		if (n == JWKS_MAX_URLS) {
			log_error("jwt_jwks_url: more than %d URLs; the rest are ignored", JWKS_MAX_URLS);
			break;
		}
		memset(&want[n], 0, sizeof(want[n]));
		want[n].url = xstrdup(tok);
		want[n].issuer = bound_issuer(cfg, tok);
		n++;
	}
	free(list);
	bool same = n == nsrc;
	for (int i = 0; same && i < n; i++)
		same = strcmp(want[i].url, src[i].url) == 0 &&
		       (want[i].issuer ? src[i].issuer && strcmp(want[i].issuer, src[i].issuer) == 0
		                       : !src[i].issuer);
	if (same) {
		for (int i = 0; i < n; i++) {
			free(want[i].url);
			free(want[i].issuer);
		}
		return;
	}
	for (int i = 0; i < nsrc; i++)
		source_stop(&src[i]);
	jwt_set_jwks(-1, NULL, NULL, 0, NULL, 0);
	wake_waiters(); /* tokens waiting for the old URLs are judged by the keys there are */
	nsrc = n;
	for (int i = 0; i < n; i++) {
		src[i] = want[i];
		if (n > 1 && !src[i].issuer)
			log_warning(
			    "jwt_jwks_url %s lies under no jwt_issuer: its keys sign for every issuer",
			    src[i].url);
		fetch_start(&src[i]);
	}
}

void jwks_tick(uint64_t now)
{
	for (int i = 0; i < nsrc; i++) {
		struct source *so = &src[i];
		if (!so->in_flight && now - so->last_start >= (so->last_failed ? JWKS_RETRY : JWKS_REFRESH))
			fetch_start(so);
	}
}

bool jwks_wait_refresh(struct jwks_waiter *w)
{
	for (int i = 0; i < nsrc; i++) {
		struct source *so = &src[i];
		if (!so->in_flight && loop_now() - so->last_start >= JWKS_MIN_INTERVAL)
			fetch_start(so);
	}
	if (!any_in_flight())
		return false;
	w->next = waiters;
	w->waiting = true;
	waiters = w;
	return true;
}

void jwks_unwait(struct jwks_waiter *w)
{
	if (!w->waiting)
		return;
	for (struct jwks_waiter **p = &waiters; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			break;
		}
	w->waiting = false;
	w->next = NULL;
}

void jwks_shutdown(void)
{
	for (int i = 0; i < nsrc; i++)
		source_stop(&src[i]);
	nsrc = 0;
	SSL_CTX_free(ctx);
	ctx = NULL;
}
