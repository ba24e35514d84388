/*
 * RDS IAM tokens (rdstoken.c) against botocore's generate_db_auth_token,
 * run now with the same credentials, host, port, region, user and a frozen
 * clock (test/integration/iamtoken.py through /usr/bin/python3): equal
 * byte for byte, with and without a session token, for user names and
 * tokens that need percent-encoding, ports other than 5432 (and 443, which
 * the signed host header leaves out), upper-case and China-region host
 * names.  Then the region rules.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rdstoken.h"
#include "tap.h"

static bool skip_botocore;

/* botocore's token, or NULL (skip_botocore set when botocore is missing) */
static char *botocore(const char *ak, const char *sk, const char *st, const char *host, int port,
                      const char *region, const char *user, time_t now)
{
	const char *root = getenv("PGT_SOURCE_ROOT");
	char script[1024], ports[16], epoch[32];
	snprintf(script, sizeof(script), "%s/test/integration/iamtoken.py", root ? root : ".");
	snprintf(ports, sizeof(ports), "%d", port);
	snprintf(epoch, sizeof(epoch), "%lld", (long long)now);
	int fds[2];
	if (pipe(fds) != 0)
		return NULL;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		char *const argv[] = {
		    "python3",    script, (char *)ak,     (char *)sk,   (char *)(st ? st : "-"),
		    (char *)host, ports,  (char *)region, (char *)user, epoch,
		    NULL};
		execv("/usr/bin/python3", argv);
		_exit(77);
	}
	close(fds[1]);
	char buf[8192];
	size_t n = 0;
	ssize_t r;
	while ((r = read(fds[0], buf + n, sizeof(buf) - 1 - n)) > 0 || (r < 0 && errno == EINTR))
		if (r > 0)
			n += (size_t)r;
	close(fds[0]);
	buf[n] = '\0';
	int status = 0;
	waitpid(pid, &status, 0);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
		skip_botocore = true;
		return NULL;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return NULL;
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		buf[--n] = '\0';
	return strdup(buf);
}

struct vec {
	const char *ak, *sk, *st, *host;
	int port;
	const char *region, *user;
	time_t now;
};

static const struct vec vecs[] = {
    {"AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", NULL,
     "mycluster.cluster-abc.eu-west-1.rds.amazonaws.com", 5432, "eu-west-1", "app", 1767323045},
    {"ASIAEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
     "IQoJb3JpZ2luX2VjE/+=//session token with spaces&and=more", "db.cxyz.us-east-1.rds.amazonaws.com", 5433,
     "us-east-1", "app+x@y", 1700000000},
    {"AKIDCN", "secret", "tok", "Upper-Case.Cluster-Q.CN-North-1.rds.amazonaws.com.cn", 6543, "cn-north-1",
     "user with space/é", 946684799},
    {"AKID2", "k", NULL, "127.0.0.1", 443, "ap-southeast-2", "a~b_c.d-e", 2145916800},
    {"AKID3", "k2", "t", "proxy.proxy-abc.us-west-2.rds.amazonaws.com", 1, "us-west-2", "%41&=?#", 1},
};

static void test_botocore(void)
{
	for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
		const struct vec *v = &vecs[i];
		char *ours =
		    rdstoken_generate(v->ak, v->sk, v->st, v->host, v->port, v->region, v->user, v->now);
		char *theirs = botocore(v->ak, v->sk, v->st, v->host, v->port, v->region, v->user, v->now);
		if (skip_botocore) {
			tap_ok(true, "# SKIP botocore is not installed for /usr/bin/python3");
			rdstoken_free(ours);
			return;
		}
		char name[128];
		snprintf(name, sizeof(name), "token %zu equals botocore's", i);
		TAP_IS_STR(ours, theirs, name);
		rdstoken_free(ours);
		free(theirs);
	}
	/* an empty session token is none (botocore's None) */
	char *a = rdstoken_generate("AK", "SK", "", "h", 5432, "r", "u", 0);
	char *b = rdstoken_generate("AK", "SK", NULL, "h", 5432, "r", "u", 0);
	tap_ok(a && b && strcmp(a, b) == 0 && !strstr(a, "Security-Token"), "empty session token = none");
	rdstoken_free(a);
	rdstoken_free(b);
	/* a different clock, secret or user changes the signature */
	a = rdstoken_generate("AK", "SK", NULL, "h", 5432, "r", "u", 0);
	b = rdstoken_generate("AK", "SK2", NULL, "h", 5432, "r", "u", 0);
	tap_ok(a && b && strcmp(a, b) != 0, "the secret key signs");
	rdstoken_free(a);
	rdstoken_free(b);
	tap_ok(!rdstoken_generate("AK", "SK", NULL, "h", 5432, "", "u", 0), "no region, no token");
	tap_ok(!rdstoken_generate("AK", "SK", NULL, "h", 0, "r", "u", 0), "no port, no token");
	tap_ok(!rdstoken_generate("", "SK", NULL, "h", 5432, "r", "u", 0), "no access key, no token");
}

static void test_region(void)
{
	char r[64];
	tap_ok(
	    rdstoken_region_from_host("my-cluster.cluster-xyz.eu-west-1.rds.amazonaws.com", r, sizeof(r)) &&
	        strcmp(r, "eu-west-1") == 0,
	    "region from a cluster endpoint");
	tap_ok(rdstoken_region_from_host("db.abc.CN-NORTHWEST-1.rds.amazonaws.com.cn.", r, sizeof(r)) &&
	           strcmp(r, "cn-northwest-1") == 0,
	       "region from a China endpoint (fully qualified)");
	tap_ok(!rdstoken_region_from_host("eu-west-1.rds.amazonaws.com", r, sizeof(r)),
	       "no name.id: no region");
	tap_ok(!rdstoken_region_from_host("db.example.com", r, sizeof(r)), "not RDS: no region");
	tap_ok(!rdstoken_region_from_host("a.b.rds.amazonaws.com.evil", r, sizeof(r)), "suffix must end");
	setenv("AWS_REGION", "us-east-2", 1);
	setenv("AWS_DEFAULT_REGION", "us-west-1", 1);
	tap_ok(
	    rdstoken_region("ap-south-1", "eu-central-1", "x.y.eu-west-1.rds.amazonaws.com", r, sizeof(r)) &&
	        strcmp(r, "ap-south-1") == 0,
	    "the entry's aws_region first");
	tap_ok(rdstoken_region(NULL, "eu-central-1", "x.y.eu-west-1.rds.amazonaws.com", r, sizeof(r)) &&
	           strcmp(r, "eu-central-1") == 0,
	       "then the global aws_region");
	tap_ok(rdstoken_region("", "", "x.y.eu-west-1.rds.amazonaws.com", r, sizeof(r)) &&
	           strcmp(r, "eu-west-1") == 0,
	       "then the host name");
	tap_ok(rdstoken_region(NULL, NULL, "db.example.com", r, sizeof(r)) && strcmp(r, "us-east-2") == 0,
	       "then AWS_REGION");
	unsetenv("AWS_REGION");
	tap_ok(rdstoken_region(NULL, NULL, "db.example.com", r, sizeof(r)) && strcmp(r, "us-west-1") == 0,
	       "then AWS_DEFAULT_REGION");
	unsetenv("AWS_DEFAULT_REGION");
	tap_ok(!rdstoken_region(NULL, NULL, "db.example.com", r, sizeof(r)), "else none");
	tap_ok(!rdstoken_region("eu west", NULL, "db.example.com", r, sizeof(r)),
	       "a malformed region is none");
}

int main(void)
{
	test_botocore();
	test_region();
	return tap_done();
}
