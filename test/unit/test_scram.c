/*
 * SCRAM-SHA-256 against the RFC 7677 test vector (section 3), in both roles,
 * plus md5 hashing and parsing of stored SCRAM secrets, the client role's
 * SaltedPassword cache, and SASLprep of passwords against secrets that
 * PostgreSQL 15 stored, and the server role's channel binding
 * (SCRAM-SHA-256-PLUS, tls-server-end-point) negotiation rules, and SCRAM
 * pass-through (a server login from a secret and a client's ClientKey).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "scram.h"
#include "tap.h"

#define CNONCE "rOprNGfwEbeRWgbNEkqO"
#define SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define SALT64 "W22ZaJ0SNY7soEsUEjb6gQ=="
#define SERVER_FIRST "r=" CNONCE SNONCE ",s=" SALT64 ",i=4096"
#define CLIENT_FINAL "c=biws,r=" CNONCE SNONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static void client_role(void)
{
	struct scram_client st;
	const char *reason = NULL;
	char *first = scram_client_first(&st, "user", CNONCE);
	TAP_IS_STR(first, "n,,n=user,r=" CNONCE, "client-first-message");
	char *fin = scram_client_final(&st, "pencil", SERVER_FIRST, strlen(SERVER_FIRST), &reason);
	TAP_IS_STR(fin, CLIENT_FINAL, "client-final-message (proof)");
	tap_ok(scram_client_verify(&st, SERVER_FINAL, strlen(SERVER_FINAL)), "server signature verifies");
	const char *bad = "v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
	tap_ok(!scram_client_verify(&st, bad, strlen(bad)), "wrong server signature is rejected");
	free(first);
	free(fin);
	scram_client_clear(&st);

	/* a server nonce that does not extend ours is an attack */
	const char *evil = "r=someoneelse,s=" SALT64 ",i=4096";
	first = scram_client_first(&st, "", CNONCE);
	fin = scram_client_final(&st, "pencil", evil, strlen(evil), &reason);
	tap_ok(fin == NULL, "server-first with a foreign nonce is rejected");
	free(first);
	scram_client_clear(&st);
}

/* pgtenant logs in to PostgreSQL for every new server connection, with the
 * same salt and iteration count each time: PBKDF2 must run only once. */
static void client_role_cache(void)
{
	uint64_t n0 = scram_pbkdf2_count();
	const char *reason = NULL;
	for (int i = 0; i < 2; i++) {
		struct scram_client st;
		free(scram_client_first(&st, "user", CNONCE));
		char *fin = scram_client_final(&st, "pencil", SERVER_FIRST, strlen(SERVER_FIRST), &reason);
		TAP_IS_STR(fin, CLIENT_FINAL,
		           i == 0 ? "client-role login: RFC 7677 proof"
		                  : "client-role login again: still the RFC 7677 proof");
		free(fin);
		scram_client_clear(&st);
	}
	tap_ok(scram_pbkdf2_count() == n0 + 1, "two client-role logins with one server secret: one PBKDF2");

	/* the key is the whole (password, salt, iterations): no false hit */
	const char *other_iter = "r=" CNONCE SNONCE ",s=" SALT64 ",i=4097";
	const char *inputs[][2] = {{"pencil2", SERVER_FIRST}, {"pencil", other_iter}};
	for (int i = 0; i < 2; i++) {
		struct scram_client st;
		free(scram_client_first(&st, "user", CNONCE));
		char *fin =
		    scram_client_final(&st, inputs[i][0], inputs[i][1], strlen(inputs[i][1]), &reason);
		tap_ok(fin && strcmp(fin, CLIENT_FINAL) != 0 && scram_pbkdf2_count() == n0 + 2 + (uint64_t)i,
		       "another %s is another PBKDF2 and another proof",
		       i == 0 ? "password" : "iteration count");
		free(fin);
		scram_client_clear(&st);
	}
}

