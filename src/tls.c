/*
 * TLS through non-blocking OpenSSL (see tls.h for the model).
 *
 * OpenSSL reads the socket itself (SSL_set_fd) with read-ahead, so one
 * recv() can bring several records; bytes it holds are invisible to epoll,
 * which is why sbuf.c asks tls_pending() before it waits for the socket
 * again.  Writes use partial-write mode: a write that blocks must be
 * offered the same bytes again, which sbuf.c guarantees by keeping them at
 * the head of the connection's outq.
 *
 * No session cache and no tickets: PostgreSQL (15+) resumes no session
 * either, so resumption towards servers could not cut their connect cost,
 * and a client resuming would skip the client-certificate check of the
 * context in force.  OpenSSL's buffers are released while a connection is
 * idle (SSL_MODE_RELEASE_BUFFERS): an idle TLS client then holds only its
 * session state.
 */
#include "tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "log.h"
#include "loop.h"
#include "proto.h"
#include "sbuf.h"

uint64_t tls_handshakes[2], tls_handshake_failures[2];

static SSL_CTX *accept_ctx;  /* pgtenant as the TLS server, for clients */
static SSL_CTX *connect_ctx; /* pgtenant as the TLS client, towards PostgreSQL */

/* ALPN protocol id of PostgreSQL 17 (wire format: length-prefixed) */
static const unsigned char alpn_pg[] = "\x0apostgresql";

static const char *ssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	return r ? r : "TLS error";
}

/* PgBouncer's protocol names: a list of tlsv1.0..tlsv1.3, all, secure,
 * default, legacy; "!" in front removes one. */
static bool parse_protocols(const char *spec, int *minv, int *maxv, uint64_t *noopts, char *err,
                            size_t errlen)
{
	static const struct {
		const char *name;
		unsigned bits;
	} names[] = {{"tlsv1.0", 1}, {"tlsv1.1", 2}, {"tlsv1.2", 4}, {"tlsv1.3", 8},
	             {"all", 15},    {"legacy", 15}, {"secure", 12}, {"default", 12}};
	static const int vers[] = {TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION};
	static const uint64_t noop[] = {SSL_OP_NO_TLSv1, SSL_OP_NO_TLSv1_1, SSL_OP_NO_TLSv1_2,
	                                SSL_OP_NO_TLSv1_3};
	unsigned mask = 0;
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", spec[0] ? spec : "secure");
	char *save = NULL;
	for (char *w = strtok_r(buf, ", :\t", &save); w; w = strtok_r(NULL, ", :\t", &save)) {
		bool neg = *w == '!';
		if (neg)
			w++;
		unsigned bits = 0;
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strcasecmp(w, names[i].name) == 0)
				bits = names[i].bits;
		if (!bits) {
			snprintf(
			    err, errlen,
			    "unknown TLS protocol \"%s\" (tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, all, secure)",
			    w);
			return false;
		}
		mask = neg ? mask & ~bits : mask | bits;
	}
	if (!mask) {
		snprintf(err, errlen, "no TLS protocol left in \"%s\"", spec);
		return false;
	}
	int lo = -1, hi = -1;
	for (int i = 0; i < 4; i++)
		if (mask & (1u << i)) {
			if (lo < 0)
				lo = i;
			hi = i;
		}
	*minv = vers[lo];
	*maxv = vers[hi];
	*noopts = 0;
	for (int i = lo; i <= hi; i++)
		if (!(mask & (1u << i)))
			*noopts |= noop[i];
	return true;
}

/* PgBouncer's cipher names, else an OpenSSL cipher list (TLS 1.2 and older;
 * TLS 1.3 suites are OpenSSL's defaults, all of them AEAD). */
