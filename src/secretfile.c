/*
 * Backend passwords from files: server_password_file, or an entry's
 * password_file=, typically a secret mounted by the Secrets Store CSI driver
 * or a Kubernetes Secret volume.  The file is either a JSON object with
 * "password" and optionally "username" (AWS Secrets Manager's format; its
 * other keys, engine/host/port/dbname, are ignored), or a password on its
 * first line.
 *
 * The registry below keeps, per file named by the config, the last good
 * value and the identity (device, inode, size, mtime) of what was read.  A
 * file is read when a server login first needs it, again on every reload,
 * when the janitor's stat() (at most once a second) finds it changed, and
 * when a server refuses the password with 28P01 (server.c retries that
 * login once if the secret changed).  A rename over the file and
 * Kubernetes' atomic `..data` symlink swap both change the inode that stat()
 * follows the path to.  A read that fails (missing, empty, half-written,
 * not parsable) is logged with the file's name and never its contents, and
 * the previous good value stays in use.  Reading is synchronous: these are
 * small local files, and more than SECRETFILE_MAX bytes is refused.
 *
 * Memory that held a secret is cleansed before it is freed, jansson's
 * included (its allocator is set to one that cleanses, process-wide: JWTs
 * are secrets as well).
 */
#include "secretfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "config.h"
#include "log.h"

/* ---- parsing ---- */

static void json_cleansing(void)
{
	util_json_cleansing();
}

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n';
}

/* The JSON object's "password" and "username". */
static bool parse_json(const json_t *root, struct pgt_secret *out, char *err, size_t errlen)
{
	const json_t *pw = json_object_get(root, "password");
	if (!json_is_string(pw) || json_string_length(pw) == 0) {
		snprintf(err, errlen, "the JSON object has no non-empty \"password\" string");
		return false;
	}
	if (strlen(json_string_value(pw)) != json_string_length(pw)) {
		snprintf(err, errlen, "the \"password\" contains a NUL character");
		return false;
	}
	const json_t *user = json_object_get(root, "username");
	if (user && !json_is_null(user)) {
		if (!json_is_string(user) || !config_role_name_valid(json_string_value(user)) ||
		    strlen(json_string_value(user)) != json_string_length(user)) {
			snprintf(err, errlen,
			         "the \"username\" is not a valid role name (a string of at most 63 bytes, "
			         "no quotes, blanks or control characters)");
			return false;
		}
		out->username = xstrdup(json_string_value(user));
	}
	out->password = xstrdup(json_string_value(pw));
	return true;
}

bool secretfile_parse(const char *buf, size_t len, struct pgt_secret *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (len > SECRETFILE_MAX) {
		snprintf(err, errlen, "larger than %d KiB", SECRETFILE_MAX / 1024);
		return false;
	}
	size_t i = 0;
	while (i < len && is_blank(buf[i]))
		i++;
	if (i == len) {
		snprintf(err, errlen, "empty");
		return false;
	}
	const char *nl = memchr(buf, '\n', len);
	size_t line = nl ? (size_t)(nl - buf) : len;
	if (buf[i] == '{') {
		json_cleansing();
		json_error_t je;
		json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
		if (root) {
			bool ok = parse_json(root, out, err, errlen);
			json_decref(root);
			if (!ok)
				secretfile_clear(out);
			return ok;
		}
		/* a brace first is JSON, never a password: a half-written file
		 * must not become one (je.text may quote the contents: not
		 * logged) */
		snprintf(err, errlen, "not valid JSON (line %d, column %d)", je.line, je.column);
		return false;
	}
	if (line > 0 && buf[line - 1] == '\r')
		line--;
	if (line == 0) {
		snprintf(err, errlen, "the first line is empty");
		return false;
	}
	if (memchr(buf, '\0', line)) {
		snprintf(err, errlen, "the first line contains a NUL byte");
		return false;
	}
	out->password = malloc(line + 1);
	if (!out->password) {
		snprintf(err, errlen, "out of memory");
		return false;
	}
	memcpy(out->password, buf, line);
	out->password[line] = '\0';
	return true;
}

void secretfile_clear(struct pgt_secret *s)
{
	if (s->password) {
		OPENSSL_cleanse(s->password, strlen(s->password));
		free(s->password);
	}
	free(s->username);
	memset(s, 0, sizeof(*s));
}

/* What a file looked like when it was read (or tried). */
struct file_id {
	bool set;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
};

static struct file_id file_id_from(const struct stat *st)
{
	struct file_id f = {true, st->st_dev, st->st_ino, st->st_size, st->st_mtim, st->st_ctim};
	return f;
}

static struct file_id file_id_of(const char *path)
{
	struct stat st;
	struct file_id none = {0};
	return stat(path, &st) == 0 ? file_id_from(&st) : none;
}