static void server_role(void)
{
	uint8_t salt[16];
	int n = scram_b64_decode(SALT64, strlen(SALT64), salt, sizeof(salt));
	tap_ok(n == 16, "salt decodes to 16 bytes");
	struct scram_secret sec;
	tap_ok(scram_secret_from_password("pencil", salt, (size_t)n, 4096, &sec), "secret from password");

	struct scram_server st;
	const char *reason = NULL;
	const char *cf = "n,,n=user,r=" CNONCE;
	char *sf = scram_server_first(&st, cf, strlen(cf), &sec, SNONCE, &reason);
	TAP_IS_STR(sf, SERVER_FIRST, "server-first-message");
	uint8_t ck[SCRAM_KEY_LEN];
	char *v = scram_server_final(&st, CLIENT_FINAL, strlen(CLIENT_FINAL), ck, &reason);
	TAP_IS_STR(v, SERVER_FINAL, "server-final-message (signature)");
	free(sf);
	free(v);
	scram_server_clear(&st);

	/* a wrong proof */
	sf = scram_server_first(&st, cf, strlen(cf), &sec, SNONCE, &reason);
	const char *wrong = "c=biws,r=" CNONCE SNONCE ",p=AAAAZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
	v = scram_server_final(&st, wrong, strlen(wrong), NULL, &reason);
	tap_ok(v == NULL, "wrong proof is rejected (%s)", reason ? reason : "");
	free(sf);
	scram_server_clear(&st);

	/* nonce replaced by the client */
	sf = scram_server_first(&st, cf, strlen(cf), &sec, SNONCE, &reason);
	const char *nonce_swap = "c=biws,r=" CNONCE "xxx,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
	v = scram_server_final(&st, nonce_swap, strlen(nonce_swap), NULL, &reason);
	tap_ok(v == NULL, "changed nonce is rejected");
	free(sf);
	scram_server_clear(&st);

	/* channel binding requested: refused with a reason */
	const char *cb = "p=tls-server-end-point,,n=,r=abc";
	sf = scram_server_first(&st, cb, strlen(cb), &sec, NULL, &reason);
	tap_ok(sf == NULL && reason && strstr(reason, "channel binding"), "channel binding is refused");
	scram_server_clear(&st);

	/* garbage */
	const char *garbage[] = {"", "n", "n,,", "x,,n=,r=a", "n,,r=abc", "n,,n=u,r=", "n,,n=u,r=a,b"};
	for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
		sf = scram_server_first(&st, garbage[i], strlen(garbage[i]), &sec, NULL, &reason);
		if (i == 6) {
			tap_ok(sf != NULL, "extension after the nonce is tolerated");
		} else {
			tap_ok(sf == NULL, "malformed client-first \"%s\" is rejected", garbage[i]);
		}
		free(sf);
		scram_server_clear(&st);
	}
}

/* A client-final for "pencil" against the RFC 7677 salt, computed here from
 * first principles (PBKDF2, HMAC, SHA-256) with the given c= value. */
static char *client_final_with(const char *bare, const char *server_first, const char *cattr)
{
	uint8_t salt[16], salted[32], ck[32], sk[32], sig[32], proof[32];
	unsigned l = 0;
	scram_b64_decode(SALT64, strlen(SALT64), salt, sizeof(salt));
	PKCS5_PBKDF2_HMAC("pencil", 6, salt, 16, 4096, EVP_sha256(), 32, salted);
	HMAC(EVP_sha256(), salted, 32, (const uint8_t *)"Client Key", 10, ck, &l);
	EVP_Digest(ck, 32, sk, NULL, EVP_sha256(), NULL);
	const char *r = strstr(server_first, "r=") + 2;
	size_t rl = (size_t)(strchr(r, ',') - r);
	char without[512], auth[1024];
	snprintf(without, sizeof(without), "c=%s,r=%.*s", cattr, (int)rl, r);
	snprintf(auth, sizeof(auth), "%s,%s,%s", bare, server_first, without);
	HMAC(EVP_sha256(), sk, 32, (const uint8_t *)auth, strlen(auth), sig, &l);
	for (int i = 0; i < 32; i++)
		proof[i] = ck[i] ^ sig[i];
	char p64[64], *out = malloc(600);
	scram_b64_encode(proof, 32, p64);
	snprintf(out, 600, "%s,p=%s", without, p64);
	return out;
}