static const char *cipher_list(const char *spec)
{
	if (!spec[0] || strcasecmp(spec, "default") == 0 || strcasecmp(spec, "secure") == 0)
		return "HIGH:!aNULL:!eNULL:!MD5:!3DES:!CAMELLIA:!ARIA:!PSK:!SRP";
	if (strcasecmp(spec, "fast") == 0)
		return "ECDHE+AESGCM:ECDHE+CHACHA20";
	if (strcasecmp(spec, "normal") == 0)
		return "HIGH:MEDIUM:!aNULL:!eNULL:!MD5";
	if (strcasecmp(spec, "all") == 0 || strcasecmp(spec, "legacy") == 0 ||
	    strcasecmp(spec, "compat") == 0)
		return "ALL:!aNULL:!eNULL";
	return spec;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
	(void)ssl;
	(void)arg;
	unsigned char *sel = NULL;
	if (SSL_select_next_proto(&sel, outlen, alpn_pg, sizeof(alpn_pg) - 1, in, inlen) ==
	    OPENSSL_NPN_NEGOTIATED) {
		*out = sel;
		return SSL_TLSEXT_ERR_OK;
	}
	/* a client that names protocols but not PostgreSQL's is not one of ours */
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static bool common_setup(SSL_CTX *ctx, const char *protocols, const char *ciphers, const char *what,
                         char *err, size_t errlen)
{
	int minv, maxv;
	uint64_t noopts;
	if (!parse_protocols(protocols, &minv, &maxv, &noopts, err, errlen))
		return false;
	if (!SSL_CTX_set_min_proto_version(ctx, minv) || !SSL_CTX_set_max_proto_version(ctx, maxv)) {
		snprintf(err, errlen, "%s: cannot set protocol versions: %s", what, ssl_reason());
		return false;
	}
	SSL_CTX_set_options(ctx, noopts | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
	                             SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                          SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (!SSL_CTX_set_cipher_list(ctx, cipher_list(ciphers))) {
		snprintf(err, errlen, "%s: no usable cipher in \"%s\"", what, ciphers);
		return false;
	}
	return true;
}

static bool load_cert(SSL_CTX *ctx, const char *cert, const char *key, const char *what, char *err,
                      size_t errlen)
{
	SSL_CTX_set_default_passwd_cb(ctx, util_no_passphrase);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(err, errlen, "%s: cannot load certificate %s: %s", what, cert, ssl_reason());
		return false;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
		snprintf(err, errlen, "%s: cannot load key %s: %s", what, key, ssl_reason());
		return false;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(err, errlen, "%s: key %s does not match certificate %s", what, key, cert);
		return false;
	}
	return true;
}

static bool load_ca(SSL_CTX *ctx, const char *file, const char *what, char *err, size_t errlen)
{
	if (SSL_CTX_load_verify_locations(ctx, file, NULL) == 1)
		return true;
	snprintf(err, errlen, "%s: cannot load CA file %s: %s", what, file, ssl_reason());
	return false;
}

static SSL_CTX *build_accept(const struct pgt_config *cfg, char *err, size_t errlen)
{
	const char *what = "client TLS";
	if (!cfg->client_tls_cert_file[0] || !cfg->client_tls_key_file[0]) {
		snprintf(err, errlen,
		         "client_tls_sslmode = %s needs client_tls_cert_file and client_tls_key_file",
		         config_sslmode_name(cfg->client_tls_sslmode));
		return NULL;
	}
	if (cfg->client_tls_sslmode >= PGT_SSL_VERIFY_CA && !cfg->client_tls_ca_file[0]) {
		snprintf(err, errlen, "client_tls_sslmode = %s needs client_tls_ca_file",
		         config_sslmode_name(cfg->client_tls_sslmode));
		return NULL;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		snprintf(err, errlen, "%s: %s", what, ssl_reason());
		return NULL;
	}
	if (!common_setup(ctx, cfg->client_tls_protocols, cfg->client_tls_ciphers, what, err, errlen) ||
	    !load_cert(ctx, cfg->client_tls_cert_file, cfg->client_tls_key_file, what, err, errlen))
		goto fail;
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_dh_auto(ctx, 1);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
	if (cfg->client_tls_ca_file[0]) {
		if (!load_ca(ctx, cfg->client_tls_ca_file, what, err, errlen))
			goto fail;
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->client_tls_ca_file);
		if (names)
			SSL_CTX_set_client_CA_list(ctx, names);
	}
	/* a client without a certificate completes the handshake and is refused
	 * at startup with a message (as PostgreSQL does); one with a bad
	 * certificate fails the handshake */
	SSL_CTX_set_verify(
	    ctx, cfg->client_tls_sslmode >= PGT_SSL_VERIFY_CA ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	ERR_clear_error();
	return ctx;
fail:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

static SSL_CTX *build_connect(const struct pgt_config *cfg, char *err, size_t errlen)
{
	const char *what = "server TLS";
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		snprintf(err, errlen, "%s: %s", what, ssl_reason());
		return NULL;
	}
	if (!common_setup(ctx, cfg->server_tls_protocols, cfg->server_tls_ciphers, what, err, errlen))
		goto fail;
	if (cfg->server_tls_cert_file[0] || cfg->server_tls_key_file[0]) {
		if (!cfg->server_tls_cert_file[0] || !cfg->server_tls_key_file[0]) {
			snprintf(err, errlen, "server_tls_cert_file and server_tls_key_file go together");
			goto fail;
		}
		if (!load_cert(ctx, cfg->server_tls_cert_file, cfg->server_tls_key_file, what, err, errlen))
			goto fail;
	}
	if (cfg->server_tls_ca_file[0]) {
		if (!load_ca(ctx, cfg->server_tls_ca_file, what, err, errlen))
			goto fail;
	} else {
		SSL_CTX_set_default_verify_paths(ctx);
	}
	SSL_CTX_set_alpn_protos(ctx, alpn_pg, sizeof(alpn_pg) - 1);
	ERR_clear_error();
	return ctx;
fail:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

bool tls_configure(const struct pgt_config *cfg, bool install, char *err, size_t errlen)
{
	SSL_CTX *a = NULL, *c = NULL;
	if (cfg->client_tls_sslmode != PGT_SSL_DISABLE && !(a = build_accept(cfg, err, errlen)))
		return false;
	if (!(c = build_connect(cfg, err, errlen))) {
		SSL_CTX_free(a);
		return false;
	}
	if (!install) {
		SSL_CTX_free(a);
		SSL_CTX_free(c);
		return true;
	}
	/* open sessions hold their own references: freeing ours is safe */
	SSL_CTX_free(accept_ctx);
	SSL_CTX_free(connect_ctx);
	accept_ctx = a;
	connect_ctx = c;
	return true;
}

void tls_shutdown(void)
{
	SSL_CTX_free(accept_ctx);
	SSL_CTX_free(connect_ctx);
	accept_ctx = connect_ctx = NULL;
}

bool tls_client_available(void)
{
	return accept_ctx != NULL && pgt.cfg->client_tls_sslmode != PGT_SSL_DISABLE;
}

static void handshake_step(struct pgt_conn *c);

/* A session of ctx on c's socket; NULL if there is no context or memory. */
static SSL *new_session(SSL_CTX *ctx, const struct pgt_conn *c)
{
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;
	if (ssl && !SSL_set_fd(ssl, c->fd)) {
		SSL_free(ssl);
		ssl = NULL;
	}
	return ssl;
}

bool tls_accept(struct pgt_conn *c, bool direct)
{
	SSL *ssl = new_session(accept_ctx, c);
	if (!ssl)
		return false;
	SSL_set_accept_state(ssl);
	c->ssl = ssl;
	c->tls_hs = true;
	sbuf_tls_slow_update(c);
	c->tls_hs_write = false;
	c->tls_direct = direct;
	c->tls_side = TLS_SIDE_CLIENT;
	if (direct)
		handshake_step(c); /* the ClientHello is in the socket already */
	return true;
}

bool tls_request(struct pgt_conn *c)
{
	uint8_t req[8];
	proto_put_be32(req, 8);
	proto_put_be32(req + 4, PROTO_SSL_CODE);
	if (!sbuf_send_raw(c, req, sizeof(req)))
		return false;
	c->tls_await = true;
	sbuf_tls_slow_update(c);
	sbuf_update_events(c);
	return true;
}

static bool numeric_host(const char *h)
{
	uint8_t a[16];
	return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

bool tls_connect(struct pgt_conn *c, const char *host, int sslmode)
{
	SSL *ssl = new_session(connect_ctx, c);
	if (!ssl)
		return false;
	SSL_set_connect_state(ssl);
	bool numeric = host && numeric_host(host);
	if (host && !numeric)
		SSL_set_tlsext_host_name(ssl, host);
	if (sslmode >= PGT_SSL_VERIFY_CA) {
		SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
		if (sslmode == PGT_SSL_VERIFY_FULL && host) {
			X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
			int ok;
			if (numeric) {
				ok = X509_VERIFY_PARAM_set1_ip_asc(vp, host);
			} else {
				X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
				ok = X509_VERIFY_PARAM_set1_host(vp, host, 0);
			}
			if (!ok) {
				SSL_free(ssl);
				return false;
			}
		}
	} else {
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	}
	c->ssl = ssl;
	c->tls_hs = true;
	sbuf_tls_slow_update(c);
	c->tls_hs_write = false;
	c->tls_side = TLS_SIDE_SERVER;
	handshake_step(c);
	return true;
}

bool tls_peek_direct(struct pgt_conn *c)
{
	c->tls_peek = false;
	if (!tls_client_available())
		return false;
	uint8_t b;
	ssize_t n;
	do {
		n = recv(c->fd, &b, 1, MSG_PEEK);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		c->tls_peek = true;
		return true;
	}
	if (n != 1 || b != 0x16)
		return false; /* a PostgreSQL packet, EOF or an error: the normal read sees it */
	if (!tls_accept(c, true)) {
		c->ops->on_close(c, "cannot start TLS", false);
		return true;
	}
	return true;
}

/* Why a handshake failed, for the log (certificate problems in words). */
static const char *handshake_error(struct pgt_conn *c, int e)
{
	long vr = SSL_get_verify_result(c->ssl);
	if (vr != X509_V_OK)
		return X509_verify_cert_error_string(vr);
	if (e == SSL_ERROR_SYSCALL)
		return errno ? strerror(errno) : "connection closed during the TLS handshake";
	if (e == SSL_ERROR_ZERO_RETURN)
		return "connection closed during the TLS handshake";
	return ssl_reason();
}

static void handshake_fail(struct pgt_conn *c, const char *why)
{
	char msg[256];
	snprintf(msg, sizeof(msg), "TLS handshake failed: %s", why);
	tls_handshake_failures[c->tls_side]++;
	c->tls_counted = true;
	SSL_set_quiet_shutdown(c->ssl, 1);
	ERR_clear_error();
	c->ops->on_close(c, msg, false);
}

static void handshake_step(struct pgt_conn *c)
{
	ERR_clear_error();
	errno = 0;
	int r = SSL_do_handshake(c->ssl);
	if (r == 1) {
		c->tls_hs = false;
		sbuf_tls_slow_update(c);
		c->tls_hs_write = false;
		tls_handshakes[c->tls_side]++;
		c->tls_counted = true;
		if (c->tls_direct) {
			const unsigned char *p = NULL;
			unsigned len = 0;
			SSL_get0_alpn_selected(c->ssl, &p, &len);
			if (len == 0) {
				/* direct TLS is only for clients that say they speak PostgreSQL */
				SSL_set_quiet_shutdown(c->ssl, 1);
				c->ops->on_close(c, "direct TLS without ALPN \"postgresql\"", false);
				return;
			}
		}
		if (c->tls_side == TLS_SIDE_CLIENT) {
			/* A client that has not set TCP_NODELAY holds its startup packet
			 * until its Finished is acknowledged, and with no session ticket
			 * to carry that ACK the kernel delays it (40 ms): send it now. */
			int one = 1;
			setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
		}
		c->ops->on_tls_ready(c);
		if (c->dead)
			return;
		sbuf_update_events(c);
		if (tls_pending(c))
			event_active(&c->ev, EV_READ, 1); /* application data came with the Finished */
		return;
	}
	int e = SSL_get_error(c->ssl, r);
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		c->tls_hs_write = e == SSL_ERROR_WANT_WRITE;
		sbuf_update_events(c);
		return;
	}
	handshake_fail(c, handshake_error(c, e));
}

/* A server connection waits for the one-byte answer to its SSLRequest. */
static void await_answer(struct pgt_conn *c)
{
	uint8_t b;
	ssize_t n;
	do {
		n = recv(c->fd, &b, 1, 0);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return;
	if (n <= 0) {
		c->ops->on_close(
		    c, n == 0 ? "server closed the connection after SSLRequest" : strerror(errno), false);
		return;
	}
	c->tls_await = false;
	sbuf_tls_slow_update(c);
	c->bytes_in++;
	if (b == 'S') {
		/* nothing may follow 'S' before our ClientHello: bytes that did were
		 * sent by someone who is not the server (CVE-2021-23222) */
		uint8_t extra;
		if (recv(c->fd, &extra, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
			c->ops->on_close(c, "server sent unencrypted data after its SSL response", true);
			return;
		}
	} else if (b != 'N' && b != 'E') {
		c->ops->on_close(c, "invalid answer to SSLRequest", true);
		return;
	}
	c->ops->on_tls_answer(c, (char)b);
}

void tls_event(struct pgt_conn *c, short what)
{
	if (c->tls_await) {
		if (what & EV_READ)
			await_answer(c);
		else
			sbuf_update_events(c);
		return;
	}
	handshake_step(c);
}

ssize_t tls_recv(struct pgt_conn *c, void *buf, size_t len, const char **why)
{
	ERR_clear_error();
	errno = 0;
	int n = SSL_read(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
	if (n > 0) {
		c->tls_rd_drained = false;
		return n;
	}
	int e = SSL_get_error(c->ssl, n);
	switch (e) {
	case SSL_ERROR_WANT_READ:
		c->tls_rd_drained = true;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		/* a key update to answer while the socket is full */
		c->tls_rd_wants_write = true;
		sbuf_tls_slow_update(c);
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		SSL_set_quiet_shutdown(c->ssl, 1);
		if (errno == 0)
			return 0; /* EOF without close_notify */
		*why = strerror(errno);
		return -1;
	default:
		SSL_set_quiet_shutdown(c->ssl, 1);
		*why = ssl_reason();
		ERR_clear_error();
		errno = EPROTO;
		return -1;
	}
}

ssize_t tls_send(struct pgt_conn *c, const void *buf, size_t len)
{
	if (__builtin_expect(c->tls_hs || c->tls_await, 0))
		return (ssize_t)len; /* no session to say it in (a timeout during the handshake) */
	ERR_clear_error();
	errno = 0;
	int n = SSL_write(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
	if (n > 0)
		return n;
	int e = SSL_get_error(c->ssl, n);
	if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
		errno = EAGAIN;
		return -1;
	}
	SSL_set_quiet_shutdown(c->ssl, 1);
	ERR_clear_error();
	if (e != SSL_ERROR_SYSCALL || errno == 0)
		errno = EPIPE;
	return -1;
}

bool tls_pending(const struct pgt_conn *c)
{
	/* SSL_has_pending() is also true for a partial record, which only the
	 * socket can complete: after a read that asked for the socket, waiting
	 * for it is right (else a client that sends half a record would make
	 * the loop spin) */
	return c->ssl && !c->tls_hs && !c->tls_rd_drained && SSL_has_pending(c->ssl);
}

void tls_close(struct pgt_conn *c)
{
	SSL *ssl = c->ssl;
	if (!ssl)
		return;
	if (c->tls_hs && !c->tls_counted)
		tls_handshake_failures[c->tls_side]++; /* the peer left, or timed out, mid-handshake */
	if (!c->tls_hs && c->fd >= 0) {
		ERR_clear_error();
		SSL_shutdown(ssl); /* close_notify if the socket takes it; no waiting for the peer's */
	}
	ERR_clear_error();
	SSL_free(ssl);
	c->ssl = NULL;
	c->tls_hs = c->tls_await = c->tls_rd_wants_write = false;
	sbuf_tls_slow_update(c);
}

void tls_describe(const struct pgt_conn *c, char *out, size_t outlen)
{
	if (!c->ssl || c->tls_hs) {
		snprintf(out, outlen, "%s", c->ssl ? "handshake" : "");
		return;
	}
	snprintf(out, outlen, "%s/%s", SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
}

const char *tls_server_name(const struct pgt_conn *c)
{
	return c->ssl ? SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name) : NULL;
}

int tls_peer_cn(const struct pgt_conn *c, char *cn, size_t cnlen)
{
	cn[0] = '\0';
	if (!c->ssl)
		return 0;
	X509 *cert = SSL_get0_peer_certificate(c->ssl);
	if (!cert || SSL_get_verify_result(c->ssl) != X509_V_OK)
		return 0;
	X509_NAME *name = X509_get_subject_name(cert);
	int idx = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
	if (idx >= 0) {
		ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
		const unsigned char *d = ASN1_STRING_get0_data(s);
		int len = ASN1_STRING_length(s);
		/* a CN with a NUL in it matches no user name */
		if (len > 0 && (size_t)len < cnlen && !memchr(d, 0, (size_t)len)) {
			memcpy(cn, d, (size_t)len);
			cn[len] = '\0';
		}
	}
	return 1;
}

size_t tls_endpoint_hash(const struct pgt_conn *c, uint8_t out[64])
{
	if (!c->ssl || c->tls_hs)
		return 0;
	X509 *cert = SSL_get_certificate(c->ssl);
	if (!cert)
		return 0;
	int md_nid = NID_undef;
	if (!OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, NULL) || md_nid == NID_undef)
		return 0;
	if (md_nid == NID_md5 || md_nid == NID_sha1)
		md_nid = NID_sha256; /* RFC 5929 section 4.1 */
	const EVP_MD *md = EVP_get_digestbynid(md_nid);
	unsigned len = 0;
	if (!md || EVP_MD_get_size(md) > 64 || !X509_digest(cert, md, out, &len))
		return 0;
	return len;
}
