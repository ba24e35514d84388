/*
 * TLS on both sides with non-blocking OpenSSL on the one event loop.
 *
 * A connection is plaintext until it starts TLS: a client after pgtenant
 * answered 'S' to its SSLRequest (or at once when its first byte is a TLS
 * handshake record: PostgreSQL 17's direct TLS, which must name ALPN
 * "postgresql"), a server connection after PostgreSQL answered 'S' to
 * pgtenant's SSLRequest.  From then on sbuf.c reads and writes through
 * tls_recv()/tls_send() instead of recv()/send(): the buffered-forwarding
 * model is the same, the plaintext path pays one predictable branch.
 *
 * The contexts (certificates, CA, protocols, ciphers) are built from the
 * config at startup and on RELOAD; a reload whose files do not load keeps
 * the previous contexts.  A connection holds a reference to the context it
 * started with, so a reload never touches open sessions.
 */
#ifndef PGT_TLS_H
#define PGT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct pgt_conn;
struct pgt_config;

enum tls_side { TLS_SIDE_CLIENT = 0, TLS_SIDE_SERVER = 1 };

/* Handshakes completed and failed, per side (for /metrics). */
extern uint64_t tls_handshakes[2], tls_handshake_failures[2];

/* Build the contexts cfg asks for.  install: make them the ones new
 * connections use (else only check that they can be built).  false with a
 * message in err when a file does not load or a value is not understood. */
bool tls_configure(const struct pgt_config *cfg, bool install, char *err, size_t errlen);
void tls_shutdown(void);
/* pgtenant answers 'S' to a client's SSLRequest. */
bool tls_client_available(void);

/* Start the server-role handshake on a client connection (after 'S' was
 * sent, or with the ClientHello still unread in the socket for direct TLS). */
bool tls_accept(struct pgt_conn *c, bool direct);
/* Send an SSLRequest on a fresh server connection; the answer is given to
 * c->ops->on_tls_answer(). */
bool tls_request(struct pgt_conn *c);
/* Start the client-role handshake on a server connection that answered 'S':
 * host for SNI (names only) and, with verify-full, for the name/IP check. */
bool tls_connect(struct pgt_conn *c, const char *host, int sslmode);
/* Client connection, first readable event: a TLS record header as the first
 * byte starts direct TLS.  true if the event was consumed. */
bool tls_peek_direct(struct pgt_conn *c);

/* A readiness event on a connection in handshake or waiting for 'S'/'N'. */
void tls_event(struct pgt_conn *c, short what);
/* recv()/send() semantics: >0 bytes, 0 EOF (recv), -1 with errno (EAGAIN
 * when OpenSSL waits for the socket; its reason in *why otherwise). */
ssize_t tls_recv(struct pgt_conn *c, void *buf, size_t len, const char **why);
ssize_t tls_send(struct pgt_conn *c, const void *buf, size_t len);
/* OpenSSL holds bytes (decrypted or read ahead) that the socket will not signal. */
bool tls_pending(const struct pgt_conn *c);
/* Send close_notify when the session is established (no wait) and free it. */
void tls_close(struct pgt_conn *c);

/* "TLSv1.3/TLS_AES_256_GCM_SHA384", or "" for plaintext. */
void tls_describe(const struct pgt_conn *c, char *out, size_t outlen);
/* The server name the client sent (SNI), or NULL. */
const char *tls_server_name(const struct pgt_conn *c);
/* The client certificate: 0 none, 1 present (CN copied to cn, "" if it has
 * none); verification against the CA happened in the handshake. */
int tls_peer_cn(const struct pgt_conn *c, char *cn, size_t cnlen);
/* tls-server-end-point channel binding data (RFC 5929): the hash of the
 * certificate this session presented, with its signature's digest (SHA-256
 * for MD5 and SHA-1).  0 when there is none (no TLS, or a signature
 * algorithm without a single digest such as Ed25519). */
size_t tls_endpoint_hash(const struct pgt_conn *c, uint8_t out[64]);

#endif
