/*
 * Client authentication.  An unknown user goes through the same exchange
 * with a mock secret (same salt at every attempt, same iteration count, no
 * PBKDF2, as for a known user whose secret is cached) and fails at the end
 * with the same message as a bad password, so that user names cannot be
 * probed.
 *
 * A failure is answered after auth_failure_delay, doubling with the
 * address's further failures: the client waits on a timer in AUTH_FAILED
 * while the loop serves everyone else.
 */
#include "auth.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/crypto.h>

#include "addrstate.h"
#include "authquery.h"
#include "client.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "loop.h"
#include "pktbuf.h"
#include "jwt.h"
#include "list.h"
#include "proto.h"
#include "tls.h"
#include "userlist.h"

#define AUTH_OK 0
#define AUTH_CLEARTEXT 3
#define AUTH_MD5 5
#define AUTH_SASL 10
#define AUTH_SASL_CONTINUE 11
#define AUTH_SASL_FINAL 12

static bool send_auth(struct pgt_client *c, uint32_t code, const void *data, size_t n)
{
	struct pktbuf b;
	pktbuf_init(&b);
	pktbuf_auth(&b, code, data, n);
	bool ok = sbuf_send_raw(&c->conn, b.data, b.len);
	pktbuf_free(&b);
	if (!ok)
		client_close(c, "send failed during authentication");
	return ok;
}

static void answer_failure(struct pgt_client *c, struct auth_state *st)
{
	if (st->fail_msg)
		client_fail(c, "28P01", "%s", st->fail_msg);
	else
		client_fail(c, "28P01", "password authentication failed for user \"%s\"", c->user);
}

static void fail_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct auth_state *st = arg;
	answer_failure(st->fail_client, st);
}

static bool fail_login(struct pgt_client *c, struct auth_state *st, const char *why,
                       enum metrics_refusal kind);
static void jwks_fetched(struct jwks_waiter *w);
static bool jwt_login(struct pgt_client *c, struct auth_state *st, char *token, bool may_wait);

/* Returns false if c was closed, true if the answer waits on the timer. */
static bool fail_password(struct pgt_client *c, struct auth_state *st, const char *why)
{
	return fail_login(c, st, why, REFUSAL_AUTH_FAILED);
}

/* A refused token: 28P01 "invalid token: <reason>", after the same delay as
 * a bad password; logged with the reason, never with the token. */
static bool fail_token(struct pgt_client *c, struct auth_state *st, enum jwt_reason r, const char *text)
{
	jwt_refusals[r]++;
	free(st->fail_msg);
	st->fail_msg = xasprintf("invalid token: %s", text ? text : jwt_reason_text(r));
	return fail_login(c, st, st->fail_msg, REFUSAL_JWT_INVALID);
}

static bool fail_login(struct pgt_client *c, struct auth_state *st, const char *why,
                       enum metrics_refusal kind)
{
	usec_t base = pgt.cfg->auth_failure_delay;
	struct addr_state *as = base > 0 ? client_login_addr(c) : NULL; /* the client holds a reference */
	usec_t delay = addr_state_failure_delay(as, base, loop_now());
	if (as)
		client_log(c, PGT_LOG_WARNING,
		           "authentication failed: %s (failure %d in a row from this address)", why,
		           as->failures);
	else
		client_log(c, PGT_LOG_WARNING, "authentication failed: %s", why);
	metrics_refused(kind);
	st->step = AUTH_FAILED;
	if (delay > 0) {
		/* libevent's default clock is CLOCK_MONOTONIC_COARSE, which lags by
		 * up to a tick (<= 10 ms): pad, so that the delay is a lower bound */
		delay += 10 * 1000;
		struct timeval tv = {.tv_sec = delay / USEC_PER_SEC, .tv_usec = delay % USEC_PER_SEC};
		st->fail_client = c;
		if (!st->fail_timer)
			st->fail_timer = evtimer_new(pgt.base, fail_timer_cb, st);
		if (st->fail_timer && evtimer_add(st->fail_timer, &tv) == 0)
			return true;
	}
	answer_failure(c, st);
	return false;
}

static void auth_succeeded(struct pgt_client *c, struct auth_state *st)
{
	addr_state_success(client_login_addr(c));
	st->step = AUTH_DONE;
}