static void channel_binding(void)
{
	uint8_t salt[16];
	int n = scram_b64_decode(SALT64, strlen(SALT64), salt, sizeof(salt));
	struct scram_secret sec;
	tap_ok(scram_secret_from_password("pencil", salt, (size_t)n, 4096, &sec), "secret from password");
	uint8_t hash[32];
	for (int i = 0; i < 32; i++)
		hash[i] = (uint8_t)(i * 7 + 1);
	struct scram_cbind plus = {.offered = true, .plus = true, .data = hash, .len = 32};
	struct scram_cbind offered = {.offered = true};
	struct scram_cbind none = {0};
	struct scram_server st;
	const char *reason = NULL;

	/* SCRAM-SHA-256-PLUS: c= carries the gs2 header and the certificate hash */
	const char *gs2 = "p=tls-server-end-point,,";
	char cf[128];
	snprintf(cf, sizeof(cf), "%sn=,r=%s", gs2, CNONCE);
	char *sf = scram_server_first_cb(&st, cf, strlen(cf), &sec, SNONCE, &plus, &reason);
	tap_ok(sf != NULL, "-PLUS client-first accepted (%s)", sf ? "" : reason);
	uint8_t cb[64];
	memcpy(cb, gs2, strlen(gs2));
	memcpy(cb + strlen(gs2), hash, 32);
	char c64[128];
	scram_b64_encode(cb, strlen(gs2) + 32, c64);
	char bare[64];
	snprintf(bare, sizeof(bare), "n=,r=%s", CNONCE);
	char *fin = sf ? client_final_with(bare, sf, c64) : NULL;
	char *v = fin ? scram_server_final(&st, fin, strlen(fin), NULL, &reason) : NULL;
	tap_ok(v != NULL && strncmp(v, "v=", 2) == 0, "-PLUS with the right certificate hash logs in");
	free(v);
	free(fin);
	free(sf);
	scram_server_clear(&st);

	/* the same exchange with another certificate's hash (a man in the middle) */
	sf = scram_server_first_cb(&st, cf, strlen(cf), &sec, SNONCE, &plus, &reason);
	cb[strlen(gs2)] ^= 1;
	scram_b64_encode(cb, strlen(gs2) + 32, c64);
	fin = sf ? client_final_with(bare, sf, c64) : NULL;
	v = fin ? scram_server_final(&st, fin, strlen(fin), NULL, &reason) : NULL;
	tap_ok(sf && !v, "-PLUS with a different certificate hash is refused");
	free(fin);
	free(sf);
	scram_server_clear(&st);

	/* negotiation */
	const char *y = "y,,n=,r=abc", *nn = "n,,n=,r=abc", *unique = "p=tls-unique,,n=,r=abc";
	sf = scram_server_first_cb(&st, y, strlen(y), &sec, NULL, &offered, &reason);
	tap_ok(!sf && st.negotiation_error, "\"y\" while -PLUS was offered: negotiation error (downgrade)");
	scram_server_clear(&st);
	sf = scram_server_first_cb(&st, y, strlen(y), &sec, NULL, &none, &reason);
	tap_ok(sf != NULL, "\"y\" without TLS is fine");
	free(sf);
	scram_server_clear(&st);
	sf = scram_server_first_cb(&st, nn, strlen(nn), &sec, NULL, &offered, &reason);
	tap_ok(sf != NULL, "\"n\" with -PLUS offered is fine (client without channel binding)");
	free(sf);
	scram_server_clear(&st);
	sf = scram_server_first_cb(&st, nn, strlen(nn), &sec, NULL, &plus, &reason);
	tap_ok(!sf && !st.negotiation_error, "-PLUS chosen but \"n\": refused");
	scram_server_clear(&st);
	sf = scram_server_first_cb(&st, unique, strlen(unique), &sec, NULL, &plus, &reason);
	tap_ok(!sf && reason && strstr(reason, "tls-server-end-point"), "tls-unique is not offered");
	scram_server_clear(&st);
	sf = scram_server_first_cb(&st, cf, strlen(cf), &sec, NULL, &offered, &reason);
	tap_ok(!sf, "channel binding data with plain SCRAM-SHA-256: refused");
	scram_server_clear(&st);
}

static void secrets(void)
{
	/* the secret PostgreSQL would store for "pencil" with this salt */
	uint8_t salt[16];
	int n = scram_b64_decode(SALT64, strlen(SALT64), salt, sizeof(salt));
	struct scram_secret a, b;
	tap_ok(scram_secret_from_password("pencil", salt, (size_t)n, 4096, &a), "derive");
	char sk[64], svk[64];
	scram_b64_encode(a.stored_key, SCRAM_KEY_LEN, sk);
	scram_b64_encode(a.server_key, SCRAM_KEY_LEN, svk);
	char text[256];
	snprintf(text, sizeof(text), "SCRAM-SHA-256$4096:%s$%s:%s", SALT64, sk, svk);
	tap_ok(scram_parse_secret(text, &b), "parse stored secret");
	tap_ok(b.iterations == 4096 && b.salt_len == 16 && memcmp(a.stored_key, b.stored_key, 32) == 0 &&
	           memcmp(a.server_key, b.server_key, 32) == 0,
	       "parsed secret equals the derived one");
	tap_ok(!scram_parse_secret("SCRAM-SHA-256$4096:abc", &b), "truncated secret is rejected");
	tap_ok(!scram_parse_secret("SCRAM-SHA-256$x:" SALT64 "$a:b", &b), "bad iteration count is rejected");
	tap_ok(!scram_parse_secret("md5abc", &b), "md5 hash is not a SCRAM secret");
}

