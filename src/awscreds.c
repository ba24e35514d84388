/*
 * The AWS credential chain and the IAM token cache (see awscreds.h).
 *
 * One set of credentials is in force at a time (`cur`), with the source it
 * came from.  The static sources (environment, files) are read
 * synchronously (a small local file); the network ones run one request at
 * a time through evhttp on pgt.base: the container endpoint is one GET,
 * IMDSv2 is PUT /latest/api/token, GET .../security-credentials/ (the role
 * name), GET .../security-credentials/ROLE (the JSON).  A `generation`
 * counts credential changes, so that cached tokens made with older ones
 * are made again.
 *
 * Timers: `refresh_ev` fires when fetched credentials are due for renewal
 * (or a failed renewal is retried); logins never wait for a renewal while
 * the credentials in force are still valid.
 */
#include "awscreds.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <ini.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "loop.h"
#include "rdstoken.h"
#include "util.h"

#define CONTAINER_HOST "169.254.170.2"
#define IMDS_DEFAULT "http://169.254.169.254"
#define IMDS_DEFAULT_V6 "http://[fd00:ec2::254]"
#define IMDS_TOKEN_TTL "21600"
#define CONTAINER_TIMEOUT_S 2 /* botocore's ContainerMetadataFetcher */
#define IMDS_TIMEOUT_S 1      /* botocore's default AWS_METADATA_SERVICE_TIMEOUT */
#define MAX_BODY 65536
#define REFRESH_AHEAD 300 /* seconds before expiry that a refresh starts */
#define EXPIRY_MARGIN 5   /* seconds: credentials this close to expiry make no new token */
#define RETRY_MIN 1       /* seconds; doubled after each failure */
#define RETRY_MAX 60
#define TOKEN_CACHE_MAX 128 /* (host, port, user, region) combinations kept */

uint64_t awscreds_refreshes, awscreds_failures;

enum source { SRC_NONE = 0, SRC_ENV, SRC_FILE, SRC_CONTAINER, SRC_IMDS };
static const char *const source_names[] = {"none", "the environment", "the shared credentials file",
                                           "the container credentials endpoint",
                                           "the EC2 instance metadata service"};

struct creds {
	char *akid, *secret, *session; /* session NULL = none */
	time_t expiration;             /* 0 = does not expire */
	time_t obtained;
	enum source src;
};

static struct creds cur;
static uint64_t generation;
static bool static_loaded; /* env and files read since startup / the last RELOAD */
static struct awscreds_waiter *waiters;

/* the fetch in flight (one at a time) */
enum step { ST_IDLE = 0, ST_CONTAINER, ST_IMDS_TOKEN, ST_IMDS_ROLE, ST_IMDS_CREDS };
static struct {
	enum step step;
	struct evhttp_connection *conn;
	char *imds_base;  /* without a trailing '/' */
	char *imds_token; /* NULL = IMDSv1 (the endpoint refused to give one) */
	char *role;
	enum source src;
} fx;

static char last_error[256]; /* why the last fetch failed */
static time_t retry_at;      /* no new fetch for a login before this after a failure */
static int retry_delay;
static struct event *refresh_ev;
static SSL_CTX *ssl_ctx;

/* ---- secrets ---- */