static bool ask_password(struct pgt_client *c, struct auth_state *st, int type);
static void authq_done(struct authq_waiter *w, const char *error, const char *secret);

bool auth_start(struct pgt_client *c, struct auth_state *st)
{
	const struct pgt_config *cfg = pgt.cfg;
	const struct pgt_user *u = userlist_find(cfg->users, c->user);
	st->stored = u ? xstrdup(u->password) : NULL;
	/* the most specific auth_type decides: the user's [users] entry, else
	 * the database entry, else the global one */
	int type = client_auth_type(c);
	if (type == PGT_AUTH_TRUST) {
		st->step = AUTH_DONE;
		return true;
	}
	if (type == PGT_AUTH_JWT) {
		if (!c->conn.ssl && c->conn.addr.sa.sa_family != AF_UNIX && !cfg->jwt_allow_plaintext) {
			/* refused before the token is asked for, so that it never
			 * crosses the network in clear */
			metrics_refused(REFUSAL_TLS);
			client_fail(c, "28000",
			            "JWT login requires TLS (sslmode=require) or a unix socket; "
			            "jwt_allow_plaintext = yes allows it over plaintext TCP");
			return false;
		}
		st->step = AUTH_JWT_WAIT;
		return send_auth(c, AUTH_CLEARTEXT, NULL, 0);
	}
	const struct pgt_database *db = client_login_db(c);
	if (!u && type != PGT_AUTH_TRUST && authq_applies(db, c->user)) {
		const char *secret = NULL;
		st->authq.done = authq_done;
		st->client = c;
		int r = authq_secret(db, c->dbname, c->user, &st->authq, &secret);
		if (r < 0) {
			client_log(c, PGT_LOG_ERROR, "auth_dbname names no [databases] entry");
			client_fail(c, "08006", "server connection failed: auth_query cannot run");
			return false;
		}
		st->from_query = true;
		if (r == 0) {
			st->step = AUTH_QUERY_WAIT; /* authq_done continues */
			return true;
		}
		st->stored = secret ? xstrdup(secret) : NULL;
	}
	return ask_password(c, st, type);
}

/* auth_query answered for a waiting login. */
static void authq_done(struct authq_waiter *w, const char *error, const char *secret)
{
	struct auth_state *st = container_of(w, struct auth_state, authq);
	struct pgt_client *c = st->client;
	if (st->step != AUTH_QUERY_WAIT)
		return;
	if (error) {
		/* the details are in the log; an unauthenticated client learns
		 * nothing about the server */
		client_fail(c, "08006", "server connection failed: could not look up the user");
		return;
	}
	st->stored = secret ? xstrdup(secret) : NULL;
	ask_password(c, st, client_auth_type(c));
}

