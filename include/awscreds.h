/*
 * AWS credentials for RDS IAM authentication (server_auth = iam), found as
 * botocore finds them, and the tokens made with them (rdstoken.h):
 *
 *  1. the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
 *     AWS_SESSION_TOKEN (or AWS_SECURITY_TOKEN);
 *  2. the shared credentials file (AWS_SHARED_CREDENTIALS_FILE, else
 *     ~/.aws/credentials), then the config file (AWS_CONFIG_FILE, else
 *     ~/.aws/config), profile AWS_PROFILE (or AWS_DEFAULT_PROFILE), else
 *     "default";
 *  3. ECS/EKS container credentials: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
 *     under http://169.254.170.2, else AWS_CONTAINER_CREDENTIALS_FULL_URI,
 *     with an Authorization header from AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE
 *     (EKS Pod Identity) or AWS_CONTAINER_AUTHORIZATION_TOKEN;
 *  4. EC2 instance metadata, IMDSv2 (a session token first), at
 *     AWS_EC2_METADATA_SERVICE_ENDPOINT or 169.254.169.254 (fd00:ec2::254
 *     with AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6), unless
 *     AWS_EC2_METADATA_DISABLED=true.
 *
 * The first two are read when first needed and again on RELOAD.  The two
 * network sources are fetched on the event loop (evhttp), never blocking
 * it; a login that needs credentials while a fetch is in flight waits for
 * it.  Fetched credentials are refreshed before they expire: when 5
 * minutes remain, or once half their lifetime has passed if that is
 * shorter; a failed refresh keeps them until they expire and is retried
 * with backoff.  A web identity (AWS_WEB_IDENTITY_TOKEN_FILE, IRSA) is not
 * supported: it is refused rather than silently falling through to the
 * node's instance role.
 *
 * Secrets (secret key, session token, tokens, the IMDS session token, the
 * container authorization token) are never logged, and the memory that
 * held them is cleansed when freed (jansson's included: awscreds sets its
 * free function to one that cleanses).
 */
#ifndef PGT_AWSCREDS_H
#define PGT_AWSCREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Credentials fetched or refreshed, and fetches that failed (metrics.c). */
extern uint64_t awscreds_refreshes, awscreds_failures;

/* A login waiting for credentials. */
struct awscreds_waiter {
	struct awscreds_waiter *next;
	/* error: NULL = credentials are there now (ask again), else why not */
	void (*done)(struct awscreds_waiter *w, const char *error);
	bool waiting;
};

enum awscreds_status {
	AWSCREDS_READY,   /* *token is set */
	AWSCREDS_PENDING, /* w will be called */
	AWSCREDS_NONE     /* why says why */
};

/* The token for user at host:port in region: cached per (host, port,
 * user, region) and made again when RDSTOKEN_RENEW of its life is gone or
 * the credentials changed.  READY: *token is a copy to free with
 * rdstoken_free().  PENDING: credentials are being fetched, w is called
 * when that ends.  NONE: no credentials (why). */
enum awscreds_status awscreds_token(const char *host, int port, const char *user, const char *region,
                                    char **token, struct awscreds_waiter *w, char *why, size_t whylen);
/* w no longer waits (its server connection is gone). */
void awscreds_unwait(struct awscreds_waiter *w);
/* A login will need credentials soon: start fetching them if there are none. */
void awscreds_prefetch(void);
/* RELOAD: read the environment and the files again. */
void awscreds_reload(void);
void awscreds_shutdown(void);

#endif
