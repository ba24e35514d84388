/*
 * Amazon RDS IAM database authentication tokens: what botocore's
 * generate_db_auth_token(DBHostname, Port, DBUsername, Region) returns, a
 * SigV4 query-string presigned GET of
 * https://host:port/?Action=connect&DBUser=user for the service rds-db,
 * valid 900 seconds, without the "https://".  The server receives it as the
 * password of an AuthenticationCleartextPassword exchange.
 *
 * Pure functions (no event loop, no global state) so that the unit test
 * can compare them byte for byte with botocore.
 */
#ifndef PGT_RDSTOKEN_H
#define PGT_RDSTOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "util.h"

/* How long a token is valid (X-Amz-Expires), and how long pgtenant uses one
 * before it makes a new one (awscreds.c). */
#define RDSTOKEN_EXPIRES 900
#define RDSTOKEN_RENEW 600

/* The token for the given credentials (session_token NULL or "" = none),
 * server host and port, region, server user and clock.  Returns a string
 * to free with rdstoken_free(), or NULL if an argument is unusable or
 * OpenSSL failed. */
char *rdstoken_generate(const char *access_key_id, const char *secret_access_key, const char *session_token,
                        const char *host, int port, const char *region, const char *user,
                        time_t now) _MUSTCHECK;
/* Cleanse and free a token (or any secret string). */
void rdstoken_free(char *token);

/* The region in an RDS host name (name.id.REGION.rds.amazonaws.com, also
 * .rds.amazonaws.com.cn), into out; false if host is not one. */
bool rdstoken_region_from_host(const char *host, char *out, size_t outlen);
/* The region a token for host is signed for: the entry's aws_region, else
 * the global one (both NULL or "" = not set), else the host name's, else
 * AWS_REGION, else AWS_DEFAULT_REGION.  false if none. */
bool rdstoken_region(const char *entry_region, const char *global_region, const char *host, char *out,
                     size_t outlen);

#endif