/* Ask for an md5 or SCRAM answer, as the stored secret allows. */
static bool ask_password(struct pgt_client *c, struct auth_state *st, int type)
{
	bool use_md5 = type == PGT_AUTH_MD5;
	/* the stored form decides what is possible, as in PgBouncer */
	if (st->stored && strncmp(st->stored, "md5", 3) == 0 && strlen(st->stored) == 35)
		use_md5 = true;
	if (st->stored && strncmp(st->stored, "SCRAM-SHA-256$", 14) == 0)
		use_md5 = false;
	if (use_md5) {
		if (!util_random(st->md5_salt, 4)) {
			client_fail(c, "58000", "could not generate a salt");
			return false;
		}
		st->step = AUTH_MD5_WAIT;
		return send_auth(c, AUTH_MD5, st->md5_salt, 4);
	}
	/* over TLS, channel binding first, as PostgreSQL lists them */
	static const char mechs[] = "SCRAM-SHA-256\0";
	static const char mechs_plus[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
	uint8_t h[64];
	st->step = AUTH_SCRAM_INIT_WAIT;
	st->plus_offered = tls_endpoint_hash(&c->conn, h) > 0;
	if (st->plus_offered)
		return send_auth(c, AUTH_SASL, mechs_plus, sizeof(mechs_plus));
	return send_auth(c, AUTH_SASL, mechs, sizeof(mechs));
}

/* The secret a SCRAM login is checked against. */
static bool scram_secret_for(struct pgt_client *c, struct auth_state *st, struct scram_secret *sec)
{
	if (!st->from_query)
		/* looked up again, not from st->stored: the config may have been
		 * reloaded since auth_start, and the derived secret is cached in
		 * the current userlist's entry */
		return userlist_scram_secret(pgt.cfg->users, c->user, sec);
	if (st->stored && scram_parse_secret(st->stored, sec))
		return true;
	if (st->stored && strncmp(st->stored, "SCRAM-SHA-256$", 14) != 0) {
		/* a plain password from a custom auth_query */
		uint8_t salt[SCRAM_SALT_LEN];
		return util_random(salt, sizeof(salt)) &&
		       scram_secret_from_password(st->stored, salt, sizeof(salt), SCRAM_DEFAULT_ITER, sec);
	}
	return scram_mock_secret(c->user, sec);
}

/* A password did not match what auth_query found: ask again next time, in
 * case it was changed. */
static void authq_mismatch(struct pgt_client *c, struct auth_state *st)
{
	if (st->from_query && st->stored)
		authq_forget(client_login_db(c), c->dbname, c->user);
}

static bool md5_check(struct pgt_client *c, struct auth_state *st, const uint8_t *body, uint32_t len)
{
	struct proto_reader r;
	proto_reader_init(&r, body, len);
	const char *resp = proto_get_str(&r);
	if (!resp || r.pos != len) {
		client_fail(c, "08P01", "protocol violation: malformed password message");
		return false;
	}
	if (!st->stored)
		return fail_password(c, st, "no such user");
	char hash[36], want[36];
	if (strncmp(st->stored, "md5", 3) == 0 && strlen(st->stored) == 35)
		memcpy(hash, st->stored, 36);
	else
		pg_md5_hash(st->stored, c->user, hash);
	pg_md5_salted(hash, st->md5_salt, want);
	if (strlen(resp) != 35 || !util_secure_eq(resp, want, 35)) {
		authq_mismatch(c, st);
		return fail_password(c, st, "md5 response does not match");
	}
	auth_succeeded(c, st);
	return true;
}

bool auth_message(struct pgt_client *c, struct auth_state *st, const uint8_t *body, uint32_t len)
{
	const char *reason = NULL;
	switch (st->step) {
	case AUTH_MD5_WAIT:
		return md5_check(c, st, body, len);
	case AUTH_SCRAM_INIT_WAIT: {
		struct proto_reader r;
		proto_reader_init(&r, body, len);
		const char *mech = proto_get_str(&r);
		uint32_t n = proto_get_u32(&r);
		const uint8_t *data = r.bad ? NULL : proto_get_bytes(&r, n);
		if (!mech || r.bad || !data || r.pos != len || n == 0xffffffffu) {
			client_fail(c, "08P01", "protocol violation: malformed SASLInitialResponse");
			return false;
		}
		struct scram_cbind cb = {.offered = st->plus_offered};
		uint8_t hash[64];
		if (strcmp(mech, "SCRAM-SHA-256-PLUS") == 0 && st->plus_offered) {
			cb.plus = true;
			cb.len = tls_endpoint_hash(&c->conn, hash);
			cb.data = hash;
		} else if (strcmp(mech, "SCRAM-SHA-256") != 0) {
			client_fail(c, "28000", "SASL mechanism %s is not supported", mech);
			return false;
		}
		struct scram_secret sec;
		if (!scram_secret_for(c, st, &sec)) {
			client_fail(c, "58000", "could not prepare SCRAM exchange");
			return false;
		}
		char *sf = scram_server_first_cb(&st->scram, (const char *)data, n, &sec, NULL, &cb, &reason);
		OPENSSL_cleanse(&sec, sizeof(sec));
		if (!sf) {
			if (st->scram.negotiation_error)
				client_fail(c, "28000", "%s", reason);
			else
				client_fail(c, "08P01", "protocol violation: %s", reason);
			return false;
		}
		st->step = AUTH_SCRAM_FINAL_WAIT;
		bool ok = send_auth(c, AUTH_SASL_CONTINUE, sf, strlen(sf));
		free(sf);
		return ok;
	}
	case AUTH_SCRAM_FINAL_WAIT: {
		uint8_t client_key[SCRAM_KEY_LEN];
		char *v = scram_server_final(&st->scram, (const char *)body, len, client_key, &reason);
		if (v && st->from_query && st->stored)
			/* the proof carried the ClientKey: server logins as this
			 * user can pass it on */
			authq_client_key(client_login_db(c), c->dbname, c->user, st->stored, client_key);
		OPENSSL_cleanse(client_key, sizeof(client_key));
		if (!v)
			authq_mismatch(c, st);
		if (!v || !st->stored) {
			free(v);
			return fail_password(c, st,
			                     !st->stored ? "no such user"
			                     : reason    ? reason
			                                 : "password does not match");
		}
		bool ok = send_auth(c, AUTH_SASL_FINAL, v, strlen(v));
		free(v);
		if (ok)
			auth_succeeded(c, st);
		return ok;
	}
	case AUTH_JWT_WAIT: {
		struct proto_reader r;
		proto_reader_init(&r, body, len);
		const char *token = proto_get_str(&r);
		if (!token || r.pos != len) {
			client_fail(c, "08P01", "protocol violation: malformed password message");
			return false;
		}
		/* the message's buffer goes with c if the login closes it: verify a
		 * copy, and wipe the buffer while it is certainly there */
		size_t tl = strlen(token);
		char *copy = xstrndup(token, tl);
		OPENSSL_cleanse((void *)token, tl);
		bool ok = jwt_login(c, st, copy, true);
		OPENSSL_cleanse(copy, tl);
		free(copy);
		return ok;
	}
	case AUTH_FAILED:
		/* the answer is on its way (fail_timer): whatever the client says
		 * meanwhile cannot change it */
		return true;
	default:
		client_fail(c, "08P01", "protocol violation: unexpected password message");
		return false;
	}
}

/* Verify a token and apply its claims; with may_wait, a token whose key
 * is unknown waits for jwt_jwks_url to be fetched again.  false if c was
 * closed. */
static bool jwt_login(struct pgt_client *c, struct auth_state *st, char *token, bool may_wait)
{
	struct jwt_result res;
	size_t tl = strlen(token);
	enum jwt_reason why = jwt_verify(pgt.cfg, token, tl, (int64_t)time(NULL), &res);
	if (why == JWT_UNKNOWN_KEY && may_wait) {
		st->jwks.done = jwks_fetched;
		st->client = c;
		if (jwks_wait_refresh(&st->jwks)) {
			st->token = xstrndup(token, tl);
			st->step = AUTH_JWT_KEYS;
			client_log(c, PGT_LOG_DEBUG, "token key unknown: waiting for jwt_jwks_url");
			return true;
		}
	}
	if (why != JWT_OK)
		return fail_token(c, st, why, NULL);
	char text[160];
	int v = client_jwt_identity(c, &res, &why, text, sizeof(text));
	if (v < 0)
		return false; /* refused (08004) and closed */
	if (v > 0)
		return fail_token(c, st, why, text);
	auth_succeeded(c, st);
	return true;
}

/* jwt_jwks_url was fetched (or failed): the waiting token again, once. */
static void jwks_fetched(struct jwks_waiter *w)
{
	struct auth_state *st = container_of(w, struct auth_state, jwks);
	struct pgt_client *c = st->client;
	char *token = st->token;
	st->token = NULL;
	if (st->step != AUTH_JWT_KEYS || !token) {
		free(token);
		return;
	}
	bool ok = jwt_login(c, st, token, false);
	OPENSSL_cleanse(token, strlen(token));
	free(token);
	if (ok)
		client_auth_resumed(c);
}

bool auth_jwt_too_large(struct pgt_client *c, struct auth_state *st)
{
	return fail_token(c, st, JWT_TOO_LARGE, NULL);
}

void auth_clear(struct auth_state *st)
{
	if (st->fail_timer) {
		event_free(st->fail_timer); /* deletes it if it is pending */
		st->fail_timer = NULL;
	}
	scram_server_clear(&st->scram);
	free(st->fail_msg);
	st->fail_msg = NULL;
	jwks_unwait(&st->jwks);
	authq_unwait(&st->authq);
	st->from_query = false;
	if (st->token) {
		OPENSSL_cleanse(st->token, strlen(st->token));
		free(st->token);
		st->token = NULL;
	}
	if (st->stored) {
		memset(st->stored, 0, strlen(st->stored));
		free(st->stored);
	}
	st->stored = NULL;
	st->step = AUTH_NONE;
}