static void secret_free(char *s)
{
	if (s) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

static void creds_clear(struct creds *c)
{
	secret_free(c->akid);
	secret_free(c->secret);
	secret_free(c->session);
	memset(c, 0, sizeof(*c));
}

/* jansson's memory holds secrets too (the parsed credential documents) */
static void init_once(void)
{
	util_json_cleansing();
}

/* ---- the token cache ---- */

struct token_entry {
	char *host, *user, *region;
	int port;
	char *token;
	time_t made;
	uint64_t generation;
};

static struct token_entry tokens[TOKEN_CACHE_MAX];
static int ntokens;

static void token_entry_free(struct token_entry *e)
{
	free(e->host);
	free(e->user);
	free(e->region);
	rdstoken_free(e->token);
	memset(e, 0, sizeof(*e));
}

static void tokens_clear(void)
{
	for (int i = 0; i < ntokens; i++)
		token_entry_free(&tokens[i]);
	ntokens = 0;
}

/* ---- waiters ---- */

static void wake_waiters(const char *error)
{
	/* off the list before any is called: a callback may close another */
	struct awscreds_waiter *w = waiters;
	waiters = NULL;
	for (struct awscreds_waiter *i = w; i; i = i->next)
		i->waiting = false;
	while (w) {
		struct awscreds_waiter *next = w->next;
		w->next = NULL;
		w->done(w, error);
		w = next;
	}
}

void awscreds_unwait(struct awscreds_waiter *w)
{
	if (!w || !w->waiting)
		return;
	for (struct awscreds_waiter **p = &waiters; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			break;
		}
	w->waiting = false;
	w->next = NULL;
}

/* ---- credentials in force ---- */

static bool creds_usable(time_t now)
{
	return cur.akid && (!cur.expiration || now + EXPIRY_MARGIN < cur.expiration);
}

static void set_creds(struct creds *c)
{
	bool same = cur.akid && strcmp(cur.akid, c->akid) == 0 && strcmp(cur.secret, c->secret) == 0 &&
	            (cur.session ? c->session && strcmp(cur.session, c->session) == 0 : !c->session);
	creds_clear(&cur);
	cur = *c;
	memset(c, 0, sizeof(*c));
	if (!same) {
		generation++;
		tokens_clear();
	}
}

static void drop_creds(void)
{
	creds_clear(&cur);
	generation++;
	tokens_clear();
}

/* ---- static sources ---- */

static char *env_nonempty(const char *name)
{
	const char *v = getenv(name);
	return v && *v ? xstrdup(v) : NULL;
}

/* env: both keys or neither (botocore's PartialCredentialsError) */
static int load_env(struct creds *c, char *why, size_t whylen)
{
	char *ak = env_nonempty("AWS_ACCESS_KEY_ID");
	char *sk = env_nonempty("AWS_SECRET_ACCESS_KEY");
	if (!ak && !sk)
		return 0;
	if (!ak || !sk) {
		snprintf(why, whylen, "%s is set but %s is not",
		         ak ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
		         ak ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
		secret_free(ak);
		secret_free(sk);
		return -1;
	}
	c->akid = ak;
	c->secret = sk;
	c->session = env_nonempty("AWS_SESSION_TOKEN");
	if (!c->session)
		c->session = env_nonempty("AWS_SECURITY_TOKEN");
	c->src = SRC_ENV;
	return 1;
}

struct creds_ini_ctx {
	struct util_ini_reader *rd; /* session tokens are longer than inih's lines */
	const char *section;        /* the profile's section name */
	struct creds *c;
};

static int creds_ini_handler(void *user, const char *section, const char *name, const char *value)
{
	struct creds_ini_ctx *x = user;
	if (strcmp(section, x->section) != 0)
		return 1;
	value = util_ini_value(x->rd, value);
	char **dst = NULL;
	if (strcmp(name, "aws_access_key_id") == 0)
		dst = &x->c->akid;
	else if (strcmp(name, "aws_secret_access_key") == 0)
		dst = &x->c->secret;
	else if (strcmp(name, "aws_session_token") == 0 ||
	         (strcmp(name, "aws_security_token") == 0 && !x->c->session))
		dst = &x->c->session;
	if (dst && *value) {
		secret_free(*dst);
		*dst = xstrdup(value);
	}
	return 1;
}

/* One file: 1 found, 0 not there or no keys for the profile, -1 error. */
static int load_file(const char *path, const char *section, struct creds *c, char *why, size_t whylen)
{
	struct util_ini_reader rd = {0};
	rd.f = fopen(path, "r");
	if (!rd.f)
		return 0;
	struct creds_ini_ctx x = {&rd, section, c};
	int r = ini_parse_stream(util_ini_read_line, &rd, creds_ini_handler, &x);
	util_ini_close(&rd);
	if (r != 0) {
		snprintf(why, whylen, "%s: syntax error at line %d", path, r);
		creds_clear(c);
		return -1;
	}
	if (!c->akid && !c->secret) {
		creds_clear(c);
		return 0;
	}
	if (!c->akid || !c->secret) {
		snprintf(why, whylen, "%s [%s]: aws_access_key_id and aws_secret_access_key go together",
		         path, section);
		creds_clear(c);
		return -1;
	}
	c->src = SRC_FILE;
	return 1;
}

static int load_files(struct creds *c, char *why, size_t whylen)
{
	const char *home = getenv("HOME");
	const char *profile = getenv("AWS_PROFILE");
	if (!profile || !*profile)
		profile = getenv("AWS_DEFAULT_PROFILE");
	if (!profile || !*profile)
		profile = "default";
	char path[1024], section[300];
	const char *f = getenv("AWS_SHARED_CREDENTIALS_FILE");
	if (f && *f)
		snprintf(path, sizeof(path), "%s", f);
	else if (home)
		snprintf(path, sizeof(path), "%s/.aws/credentials", home);
	else
		path[0] = '\0';
	int r = path[0] ? load_file(path, profile, c, why, whylen) : 0;
	if (r != 0)
		return r;
	/* the config file names profiles "profile NAME", except default */
	f = getenv("AWS_CONFIG_FILE");
	if (f && *f)
		snprintf(path, sizeof(path), "%s", f);
	else if (home)
		snprintf(path, sizeof(path), "%s/.aws/config", home);
	else
		return 0;
	if (strcmp(profile, "default") == 0)
		snprintf(section, sizeof(section), "default");
	else
		snprintf(section, sizeof(section), "profile %s", profile);
	return load_file(path, section, c, why, whylen);
}

/* Environment, web identity (refused), files.  1 found (into c), 0 none,
 * -1 error (why). */
static int load_static(struct creds *c, char *why, size_t whylen)
{
	int r = load_env(c, why, whylen);
	if (r != 0)
		return r;
	const char *wi = getenv("AWS_WEB_IDENTITY_TOKEN_FILE");
	if (wi && *wi && getenv("AWS_ROLE_ARN")) {
		snprintf(why, whylen,
		         "AWS_WEB_IDENTITY_TOKEN_FILE (IRSA) is not supported; use EKS Pod Identity, "
		         "the environment or a credentials file");
		return -1;
	}
	return load_files(c, why, whylen);
}

/* ---- network sources ---- */

static void free_conn_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	evhttp_connection_free(arg);
}

static void fx_reset(void)
{
	if (fx.conn) {
		/* not from inside its own callback */
		struct timeval now = {0, 0};
		event_base_once(pgt.base, -1, EV_TIMEOUT, free_conn_cb, fx.conn, &now);
		fx.conn = NULL;
	}
	free(fx.imds_base);
	secret_free(fx.imds_token);
	free(fx.role);
	memset(&fx, 0, sizeof(fx));
}

static void schedule(time_t at)
{
	time_t now = time(NULL);
	struct timeval tv = {at > now ? at - now : 0, 0};
	if (refresh_ev)
		event_add(refresh_ev, &tv);
}

/* Parse "2026-12-04T13:50:00Z" (also with fractions or +00:00). */
static bool parse_time(const char *s, time_t *out)
{
	struct tm tm;
	memset(&tm, 0, sizeof(tm));
	int n = 0;
	if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
	           &tm.tm_min, &tm.tm_sec, &n) != 6)
		return false;
	const char *rest = s + n;
	if (*rest == '.')
		for (rest++; isdigit((unsigned char)*rest); rest++)
			;
	int off = 0;
	if (*rest == '+' || *rest == '-') {
		int hh = 0, mm = 0;
		if (sscanf(rest + 1, "%2d:%2d", &hh, &mm) != 2)
			return false;
		off = (hh * 3600 + mm * 60) * (*rest == '-' ? -1 : 1);
	} else if (*rest != 'Z' && *rest != '\0') {
		return false;
	}
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm);
	if (t == (time_t)-1)
		return false;
	*out = t - off;
	return true;
}

