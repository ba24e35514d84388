/*
 * Fetching jwt_jwks_url (see jwks.h).  One request at a time, on the event
 * loop: evhttp with a bufferevent_openssl for https (SNI, peer and host
 * name verified), evdns for the name.  The body (at most 1 MB) goes to
 * jwt.c, which keeps the previous keys if it is not a usable key set.
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

static char *url;
static struct evhttp_connection *conn;
static bool in_flight, last_failed;
static uint64_t last_start;
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

static void finish(bool ok)
{
	in_flight = false;
	last_failed = !ok;
	if (ok)
		jwks_fetches++;
	else
		jwks_fetch_failures++;
	if (conn) {
		/* not from inside its own callback */
		struct timeval now = {0, 0};
		event_base_once(pgt.base, -1, EV_TIMEOUT, free_conn_cb, conn, &now);
		conn = NULL;
	}
	wake_waiters();
}

static void fetch_done(struct evhttp_request *req, void *arg)
{
	(void)arg;
	if (!in_flight)
		return;
	int code = req ? evhttp_request_get_response_code(req) : 0;
	if (code != 200) {
		log_error("jwt_jwks_url %s: %s %d; keeping the keys in use", url,
		          code ? "HTTP status" : "fetch failed (connection, TLS or timeout), status", code);
		finish(false);
		return;
	}
	struct evbuffer *body = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(body);
	char err[512];
	const char *data = (const char *)evbuffer_pullup(body, -1);
	if (!data || !jwt_set_jwks(data, len, err, sizeof(err))) {
		log_error("jwt_jwks_url %s: %s; keeping the keys in use", url, data ? err : "empty body");
		finish(false);
		return;
	}
	log_info("jwt_jwks_url %s: key set loaded", url);
	finish(true);
}

static bool numeric(const char *h)
{
	uint8_t a[16];
	return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

static void fetch_start(void)
{
	struct evhttp_uri *u = evhttp_uri_parse(url);
	const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
	const char *host = u ? evhttp_uri_get_host(u) : NULL;
	bool tls = scheme && strcasecmp(scheme, "https") == 0;
	last_start = loop_now();
	/* plain http only on loopback (a local test or sidecar): keys fetched
	 * in clear could be swapped by anyone on the path */
	bool loopback = host && (strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
	                         strcmp(host, "::1") == 0 || strcmp(host, "[::1]") == 0);
	if (!host || !scheme || (!tls && (strcasecmp(scheme, "http") != 0 || !loopback))) {
		log_error("jwt_jwks_url %s: not an https URL (http only on loopback)", url);
		evhttp_uri_free(u);
		jwks_fetch_failures++;
		last_failed = true;
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
	conn =
	    bev ? evhttp_connection_base_bufferevent_new(pgt.base, pgt.dns, bev, host, (unsigned short)port)
	        : NULL;
	struct evhttp_request *req = conn ? evhttp_request_new(fetch_done, NULL) : NULL;
	if (!req) {
		log_error("jwt_jwks_url %s: cannot start a request", url);
		if (conn)
			evhttp_connection_free(conn);
		else if (bev)
			bufferevent_free(bev);
		conn = NULL;
		evhttp_uri_free(u);
		jwks_fetch_failures++;
		last_failed = true;
		return;
	}
	evhttp_connection_set_timeout(conn, JWKS_TIMEOUT_S);
	evhttp_connection_set_max_body_size(conn, JWKS_MAX_BODY);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", host);
	evhttp_add_header(h, "Accept", "application/json");
	evhttp_add_header(h, "Connection", "close");
	const char *path = evhttp_uri_get_path(u), *query = evhttp_uri_get_query(u);
	char *target = xasprintf("%s%s%s", path && *path ? path : "/", query ? "?" : "", query ? query : "");
	in_flight = true;
	if (evhttp_make_request(conn, req, EVHTTP_REQ_GET, target) != 0) {
		/* the request is freed by libevent on failure */
		log_error("jwt_jwks_url %s: cannot send the request", url);
		in_flight = false;
		evhttp_connection_free(conn);
		conn = NULL;
		jwks_fetch_failures++;
		last_failed = true;
	}
	free(target);
	evhttp_uri_free(u);
}

void jwks_configure(const struct pgt_config *cfg)
{
	const char *want = cfg->jwt_jwks_url;
	if (url && strcmp(url, want) == 0)
		return;
	if (in_flight) {
		in_flight = false;
		evhttp_connection_free(conn); /* its request's callback sees in_flight false */
		conn = NULL;
	}
	free(url);
	url = want[0] ? xstrdup(want) : NULL;
	jwt_set_jwks(NULL, 0, NULL, 0);
	wake_waiters(); /* tokens waiting for the old URL are judged by the keys there are */
	if (url)
		fetch_start();
}

void jwks_tick(uint64_t now)
{
	if (!url || in_flight)
		return;
	if (now - last_start >= (last_failed ? JWKS_RETRY : JWKS_REFRESH))
		fetch_start();
}

bool jwks_wait_refresh(struct jwks_waiter *w)
{
	if (!url)
		return false;
	if (!in_flight) {
		if (loop_now() - last_start < JWKS_MIN_INTERVAL)
			return false;
		fetch_start();
		if (!in_flight)
			return false;
	}
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
	if (conn)
		evhttp_connection_free(conn);
	conn = NULL;
	in_flight = false;
	free(url);
	url = NULL;
	SSL_CTX_free(ctx);
	ctx = NULL;
}
