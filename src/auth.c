/*
 * Client authentication.  An unknown user goes through the same exchange
 * with a throw-away secret and fails at the end with the same message as a
 * bad password, so that user names cannot be probed.
 */
#include "auth.h"

#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "loop.h"
#include "pktbuf.h"
#include "proto.h"
#include "userlist.h"

#define AUTH_OK 0
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

static void fail_password(struct pgt_client *c, const char *why)
{
	client_log(c, PGT_LOG_WARNING, "authentication failed: %s", why);
	metrics_refused(REFUSAL_AUTH_FAILED);
	client_fail(c, "28P01", "password authentication failed for user \"%s\"", c->user);
}

bool auth_start(struct pgt_client *c, struct auth_state *st)
{
	const struct pgt_config *cfg = pgt.cfg;
	const struct pgt_user *u = userlist_find(cfg->users, c->user);
	st->stored = u ? xstrdup(u->password) : NULL;
	if (cfg->auth_type == PGT_AUTH_TRUST) {
		st->step = AUTH_DONE;
		return true;
	}
	if (cfg->auth_type == PGT_AUTH_JWT) {
		client_fail(c, "28000", "auth_type jwt is not supported yet");
		return false;
	}
	bool use_md5 = cfg->auth_type == PGT_AUTH_MD5;
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
	static const char mechs[] = "SCRAM-SHA-256\0";
	st->step = AUTH_SCRAM_INIT_WAIT;
	return send_auth(c, AUTH_SASL, mechs, sizeof(mechs));
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
	if (!st->stored) {
		fail_password(c, "no such user");
		return false;
	}
	char hash[36], want[36];
	if (strncmp(st->stored, "md5", 3) == 0 && strlen(st->stored) == 35)
		memcpy(hash, st->stored, 36);
	else
		pg_md5_hash(st->stored, c->user, hash);
	pg_md5_salted(hash, st->md5_salt, want);
	if (strlen(resp) != 35 || !util_secure_eq(resp, want, 35)) {
		fail_password(c, "md5 response does not match");
		return false;
	}
	st->step = AUTH_DONE;
	return true;
}

static bool scram_secret_for(struct pgt_client *c, struct auth_state *st, struct scram_secret *sec)
{
	uint8_t salt[16];
	if (st->stored && strncmp(st->stored, "SCRAM-SHA-256$", 14) == 0) {
		if (scram_parse_secret(st->stored, sec))
			return true;
		client_log(c, PGT_LOG_WARNING, "invalid SCRAM secret in auth_file");
	}
	if (!util_random(salt, sizeof(salt)))
		return false;
	/* plain password, or a decoy for an unknown user that no proof can match */
	char decoy[33];
	const char *pw = st->stored;
	if (!pw || strncmp(pw, "SCRAM-SHA-256$", 14) == 0) {
		uint8_t rnd[16];
		if (!util_random(rnd, sizeof(rnd)))
			return false;
		for (int i = 0; i < 16; i++)
			snprintf(decoy + 2 * i, 3, "%02x", rnd[i]);
		pw = decoy;
	}
	return scram_secret_from_password(pw, salt, sizeof(salt), SCRAM_DEFAULT_ITER, sec);
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
		if (strcmp(mech, "SCRAM-SHA-256") != 0) {
			client_fail(c, "28000", "SASL mechanism %s is not supported", mech);
			return false;
		}
		struct scram_secret sec;
		if (!scram_secret_for(c, st, &sec)) {
			client_fail(c, "58000", "could not prepare SCRAM exchange");
			return false;
		}
		char *sf = scram_server_first(&st->scram, (const char *)data, n, &sec, NULL, &reason);
		if (!sf) {
			client_fail(c, "08P01", "protocol violation: %s", reason);
			return false;
		}
		st->step = AUTH_SCRAM_FINAL_WAIT;
		bool ok = send_auth(c, AUTH_SASL_CONTINUE, sf, strlen(sf));
		free(sf);
		return ok;
	}
	case AUTH_SCRAM_FINAL_WAIT: {
		char *v = scram_server_final(&st->scram, (const char *)body, len, NULL, &reason);
		if (!v || !st->stored) {
			free(v);
			fail_password(c, reason ? reason : "no such user");
			return false;
		}
		bool ok = send_auth(c, AUTH_SASL_FINAL, v, strlen(v));
		free(v);
		if (ok)
			st->step = AUTH_DONE;
		return ok;
	}
	default:
		client_fail(c, "08P01", "protocol violation: unexpected password message");
		return false;
	}
}

void auth_clear(struct auth_state *st)
{
	scram_server_clear(&st->scram);
	if (st->stored) {
		memset(st->stored, 0, strlen(st->stored));
		free(st->stored);
	}
	st->stored = NULL;
	st->step = AUTH_NONE;
}