/* secrets PostgreSQL 15 stored for CREATE ROLE ... PASSWORD 'IX-\u2168' (ROMAN
 * NUMERAL NINE, NFKC "IX") and 'a\u00a0b\u00adc' (NO-BREAK SPACE maps to a
 * space, SOFT HYPHEN to nothing) */
#define PG_SECRET_IX                                                                                         \
	"SCRAM-SHA-256$4096:LYosZMz2PJN/+wEqzaJ0QQ==$PUhp3NnYcYYjkvSWgwQ4LHmSvdNuoyBbpahI4WdeHDo=:m+kh1/"    \
	"VwLB27pKQDVvmwxCcHxeeQ1TN68GSUCee78W0="
#define PG_SECRET_NBSP                                                                                       \
	"SCRAM-SHA-256$4096:ri7XuavL2O5NP4a3UiUyQA==$2oGRr+bnHV7JL9tK+JTIc7mvgTqn4h9NrBWtkvZPqe8=:"          \
	"wPejMpTJ1Uz3L0yfj90NCENVkGIztXuV20gRPbUHZ1A="

static bool derives(const char *password, const char *pg_secret)
{
	struct scram_secret want, got;
	if (!scram_parse_secret(pg_secret, &want) ||
	    !scram_secret_from_password(password, want.salt, want.salt_len, want.iterations, &got))
		return false;
	return memcmp(want.stored_key, got.stored_key, SCRAM_KEY_LEN) == 0 &&
	       memcmp(want.server_key, got.server_key, SCRAM_KEY_LEN) == 0;
}