static void fetch_failed(const char *fmt, ...) PGT_PRINTF(1, 2);

static void fetch_succeeded(struct creds *c)
{
	time_t now = time(NULL);
	c->obtained = now;
	bool changed = !cur.akid || strcmp(cur.akid, c->akid) != 0;
	char akid[64];
	snprintf(akid, sizeof(akid), "%s", c->akid);
	char exp[32] = "never";
	if (c->expiration) {
		struct tm tm;
		gmtime_r(&c->expiration, &tm);
		strftime(exp, sizeof(exp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	enum source src = c->src;
	set_creds(c);
	awscreds_refreshes++;
	retry_delay = 0;
	retry_at = 0;
	last_error[0] = '\0';
	fx_reset();
	log_info("AWS credentials %s from %s: access key id %s, expire %s", changed ? "loaded" : "renewed",
	         source_names[src], akid, exp);
	if (cur.expiration) {
		/* 5 minutes ahead, or at half the lifetime if that comes later */
		time_t life = cur.expiration - now;
		time_t at = cur.expiration - REFRESH_AHEAD;
		if (at < now + life / 2)
			at = now + life / 2;
		schedule(at);
	}
	wake_waiters(NULL);
}

static void fetch_failed(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(last_error, sizeof(last_error), fmt, ap);
	va_end(ap);
	awscreds_failures++;
	enum source src = fx.src;
	fx_reset();
	time_t now = time(NULL);
	retry_delay = retry_delay ? PGT_MIN(retry_delay * 2, RETRY_MAX) : RETRY_MIN;
	retry_at = now + retry_delay;
	if (creds_usable(now)) {
		/* keep them until they expire, and try again */
		log_warning(
		    "AWS credentials from %s could not be renewed: %s; the current ones expire in %lds, "
		    "retrying in %ds",
		    source_names[src], last_error, (long)(cur.expiration - now), retry_delay);
		schedule(retry_at);
		return;
	}
	log_error("AWS credentials from %s: %s", source_names[src], last_error);
	wake_waiters(last_error);
}

static bool parse_creds_json(const char *body, size_t len, struct creds *c, char *err, size_t errlen)
{
	json_error_t je;
	json_t *doc = json_loadb(body, len, 0, &je);
	if (!json_is_object(doc)) {
		snprintf(err, errlen, "the answer is not a JSON object");
		json_decref(doc);
		return false;
	}
	const char *code = json_string_value(json_object_get(doc, "Code"));
	const char *ak = json_string_value(json_object_get(doc, "AccessKeyId"));
	const char *sk = json_string_value(json_object_get(doc, "SecretAccessKey"));
	const char *tok = json_string_value(json_object_get(doc, "Token"));
	const char *exp = json_string_value(json_object_get(doc, "Expiration"));
	bool ok = false;
	if (code && strcmp(code, "Success") != 0) {
		/* Code and Message are not secret (an IMDS error such as an
		 * untrusted role) */
		const char *m = json_string_value(json_object_get(doc, "Message"));
		snprintf(err, errlen, "the answer says %.40s: %.120s", code, m ? m : "");
	} else if (!ak || !*ak || !sk || !*sk) {
		snprintf(err, errlen, "the answer has no AccessKeyId and SecretAccessKey");
	} else if (exp && !parse_time(exp, &c->expiration)) {
		snprintf(err, errlen, "the answer's Expiration is not a date");
	} else {
		c->akid = xstrdup(ak);
		c->secret = xstrdup(sk);
		c->session = tok && *tok ? xstrdup(tok) : NULL;
		ok = true;
	}
	json_decref(doc);
	return ok;
}

static void http_done(struct evhttp_request *req, void *arg);

static bool loopback_host(const char *h)
{
	return strcmp(h, "localhost") == 0 || strncmp(h, "127.", 4) == 0 || strcmp(h, "::1") == 0 ||
	       strcmp(h, "[::1]") == 0;
}

/* Send one request of the fetch; false with last_error-style text in err. */
static bool http_send(enum evhttp_cmd_type method, const char *url, const char *const *hdrs, int timeout_s,
                      char *err, size_t errlen)
{
	struct evhttp_uri *u = evhttp_uri_parse(url);
	const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
	const char *host = u ? evhttp_uri_get_host(u) : NULL;
	if (!u || !scheme || !host || !*host ||
	    (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
		snprintf(err, errlen, "%s is not an http or https URL", url);
		evhttp_uri_free(u);
		return false;
	}
	bool tls = strcasecmp(scheme, "https") == 0;
	int port = evhttp_uri_get_port(u);
	if (port < 0)
		port = tls ? 443 : 80;
	/* evhttp connects to a bracketed IPv6 literal without its brackets */
	char hostbuf[256];
	snprintf(hostbuf, sizeof(hostbuf), "%s", host);
	size_t hl = strlen(hostbuf);
	if (hostbuf[0] == '[' && hl > 2 && hostbuf[hl - 1] == ']') {
		memmove(hostbuf, hostbuf + 1, hl - 2);
		hostbuf[hl - 2] = '\0';
	}
	struct bufferevent *bev = NULL;
	if (tls) {
		if (!ssl_ctx) {
			ssl_ctx = SSL_CTX_new(TLS_client_method());
			if (ssl_ctx) {
				SSL_CTX_set_min_proto_version(ssl_ctx, TLS1_2_VERSION);
				SSL_CTX_set_default_verify_paths(ssl_ctx);
				SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
			}
		}
		SSL *ssl = ssl_ctx ? SSL_new(ssl_ctx) : NULL;
		if (ssl) {
			uint8_t a[16];
			if (inet_pton(AF_INET, hostbuf, a) == 1 || inet_pton(AF_INET6, hostbuf, a) == 1) {
				X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), hostbuf);
			} else {
				SSL_set_tlsext_host_name(ssl, hostbuf);
				SSL_set1_host(ssl, hostbuf);
			}
			bev = bufferevent_openssl_socket_new(pgt.base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
			                                     BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
			if (bev)
				bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
			else
				SSL_free(ssl);
		}
		fx.conn = bev ? evhttp_connection_base_bufferevent_new(pgt.base, pgt.dns, bev, hostbuf,
		                                                       (unsigned short)port)
		              : NULL;
		if (!fx.conn && bev)
			bufferevent_free(bev);
	} else {
		fx.conn = evhttp_connection_base_new(pgt.base, pgt.dns, hostbuf, (unsigned short)port);
	}
	struct evhttp_request *req = fx.conn ? evhttp_request_new(http_done, NULL) : NULL;
	if (!req) {
		snprintf(err, errlen, "cannot start a request to %s", url);
		if (fx.conn)
			evhttp_connection_free(fx.conn);
		fx.conn = NULL;
		evhttp_uri_free(u);
		return false;
	}
	evhttp_connection_set_timeout(fx.conn, timeout_s);
	evhttp_connection_set_max_body_size(fx.conn, MAX_BODY);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	char hosthdr[300];
	if (evhttp_uri_get_port(u) >= 0)
		snprintf(hosthdr, sizeof(hosthdr), "%s:%d", host, port);
	else
		snprintf(hosthdr, sizeof(hosthdr), "%s", host);
	evhttp_add_header(h, "Host", hosthdr);
	evhttp_add_header(h, "Connection", "close");
	for (int i = 0; hdrs && hdrs[i]; i += 2)
		evhttp_add_header(h, hdrs[i], hdrs[i + 1]);
	const char *path = evhttp_uri_get_path(u), *query = evhttp_uri_get_query(u);
	char *target = xasprintf("%s%s%s", path && *path ? path : "/", query ? "?" : "", query ? query : "");
	int r = evhttp_make_request(fx.conn, req, method, target);
	free(target);
	evhttp_uri_free(u);
	if (r != 0) {
		/* libevent freed the request */
		snprintf(err, errlen, "cannot send a request to %s", url);
		evhttp_connection_free(fx.conn);
		fx.conn = NULL;
		return false;
	}
	return true;
}

/* The container endpoint's URL, or NULL (err set if it is refused). */
static char *container_url(char *err, size_t errlen)
{
	const char *rel = getenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
	if (rel && *rel)
		return xasprintf("http://" CONTAINER_HOST "%s%s", rel[0] == '/' ? "" : "/", rel);
	const char *full = getenv("AWS_CONTAINER_CREDENTIALS_FULL_URI");
	if (!full || !*full)
		return NULL;
	/* plain http only to the container agents' addresses and loopback
	 * (botocore's rule): the answer is a secret */
	struct evhttp_uri *u = evhttp_uri_parse(full);
	const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
	const char *host = u ? evhttp_uri_get_host(u) : NULL;
	bool ok = scheme && host &&
	          (strcasecmp(scheme, "https") == 0 ||
	           (strcasecmp(scheme, "http") == 0 &&
	            (loopback_host(host) || strcmp(host, "169.254.170.2") == 0 ||
	             strcmp(host, "169.254.170.23") == 0 || strcasecmp(host, "[fd00:ec2::23]") == 0 ||
	             strcasecmp(host, "fd00:ec2::23") == 0)));
	evhttp_uri_free(u);
	if (!ok) {
		snprintf(
		    err, errlen,
		    "AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or http to loopback or the container "
		    "agent (169.254.170.2, 169.254.170.23, fd00:ec2::23)");
		return NULL;
	}
	return xstrdup(full);
}

/* The container Authorization header value (file first, as botocore), or
 * NULL; false with err if the file cannot be read. */
static bool container_auth(char **out, char *err, size_t errlen)
{
	*out = NULL;
	const char *file = getenv("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
	if (file && *file) {
		FILE *f = fopen(file, "r");
		if (!f) {
			snprintf(err, errlen, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE %s: %s", file,
			         strerror(errno));
			return false;
		}
		char *buf = NULL;
		size_t cap = 0;
		ssize_t n = getline(&buf, &cap, f);
		fclose(f);
		if (n > 0) {
			*out = xstrdup(util_trim(buf));
			OPENSSL_cleanse(buf, cap);
		}
		free(buf);
	} else {
		*out = env_nonempty("AWS_CONTAINER_AUTHORIZATION_TOKEN");
	}
	if (*out && strpbrk(*out, "\r\n")) {
		snprintf(err, errlen, "the container authorization token has a line break");
		secret_free(*out);
		*out = NULL;
		return false;
	}
	return true;
}

static bool imds_disabled(void)
{
	const char *d = getenv("AWS_EC2_METADATA_DISABLED");
	return d && strcasecmp(d, "true") == 0;
}

static int imds_timeout(void)
{
	const char *t = getenv("AWS_METADATA_SERVICE_TIMEOUT");
	long v;
	return t && util_parse_int(t, 1, 60, &v) ? (int)v : IMDS_TIMEOUT_S;
}

static bool imds_get(const char *what, char *err, size_t errlen)
{
	char *url = xasprintf("%s/latest/meta-data/iam/security-credentials/%s", fx.imds_base, what);
	const char *hdrs[] = {"X-aws-ec2-metadata-token", fx.imds_token, NULL};
	bool ok = http_send(EVHTTP_REQ_GET, url, fx.imds_token ? hdrs : NULL, imds_timeout(), err, errlen);
	free(url);
	return ok;
}

/* Start fetching from the network source; false with why if there is none
 * or it cannot start. */
static bool fetch_start(char *why, size_t whylen)
{
	if (fx.step != ST_IDLE)
		return true;
	init_once();
	char err[256] = "";
	char *url = container_url(err, sizeof(err));
	if (url) {
		char *auth = NULL;
		if (!container_auth(&auth, err, sizeof(err))) {
			free(url);
			fx.src = SRC_CONTAINER;
			fetch_failed("%s", err);
			snprintf(why, whylen, "%s", last_error);
			return false;
		}
		const char *hdrs[] = {"Accept", "application/json", auth ? "Authorization" : NULL, auth,
		                      NULL};
		fx.step = ST_CONTAINER;
		fx.src = SRC_CONTAINER;
		bool ok = http_send(EVHTTP_REQ_GET, url, hdrs, CONTAINER_TIMEOUT_S, err, sizeof(err));
		secret_free(auth);
		free(url);
		if (!ok) {
			fetch_failed("%s", err);
			snprintf(why, whylen, "%s", last_error);
			return false;
		}
		log_debug("fetching AWS credentials from the container credentials endpoint");
		return true;
	}
	if (err[0]) {
		fx.src = SRC_CONTAINER;
		fetch_failed("%s", err);
		snprintf(why, whylen, "%s", last_error);
		return false;
	}
	if (imds_disabled()) {
		snprintf(why, whylen,
		         "none in the environment or the shared credentials file, no container credentials "
		         "endpoint, and the EC2 metadata service is disabled (AWS_EC2_METADATA_DISABLED)");
		return false;
	}
	const char *base = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT");
	const char *mode = getenv("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
	if (!base || !*base)
		base = mode && strcasecmp(mode, "ipv6") == 0 ? IMDS_DEFAULT_V6 : IMDS_DEFAULT;
	fx.imds_base = xstrdup(base);
	size_t n = strlen(fx.imds_base);
	while (n > 0 && fx.imds_base[n - 1] == '/')
		fx.imds_base[--n] = '\0';
	fx.step = ST_IMDS_TOKEN;
	fx.src = SRC_IMDS;
	url = xasprintf("%s/latest/api/token", fx.imds_base);
	const char *hdrs[] = {"X-aws-ec2-metadata-token-ttl-seconds", IMDS_TOKEN_TTL, NULL};
	bool ok = http_send(EVHTTP_REQ_PUT, url, hdrs, imds_timeout(), err, sizeof(err));
	free(url);
	if (!ok) {
		fetch_failed("%s", err);
		snprintf(why, whylen, "%s", last_error);
		return false;
	}
	log_debug("fetching AWS credentials from the EC2 instance metadata service");
	return true;
}

static void http_done(struct evhttp_request *req, void *arg)
{
	(void)arg;
	if (fx.step == ST_IDLE)
		return; /* stopped (shutdown) */
	int code = req ? evhttp_request_get_response_code(req) : 0;
	struct evbuffer *in = req ? evhttp_request_get_input_buffer(req) : NULL;
	size_t len = in ? evbuffer_get_length(in) : 0;
	char *body = xmalloc(len + 1);
	if (len) {
		uint8_t *p = evbuffer_pullup(in, -1);
		memcpy(body, p, len);
		OPENSSL_cleanse(p, len); /* libevent frees it as is */
	}
	body[len] = '\0';
	char err[256] = "";
	const char *what =
	    fx.step == ST_CONTAINER ? "container credentials endpoint" : "EC2 metadata service";
	if (code == 0) {
		fetch_failed("%s: no answer (connection refused, timeout or closed)", what);
		goto out;
	}
	struct evhttp_connection *old = fx.conn;
	switch (fx.step) {
	case ST_CONTAINER:
	case ST_IMDS_CREDS: {
		struct creds c = {0};
		if (code != 200) {
			fetch_failed("%s: HTTP status %d", what, code);
		} else if (!parse_creds_json(body, len, &c, err, sizeof(err))) {
			fetch_failed("%s: %s", what, err);
		} else {
			c.src = fx.src;
			fetch_succeeded(&c);
		}
		creds_clear(&c);
		break;
	}
	case ST_IMDS_TOKEN:
		if (code == 200 && len > 0) {
			fx.imds_token = xstrdup(util_trim(body));
		} else if (code != 403 && code != 404 && code != 405) {
			/* (those three: an IMDSv1-only endpoint, as botocore) */
			fetch_failed("%s: HTTP status %d for a session token", what, code);
			break;
		}
		fx.conn = NULL;
		fx.step = ST_IMDS_ROLE;
		if (!imds_get("", err, sizeof(err))) {
			fx.conn = old;
			fetch_failed("%s: %s", what, err);
		} else {
			struct timeval now = {0, 0};
			event_base_once(pgt.base, -1, EV_TIMEOUT, free_conn_cb, old, &now);
		}
		break;
	case ST_IMDS_ROLE: {
		char *role = util_trim(body);
		role[strcspn(role, "\r\n")] = '\0';
		if (code != 200 || !*role || strchr(role, '/')) {
			fetch_failed("%s: %s", what,
			             code != 200 ? "no role name (HTTP status not 200)"
			                         : "no IAM role attached");
			break;
		}
		fx.role = xstrdup(role);
		fx.conn = NULL;
		fx.step = ST_IMDS_CREDS;
		if (!imds_get(fx.role, err, sizeof(err))) {
			fx.conn = old;
			fetch_failed("%s: %s", what, err);
		} else {
			struct timeval now = {0, 0};
			event_base_once(pgt.base, -1, EV_TIMEOUT, free_conn_cb, old, &now);
		}
		break;
	}
	default:
		break;
	}
out:
	OPENSSL_cleanse(body, len);
	free(body);
}

static void refresh_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (fx.step != ST_IDLE || !cur.akid || (cur.src != SRC_CONTAINER && cur.src != SRC_IMDS))
		return;
	char why[256];
	log_debug("renewing the AWS credentials from %s", source_names[cur.src]);
	if (!fetch_start(why, sizeof(why)) && !creds_usable(time(NULL)))
		log_error("AWS credentials cannot be renewed: %s", why);
}

/* ---- the chain ---- */

/* Read the static sources if not done since startup or the last RELOAD.
 * false with why if they are in error. */
static bool ensure_static(char *why, size_t whylen)
{
	static char static_error[256];
	if (static_loaded) {
		if (static_error[0]) {
			snprintf(why, whylen, "%s", static_error);
			return false;
		}
		return true;
	}
	init_once();
	if (!refresh_ev && pgt.base)
		refresh_ev = evtimer_new(pgt.base, refresh_cb, NULL);
	static_loaded = true;
	static_error[0] = '\0';
	struct creds c = {0};
	int r = load_static(&c, static_error, sizeof(static_error));
	if (r < 0) {
		if (cur.src == SRC_ENV || cur.src == SRC_FILE)
			drop_creds();
		log_error("AWS credentials: %s", static_error);
		snprintf(why, whylen, "%s", static_error);
		return false;
	}
	if (r > 0) {
		enum source src = c.src;
		char akid[64];
		snprintf(akid, sizeof(akid), "%s", c.akid);
		bool changed = !cur.akid || strcmp(cur.akid, c.akid) != 0;
		c.obtained = time(NULL);
		set_creds(&c);
		if (refresh_ev)
			event_del(refresh_ev);
		if (changed)
			log_info("AWS credentials loaded from %s: access key id %s", source_names[src], akid);
		return true;
	}
	/* none there now: credentials that came from there are gone */
	if (cur.src == SRC_ENV || cur.src == SRC_FILE)
		drop_creds();
	return true;
}

void awscreds_prefetch(void)
{
	char why[256];
	if (!ensure_static(why, sizeof(why)) || creds_usable(time(NULL)) || fx.step != ST_IDLE ||
	    time(NULL) < retry_at)
		return;
	fetch_start(why, sizeof(why));
}

enum awscreds_status awscreds_token(const char *host, int port, const char *user, const char *region,
                                    char **token, struct awscreds_waiter *w, char *why, size_t whylen)
{
	*token = NULL;
	if (!ensure_static(why, whylen))
		return AWSCREDS_NONE;
	time_t now = time(NULL);
	if (!creds_usable(now)) {
		if (cur.akid)
			drop_creds(); /* expired, and the renewal failed */
		if (fx.step == ST_IDLE) {
			if (now < retry_at && last_error[0]) {
				snprintf(why, whylen, "%s", last_error);
				return AWSCREDS_NONE;
			}
			if (!fetch_start(why, whylen))
				return AWSCREDS_NONE;
		}
		w->next = waiters;
		w->waiting = true;
		waiters = w;
		return AWSCREDS_PENDING;
	}
	struct token_entry *e = NULL;
	for (int i = 0; i < ntokens; i++) {
		struct token_entry *t = &tokens[i];
		if (t->port == port && strcmp(t->host, host) == 0 && strcmp(t->user, user) == 0 &&
		    strcmp(t->region, region) == 0) {
			e = t;
			break;
		}
	}
	if (e && (e->generation != generation || now - e->made >= RDSTOKEN_RENEW || now < e->made)) {
		rdstoken_free(e->token);
		e->token = NULL;
	}
	if (!e) {
		if (ntokens == TOKEN_CACHE_MAX) {
			/* the oldest goes */
			int o = 0;
			for (int i = 1; i < ntokens; i++)
				if (tokens[i].made < tokens[o].made)
					o = i;
			token_entry_free(&tokens[o]);
			tokens[o] = tokens[--ntokens];
		}
		e = &tokens[ntokens++];
		e->host = xstrdup(host);
		e->user = xstrdup(user);
		e->region = xstrdup(region);
		e->port = port;
	}
	if (!e->token) {
		e->token =
		    rdstoken_generate(cur.akid, cur.secret, cur.session, host, port, region, user, now);
		e->made = now;
		e->generation = generation;
		if (!e->token) {
			snprintf(why, whylen, "could not sign the IAM token");
			return AWSCREDS_NONE;
		}
	}
	*token = xstrdup(e->token);
	return AWSCREDS_READY;
}

void awscreds_reload(void)
{
	if (!static_loaded)
		return; /* read when first needed */
	static_loaded = false;
	char why[256];
	ensure_static(why, sizeof(why));
}

void awscreds_shutdown(void)
{
	/* the process is ending: nobody is told */
	for (struct awscreds_waiter *w = waiters; w; w = w->next)
		w->waiting = false;
	waiters = NULL;
	if (fx.conn) {
		evhttp_connection_free(fx.conn);
		fx.conn = NULL;
	}
	fx.step = ST_IDLE;
	fx_reset();
	if (refresh_ev) {
		event_free(refresh_ev);
		refresh_ev = NULL;
	}
	tokens_clear();
	creds_clear(&cur);
	SSL_CTX_free(ssl_ctx);
	ssl_ctx = NULL;
	static_loaded = false;
}
