/*
 * fuzz_scram: SCRAM-SHA-256 messages from both peers.  The first byte
 * picks the role, the rest is one or two messages separated by '\n' (a
 * SCRAM message never holds one):
 *   0, 1  server role: client-first-message then client-final-message
 *         (scram_server_first_cb, channel binding offered when the byte is
 *         1, then scram_server_final) against the RFC 7677 example secret;
 *   2     client role: server-first-message then server-final-message
 *         (scram_client_final_passthrough, scram_client_final when the
 *         iteration count is small, scram_client_verify) with the RFC 7677
 *         client nonce;
 *   3     a stored secret (scram_parse_secret, as auth_file and auth_query
 *         give them), then base64 decoding and SASLprep of the same bytes.
 * PBKDF2 runs only for iteration counts up to 64 here: a server that names
 * 100 million costs seconds by design, which is not what is fuzzed.
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "scram.h"

static struct scram_secret secret;
static const char client_nonce[] = "rOprNGfwEbeRWgbNEkqO";
static const char server_nonce[] = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
static const uint8_t cbind_data[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
                                       17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	uint8_t salt[16];
	if (scram_b64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt, sizeof(salt)) != 16 ||
	    !scram_secret_from_password("pencil", salt, 16, 4096, &secret))
		abort();
	return 0;
}

/* Every i= of a server-first is digits only and at most 64. */
static bool cheap_iterations(const char *m, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++) {
		if ((i == 0 || m[i - 1] == ',') && m[i] == 'i' && m[i + 1] == '=') {
			size_t j = i + 2, v = 0;
			while (j < n && m[j] != ',') {
				if (!isdigit((unsigned char)m[j]) || (v = v * 10 + (size_t)(m[j] - '0')) > 64)
					return false;
				j++;
			}
		}
	}
	return true;
}

static void server_role(const char *first, size_t fl, const char *final, size_t nl, bool offer)
{
	struct scram_server st;
	memset(&st, 0, sizeof(st));
	struct scram_cbind cb = {offer, offer && fl > 0 && first[0] == 'p', cbind_data, sizeof(cbind_data)};
	const char *reason = NULL;
	char *sf = scram_server_first_cb(&st, first, fl, &secret, server_nonce, &cb, &reason);
	if (sf) {
		uint8_t ck[SCRAM_KEY_LEN];
		char *fin = scram_server_final(&st, final, nl, ck, &reason);
		free(fin);
		free(sf);
	} else if (!reason) {
		abort(); /* a refusal says why */
	}
	scram_server_clear(&st);
}

static void client_role(const char *first, size_t fl, const char *final, size_t nl)
{
	struct scram_client st;
	memset(&st, 0, sizeof(st));
	char *cf = scram_client_first(&st, "", client_nonce);
	const char *reason = NULL;
	uint8_t ck[SCRAM_KEY_LEN] = {0};
	char *out = scram_client_final_passthrough(&st, &secret, ck, first, fl, &reason);
	if (out)
		(void)scram_client_verify(&st, final, nl);
	free(out);
	if (cheap_iterations(first, fl)) {
		out = scram_client_final(&st, "pencil", first, fl, &reason);
		if (out)
			(void)scram_client_verify(&st, final, nl);
		free(out);
	}
	free(cf);
	scram_client_clear(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0] & 3;
	const uint8_t *p = data + 1, *end = data + size, *a, *b;
	size_t al = fuzz_field(&p, end, '\n', &a);
	size_t bl = fuzz_field(&p, end, '\n', &b);
	/* exact copies: a parser that reads past its length is seen by ASan */
	char *first = malloc(al ? al : 1), *final = malloc(bl ? bl : 1);
	if (!first || !final)
		abort();
	memcpy(first, a, al);
	memcpy(final, b, bl);
	switch (mode) {
	case 0:
	case 1:
		server_role(first, al, final, bl, mode == 1);
		break;
	case 2:
		client_role(first, al, final, bl);
		break;
	default: {
		char *s = fuzz_strndup(data + 1, size - 1);
		struct scram_secret sec;
		if (scram_parse_secret(s, &sec) && (sec.iterations < 1 || sec.salt_len > sizeof(sec.salt)))
			abort();
		uint8_t buf[512];
		size_t n = size - 1 < 600 ? size - 1 : 600;
		int got = scram_b64_decode(s, n, buf, sizeof(buf));
		if (got > (int)sizeof(buf))
			abort();
		if (got >= 0) {
			char enc[700];
			scram_b64_encode(buf, (size_t)got, enc);
		}
		char *prep = scram_saslprep(s);
		free(prep);
		free(s);
		break;
	}
	}
	free(first);
	free(final);
	return 0;
}