static void saslprep(void)
{
	static const struct {
		const char *in, *want, *name;
	} cases[] = {
	    {"pencil", "pencil", "ASCII is left as is"},
	    {"a\x07"
	     "b",
	     "a\x07"
	     "b",
	     "ASCII with a control character is left as is (PostgreSQL skips ASCII)"},
	    {"IX-\xe2\x85\xa8", "IX-IX", "U+2168 is normalised (NFKC) to IX"},
	    {"a\xc2\xa0"
	     "b\xc2\xad"
	     "c",
	     "a bc", "non-ASCII space maps to space, soft hyphen to nothing"},
	    {"\xef\xac\x81", "fi", "ligature U+FB01 is normalised"},
	    {"\xc2\xad", "\xc2\xad", "an empty result keeps the raw password"},
	    {"a\xc2\x85"
	     "b",
	     "a\xc2\x85"
	     "b",
	     "a prohibited character (U+0085) keeps the raw password"},
	    {"a\xf3\xa0\x80\x81"
	     "b",
	     "a\xf3\xa0\x80\x81"
	     "b",
	     "a prohibited tag character keeps the raw password"},
	    {"x\xe0\xa1\x80", "x\xe0\xa1\x80",
	     "an unassigned code point (in Unicode 3.2) keeps the raw password"},
	    {"\xd7\x90"
	     "a",
	     "\xd7\x90"
	     "a",
	     "RandALCat next to LCat (bidi) keeps the raw password"},
	    {"\xff\xfe", "\xff\xfe", "invalid UTF-8 keeps the raw password"},
	    {"\xc0\xaf", "\xc0\xaf", "overlong UTF-8 keeps the raw password"},
	    {"\xed\xa0\x80", "\xed\xa0\x80", "a UTF-8 surrogate keeps the raw password"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *got = scram_saslprep(cases[i].in);
		TAP_IS_STR(got, cases[i].want, cases[i].name);
		free(got);
	}
	tap_ok(derives("IX-\xe2\x85\xa8", PG_SECRET_IX), "keys of IX-U+2168 equal PostgreSQL's");
	tap_ok(derives("IX-IX", PG_SECRET_IX), "keys of IX-IX equal PostgreSQL's for IX-U+2168");
	tap_ok(derives("a\xc2\xa0"
	               "b\xc2\xad"
	               "c",
	               PG_SECRET_NBSP),
	       "keys of a<NBSP>b<SHY>c equal PostgreSQL's");

	/* the client role (pgtenant logging in to the server) SASLpreps too */
	struct scram_secret sec;
	tap_ok(scram_parse_secret(PG_SECRET_IX, &sec), "parse PostgreSQL's secret");
	struct scram_server srv;
	struct scram_client cli;
	const char *reason = NULL;
	char *first = scram_client_first(&cli, "", NULL);
	char *sf = scram_server_first(&srv, first, strlen(first), &sec, NULL, &reason);
	char *fin = sf ? scram_client_final(&cli, "IX-\xe2\x85\xa8", sf, strlen(sf), &reason) : NULL;
	char *v = fin ? scram_server_final(&srv, fin, strlen(fin), NULL, &reason) : NULL;
	tap_ok(v != NULL, "client role with IX-U+2168 logs in against PostgreSQL's secret (%s)",
	       v ? "ok" : reason);
	tap_ok(v && scram_client_verify(&cli, v, strlen(v)), "and verifies the server's signature");
	free(first);
	free(sf);
	free(fin);
	free(v);
	scram_server_clear(&srv);
	scram_client_clear(&cli);
}

/* SCRAM pass-through: a client logs in to the server role with its
 * password; the ClientKey recovered from its proof, with the secret, logs
 * in again to a second exchange (a server login) without the password.  A
 * secret of another salt is refused before anything is sent. */
static void passthrough(void)
{
	struct scram_secret sec;
	const uint8_t salt[SCRAM_SALT_LEN] = "0123456789abcdef";
	tap_ok(scram_secret_from_password("pass-through", salt, sizeof(salt), 4096, &sec), "secret");
	struct scram_server srv;
	struct scram_client cli;
	const char *reason = NULL;
	uint8_t ck[SCRAM_KEY_LEN];
	char *first = scram_client_first(&cli, "", NULL);
	char *sf = scram_server_first(&srv, first, strlen(first), &sec, NULL, &reason);
	char *fin = scram_client_final(&cli, "pass-through", sf, strlen(sf), &reason);
	char *v = scram_server_final(&srv, fin, strlen(fin), ck, &reason);
	tap_ok(v != NULL, "the client's own login");
	free(first), free(sf), free(fin), free(v);
	scram_server_clear(&srv);
	scram_client_clear(&cli);

	/* the second exchange: pgtenant, holding only sec and ck */
	first = scram_client_first(&cli, "", NULL);
	sf = scram_server_first(&srv, first, strlen(first), &sec, NULL, &reason);
	fin = scram_client_final_passthrough(&cli, &sec, ck, sf, strlen(sf), &reason);
	v = fin ? scram_server_final(&srv, fin, strlen(fin), NULL, &reason) : NULL;
	tap_ok(v != NULL, "pass-through proof accepted by the server role (%s)", v ? "ok" : reason);
	tap_ok(v && scram_client_verify(&cli, v, strlen(v)),
	       "and the server's signature checks with ServerKey");
	free(first), free(sf), free(fin), free(v);
	scram_server_clear(&srv);
	scram_client_clear(&cli);

	/* a wrong ClientKey is a wrong proof */
	ck[0] ^= 1;
	first = scram_client_first(&cli, "", NULL);
	sf = scram_server_first(&srv, first, strlen(first), &sec, NULL, &reason);
	fin = scram_client_final_passthrough(&cli, &sec, ck, sf, strlen(sf), &reason);
	v = fin ? scram_server_final(&srv, fin, strlen(fin), NULL, &reason) : NULL;
	tap_ok(fin && !v, "a flipped ClientKey bit is refused by the server");
	free(first), free(sf), free(fin), free(v);
	scram_server_clear(&srv);
	scram_client_clear(&cli);

	/* the server holds another secret (another salt): refused at once */
	struct scram_secret other;
	const uint8_t salt2[SCRAM_SALT_LEN] = "fedcba9876543210";
	tap_ok(scram_secret_from_password("pass-through", salt2, sizeof(salt2), 4096, &other), "other");
	first = scram_client_first(&cli, "", NULL);
	sf = scram_server_first(&srv, first, strlen(first), &other, NULL, &reason);
	reason = NULL;
	fin = scram_client_final_passthrough(&cli, &sec, ck, sf, strlen(sf), &reason);
	tap_ok(!fin && reason && strstr(reason, "not the one auth_query returned"),
	       "a server secret of another salt is refused before a proof is sent");
	free(first), free(sf), free(fin);
	scram_server_clear(&srv);
	scram_client_clear(&cli);
}

static void md5(void)
{
	char h[36], out[36];
	/* what PostgreSQL stores in pg_authid for user md5user, password md5pass */
	pg_md5_hash("md5pass", "md5user", h);
	TAP_IS_STR(h, "md57541d4e65fae11bd07f18dc6fe2b02bc", "md5 password hash matches PostgreSQL's");
	const uint8_t salt[4] = {1, 2, 3, 4};
	pg_md5_salted(h, salt, out);
	TAP_IS_STR(out, "md5b5dfd8fbdd6fc9174cc8e85dfa598fa2", "salted md5 response");
}

int main(void)
{
	client_role_cache(); /* first: the cache is empty */
	client_role();
	server_role();
	channel_binding();
	secrets();
	saslprep();
	passthrough();
	md5();
	return tap_done();
}