static bool same_file(const struct file_id *a, const struct file_id *b)
{
	return a->set == b->set && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec &&
	       a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Read and parse path; *id receives the identity of what was read. */
static bool read_file(const char *path, struct pgt_secret *out, struct file_id *id, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (id)
		*id = file_id_of(path);
	/* O_NONBLOCK: a FIFO put there by mistake must not hang the loop */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		snprintf(err, errlen, "cannot open: %s", strerror(errno));
		return false;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "not a regular file");
		close(fd);
		return false;
	}
	if (id)
		*id = file_id_from(&st);
	if (st.st_size > SECRETFILE_MAX) {
		snprintf(err, errlen, "larger than %d KiB", SECRETFILE_MAX / 1024);
		close(fd);
		return false;
	}
	char *buf = malloc(SECRETFILE_MAX + 1);
	if (!buf) {
		snprintf(err, errlen, "out of memory");
		close(fd);
		return false;
	}
	size_t n = 0;
	bool ok = true;
	while (n < SECRETFILE_MAX + 1) {
		ssize_t r = read(fd, buf + n, SECRETFILE_MAX + 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			snprintf(err, errlen, "cannot read: %s", strerror(errno));
			ok = false;
			break;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	if (ok)
		ok = secretfile_parse(buf, n, out, err, errlen);
	OPENSSL_cleanse(buf, n);
	free(buf);
	return ok;
}

bool secretfile_read(const char *path, struct pgt_secret *out, char *err, size_t errlen)
{
	return read_file(path, out, NULL, err, errlen);
}

char *secretfile_resolve(const char *cfgpath, const char *path)
{
	const char *slash = cfgpath ? strrchr(cfgpath, '/') : NULL;
	if (path[0] == '/' || !slash)
		return xstrdup(path);
	return xasprintf("%.*s/%s", (int)(slash - cfgpath), cfgpath, path);
}

const char *secretfile_name(const struct pgt_config *cfg, const struct pgt_database *db)
{
	if (db->password_file && db->password_file[0])
		return db->password_file;
	return cfg->server_password_file[0] ? cfg->server_password_file : NULL;
}

/* ---- the files in use ---- */

struct secret_entry {
	struct secret_entry *next;
	char *name;            /* as configured */
	char *path;            /* resolved against the config file's directory */
	struct file_id id;     /* of what was last read or tried */
	struct pgt_secret cur; /* the last good value; version 0 = none yet */
};

static struct secret_entry *entries;
static uint64_t versions; /* the last version handed out: a value never gets an old one back */
static usec_t last_watch;
#define SECRETFILE_WATCH (USEC_PER_SEC * 9 / 10)

static bool str_eq(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static void entry_load(struct secret_entry *e, const char *why)
{
	struct pgt_secret v;
	char err[256];
	if (!read_file(e->path, &v, &e->id, err, sizeof(err))) {
		log_error("password file %s (%s): %s; %s", e->path, why, err,
		          e->cur.version ? "keeping the previous password" : "no password from it yet");
		return;
	}
	if (e->cur.version && str_eq(v.password, e->cur.password) && str_eq(v.username, e->cur.username)) {
		secretfile_clear(&v);
		log_info("password file %s re-read (%s): unchanged", e->path, why);
		return;
	}
	bool first = e->cur.version == 0;
	bool user_changed = !first && !str_eq(v.username, e->cur.username);
	bool pw_changed = !first && !str_eq(v.password, e->cur.password);
	secretfile_clear(&e->cur);
	e->cur = v;
	e->cur.version = ++versions;
	if (first)
		log_info("password file %s read (%s)%s", e->path, why,
		         v.username ? ": password and username" : ": password");
	else
		log_info("password file %s re-read (%s): %s%s%s changed", e->path, why,
		         pw_changed ? "password" : "", pw_changed && user_changed ? " and " : "",
		         user_changed ? "username" : "");
}

static void entry_free(struct secret_entry *e)
{
	secretfile_clear(&e->cur);
	free(e->name);
	free(e->path);
	free(e);
}

static struct secret_entry *entry_of(const struct pgt_config *cfg, const struct pgt_database *db)
{
	const char *name = secretfile_name(cfg, db);
	if (!name)
		return NULL;
	for (struct secret_entry *e = entries; e; e = e->next)
		if (strcmp(e->name, name) == 0)
			return e;
	struct secret_entry *e = xcalloc(1, sizeof(*e));
	e->name = xstrdup(name);
	e->path = secretfile_resolve(cfg->path, name);
	e->next = entries;
	entries = e;
	entry_load(e, "first use");
	return e;
}

const struct pgt_secret *secretfile_get(const struct pgt_config *cfg, const struct pgt_database *db)
{
	struct secret_entry *e = entry_of(cfg, db);
	return e && e->cur.version ? &e->cur : NULL;
}

const char *secretfile_db_user(const struct pgt_config *cfg, const struct pgt_database *db)
{
	const struct pgt_secret *s = secretfile_get(cfg, db);
	return s && s->username ? s->username : db->user;
}

const struct pgt_secret *secretfile_reread(const struct pgt_config *cfg, const struct pgt_database *db)
{
	struct secret_entry *e = entry_of(cfg, db);
	if (!e)
		return NULL;
	entry_load(e, "the server refused the password");
	return e->cur.version ? &e->cur : NULL;
}

void secretfile_watch(usec_t now)
{
	/* (a little under a second: the janitor's idle rounds are a second
	 * apart, and one that comes a hair early must not make it two) */
	if (!entries || now - last_watch < SECRETFILE_WATCH)
		return;
	last_watch = now;
	for (struct secret_entry *e = entries; e; e = e->next) {
		struct file_id id = file_id_of(e->path);
		if (!same_file(&id, &e->id))
			entry_load(e, "the file changed");
	}
}

void secretfile_config_changed(const struct pgt_config *cfg)
{
	struct secret_entry **pp = &entries;
	while (*pp) {
		struct secret_entry *e = *pp;
		bool named = cfg->server_password_file[0] && strcmp(cfg->server_password_file, e->name) == 0;
		for (int i = 0; !named && i < cfg->ndbs; i++)
			named = cfg->dbs[i].password_file && strcmp(cfg->dbs[i].password_file, e->name) == 0;
		if (!named) {
			/* (a pool of a removed entry that still needs it reads it again) */
			*pp = e->next;
			entry_free(e);
			continue;
		}
		entry_load(e, "reload");
		pp = &e->next;
	}
}

void secretfile_shutdown(void)
{
	while (entries) {
		struct secret_entry *e = entries;
		entries = e->next;
		entry_free(e);
	}
}
