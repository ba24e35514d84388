/*
 * PgBouncer-compatible auth_file reader (see userlist.h for the format), and
 * the SCRAM secret each entry (or a missing one) stands for.
 */
#include "userlist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "log.h"
#include "scram.h"

static bool is_scram_secret(const char *pw)
{
	return strncmp(pw, "SCRAM-SHA-256$", 14) == 0;
}

/* the test auth.c uses to choose md5 */
static bool is_md5_hash(const char *pw)
{
	return strncmp(pw, "md5", 3) == 0 && strlen(pw) == 35;
}

/* Read one quoted field starting at *pp; returns malloc'd value or NULL. */
static char *read_field(const char **pp, char *err, size_t errlen)
{
	const char *p = *pp;
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p != '"') {
		snprintf(err, errlen, "expected a double-quoted field");
		return NULL;
	}
	p++;
	size_t cap = 64, n = 0;
	char *out = xmalloc(cap);
	for (;;) {
		if (*p == '\0' || *p == '\n') {
			free(out);
			snprintf(err, errlen, "unterminated double-quoted field");
			return NULL;
		}
		if (*p == '"') {
			if (p[1] == '"') {
				p++;
			} else {
				p++;
				break;
			}
		}
		if (n + 1 >= cap)
			out = xrealloc(out, cap *= 2);
		out[n++] = *p++;
	}
	out[n] = '\0';
	*pp = p;
	return out;
}

bool userlist_parse(const char *text, struct pgt_userlist *out, int *errline, char *err, size_t errlen)
{
	out->users = NULL;
	out->n = 0;
	int cap = 0, line = 0;
	const char *p = text;
	while (*p) {
		line++;
		const char *eol = strchr(p, '\n');
		const char *next = eol ? eol + 1 : p + strlen(p);
		const char *q = p;
		while (*q == ' ' || *q == '\t' || *q == '\r')
			q++;
		if (*q == '\n' || *q == '\0' || *q == ';' || *q == '#') {
			p = next;
			continue;
		}
		char *user = read_field(&q, err, errlen);
		if (!user)
			goto fail;
		char *pass = read_field(&q, err, errlen);
		if (!pass) {
			free(user);
			goto fail;
		}
		while (*q == ' ' || *q == '\t' || *q == '\r')
			q++;
		if (*q != '\n' && *q != '\0') {
			free(user);
			free(pass);
			snprintf(err, errlen, "unexpected text after the password field");
			goto fail;
		}
		if (!*user) {
			free(user);
			free(pass);
			snprintf(err, errlen, "empty user name");
			goto fail;
		}
		if (out->n == cap)
			out->users =
			    xrealloc(out->users, sizeof(*out->users) * (size_t)(cap = cap ? cap * 2 : 8));
		out->users[out->n].name = user;
		out->users[out->n].password = pass;
		out->users[out->n].scram = is_scram_secret(pass) || is_md5_hash(pass)
		                               ? NULL
		                               : xcalloc(1, sizeof(struct scram_secret));
		out->n++;
		p = next;
	}
	return true;
fail:
	*errline = line;
	userlist_free(out);
	return false;
}

bool userlist_load(const char *path, struct pgt_userlist *out, int *errline, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		*errline = 0;
		snprintf(err, errlen, "cannot open auth_file %s: %s", path, strerror(errno));
		return false;
	}
	size_t cap = 4096, n = 0;
	char *buf = xmalloc(cap);
	size_t r;
	while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
		n += r;
		if (cap - n - 1 == 0)
			buf = xrealloc(buf, cap *= 2);
	}
	fclose(f);
	buf[n] = '\0';
	bool ok = userlist_parse(buf, out, errline, err, errlen);
	free(buf);
	return ok;
}

void userlist_free(struct pgt_userlist *ul)
{
	for (int i = 0; i < ul->n; i++) {
		free(ul->users[i].name);
		/* passwords are secrets: do not leave them in freed memory */
		size_t l = strlen(ul->users[i].password);
		OPENSSL_cleanse(ul->users[i].password, l);
		free(ul->users[i].password);
		if (ul->users[i].scram) {
			OPENSSL_cleanse(ul->users[i].scram, sizeof(struct scram_secret));
			free(ul->users[i].scram);
		}
	}
	free(ul->users);
	ul->users = NULL;
	ul->n = 0;
}

const struct pgt_user *userlist_find(const struct pgt_userlist *ul, const char *name)
{
	if (!ul)
		return NULL;
	for (int i = 0; i < ul->n; i++)
		if (strcmp(ul->users[i].name, name) == 0)
			return &ul->users[i];
	return NULL;
}

bool userlist_scram_secret(const struct pgt_userlist *ul, const char *name, struct scram_secret *out)
{
	const struct pgt_user *u = userlist_find(ul, name);
	if (u && u->scram) {
		if (u->scram->iterations == 0) {
			/* a random salt, as PostgreSQL's CREATE ROLE ... PASSWORD makes */
			uint8_t salt[SCRAM_SALT_LEN];
			if (!util_random(salt, sizeof(salt)) ||
			    !scram_secret_from_password(u->password, salt, sizeof(salt), SCRAM_DEFAULT_ITER,
			                                u->scram))
				return false;
		}
		*out = *u->scram;
		return true;
	}
	if (u && is_scram_secret(u->password)) {
		if (scram_parse_secret(u->password, out))
			return true;
		log_warning("auth_file: invalid SCRAM secret for user \"%s\"", name);
	}
	return scram_mock_secret(name, out);
}
