/*
 * pgtenant: command line, signals, and the event loop.
 *
 * The loop runs one libevent iteration at a time so that connections closed
 * during an iteration are freed only after it (libevent may still hold
 * events for them within the iteration).
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "audit.h"
#include "authquery.h"
#include "awscreds.h"
#include "client.h"
#include "config.h"
#include "dns.h"
#include "janitor.h"
#include "jwks.h"
#include "jwt.h"
#include "listener.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "pool.h"
#include "sbuf.h"
#include "secretfile.h"
#include "tls.h"
#include "server.h"
#include "tenant_registry.h"

struct pgt_loop pgt;

usec_t loop_now_slow(void)
{
	struct timeval tv;
	if (!pgt.base || event_base_gettimeofday_cached(pgt.base, &tv) != 0)
		return util_now();
	usec_t now = (usec_t)tv.tv_sec * USEC_PER_SEC + tv.tv_usec;
	if (pgt.now_cache == 1)
		pgt.now_cache = now; /* the rest of the event reads it for free */
	return now;
}

bool loop_reload(void)
{
	int nerr = 0;
	struct pgt_config *cfg = config_load(pgt.cfg->path, NULL, &nerr);
	if (!cfg) {
		log_error("reload failed with %d error(s); keeping the old configuration", nerr);
		audit_configure(pgt.cfg->audit_log); /* reopened all the same (logrotate) */
		return false;
	}
	struct pgt_config *old = pgt.cfg;
	char err[512];
	if (!tls_configure(cfg, true, err, sizeof(err)))
		log_error("%s; keeping the previous TLS settings (certificates, keys, CA, protocols)", err);
	if (!jwt_configure(cfg, true, err, sizeof(err)))
		log_error("%s; keeping the previous JWT keys", err);
	jwks_configure(cfg);
	awscreds_reload();
	if (strcmp(old->listen_addr, cfg->listen_addr) != 0 || old->listen_port != cfg->listen_port ||
	    strcmp(old->unix_socket_dir, cfg->unix_socket_dir) != 0 || old->pkt_buf != cfg->pkt_buf)
		log_warning("listen_addr, listen_port, unix_socket_dir and pkt_buf change only on restart");
	if (strcmp(old->logfile, cfg->logfile) != 0 && !log_open(cfg->logfile))
		log_error("cannot open logfile %s", cfg->logfile);
	pgt.cfg = cfg;
	server_check_horizon(loop_coarse_now());
	if (!dns_configure(cfg->dns_nameserver))
		log_error("dns_nameserver: could not use %s", cfg->dns_nameserver);
	audit_configure(cfg->audit_log);
	client_config_changed();
	authq_config_changed();
	secretfile_config_changed(cfg);
	pool_config_changed();
	tenant_states_config_changed();
	config_free(old);
	log_info("configuration reloaded");
	return true;
}

void loop_shutdown(bool immediate)
{
	if (immediate) {
		pgt.exit_now = true;
		event_base_loopbreak(pgt.base);
		return;
	}
	if (!pgt.shutting_down) {
		log_info("got SIGINT: no new connections; exiting when no server connection is in use");
		pgt.shutting_down = true;
		/* refuse new connections at once, so load balancers move on */
		listener_close_all();
		janitor_run();
	}
}

static void sig_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	switch (sig) {
	case SIGHUP:
		log_info("got SIGHUP: reloading %s", pgt.cfg->path);
		if (!loop_reload()) {
			audit_reload(NULL, false);
			return;
		}
		log_reopen();
		audit_reload(NULL, true);
		break;
	case SIGINT:
		loop_shutdown(false);
		break;
	case SIGTERM:
		log_info("got SIGTERM: exiting now");
		loop_shutdown(true);
		break;
	}
}

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: pgtenant [-d] [-v] [-q] [-u USER] [-R] [-V] [-h] [--check] CONFIG.ini\n"
	        "  -d, --daemon    run in the background (needs pidfile and logfile)\n"
	        "  -v, --verbose   more log output (repeat for more)\n"
	        "  -q, --quiet     log only errors\n"
	        "  -u, --user=USER switch to USER after opening the listening sockets\n"
	        "  -R, --reboot    online restart (not supported: run several instances behind a load\n"
	        "                  balancer and restart them one at a time)\n"
	        "  -V, --version   print the version and exit\n"
	        "  -h, --help      this help\n"
	        "      --check     validate CONFIG.ini, print every error with file:line, exit 1 on error\n");
}

static bool write_pidfile(const char *path)
{
	if (!path || !*path)
		return true;
	FILE *f = fopen(path, "w");
	if (!f) {
		log_error("cannot write pidfile %s: %s", path, strerror(errno));
		return false;
	}
	fprintf(f, "%d\n", (int)getpid());
	fclose(f);
	return true;
}

static bool daemonize(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return false;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return false;
	pid = fork();
	if (pid < 0)
		return false;
	if (pid > 0)
		_exit(0);
	int fd = open("/dev/null", O_RDWR);
	if (fd >= 0) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
	return true;
}

static bool switch_user(const char *user)
{
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		log_error("unknown user %s", user);
		return false;
	}
	if (setgid(pw->pw_gid) < 0 || initgroups(user, pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
		log_error("cannot switch to user %s: %s", user, strerror(errno));
		return false;
	}
	return true;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"daemon", no_argument, NULL, 'd'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"quiet", no_argument, NULL, 'q'},
	    {"user", required_argument, NULL, 'u'},
	    {"reboot", no_argument, NULL, 'R'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {"check", no_argument, NULL, 'C'},
	    {NULL, 0, NULL, 0},
	};
	bool daemon = false, check = false;
	int verbose = 0;
	bool quiet = false;
	const char *user = NULL;
	int opt;
	while ((opt = getopt_long(argc, argv, "dvqu:RVh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			daemon = true;
			break;
		case 'v':
			verbose++;
			break;
		case 'q':
			quiet = true;
			break;
		case 'u':
			user = optarg;
			break;
		case 'R':
			fprintf(stderr,
			        "pgtenant: -R (online restart) is not supported; run several instances "
			        "behind a load balancer and restart them one at a time\n");
			return 1;
		case 'V':
			printf("pgtenant %s\n", PGT_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		case 'C':
			check = true;
			break;
		default:
			usage(stderr);
			return 1;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 1;
	}
	const char *path = argv[optind];
	int nerr = 0;
	struct pgt_config *cfg = config_load(path, stderr, &nerr);
	if (check) {
		if (!cfg) {
			fprintf(stderr, "%s: %d error(s)\n", path, nerr);
			return 1;
		}
		char err[512];
		if (!tls_configure(cfg, false, err, sizeof(err)) ||
		    !jwt_configure(cfg, false, err, sizeof(err))) {
			fprintf(stderr, "%s: %s\n", path, err);
			config_free(cfg);
			return 1;
		}
		printf("%s: configuration OK\n", path);
		config_free(cfg);
		return 0;
	}
	if (!cfg) {
		fprintf(stderr, "pgtenant: %s has %d error(s); not starting\n", path, nerr);
		return 1;
	}
	pgt.cfg = cfg;
	log_set_verbosity(quiet ? PGT_LOG_ERROR : PGT_LOG_INFO + verbose);
	if (daemon && (!cfg->logfile[0] || !cfg->pidfile[0])) {
		fprintf(stderr, "pgtenant: -d needs logfile and pidfile in the config\n");
		return 1;
	}
	if (!log_open(cfg->logfile)) {
		fprintf(stderr, "pgtenant: cannot open logfile %s: %s\n", cfg->logfile, strerror(errno));
		return 1;
	}
	if (daemon && !daemonize()) {
		log_fatal("could not daemonize: %s", strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	pgt.base = event_base_new();
	pgt.coarse_now = util_now();
	if (!pgt.base) {
		log_fatal("could not create the event loop");
		return 1;
	}
	/* before the pidfile and the listeners: whoever sees them may signal us at
	 * once, and a SIGTERM that met the default action would leave the pidfile
	 * and the unix socket behind. The callbacks (and the janitor's timer) run
	 * only from the loop, when everything below is set up; nothing after the
	 * pidfile can fail without removing it. */
	static struct event *sigs[3];
	int signums[3] = {SIGHUP, SIGINT, SIGTERM};
	for (int i = 0; i < 3; i++) {
		sigs[i] = evsignal_new(pgt.base, signums[i], sig_cb, NULL);
		if (!sigs[i] || event_add(sigs[i], NULL) != 0) {
			log_fatal("could not install the signal handlers");
			return 1;
		}
	}
	if (!janitor_start()) {
		log_fatal("could not start the janitor timer");
		return 1;
	}
	char tls_err[512];
	if (!tls_configure(cfg, true, tls_err, sizeof(tls_err)) ||
	    !jwt_configure(cfg, true, tls_err, sizeof(tls_err))) {
		log_fatal("%s", tls_err);
		return 1;
	}
	pgt.bufsize = (uint32_t)cfg->pkt_buf;
	sbuf_global_init(pgt.bufsize);
	if (!dns_init()) {
		log_fatal("could not initialise DNS");
		return 1;
	}
	jwks_configure(cfg);
	audit_configure(cfg->audit_log); /* a file that does not open is retried, and logins go on */
	/* the pidfile exists before the port accepts connections, so that whoever
	 * waits for the port finds it */
	if (!write_pidfile(cfg->pidfile))
		return 1;
	if (!listener_open(cfg) || !metrics_start(cfg->metrics_listen) || (user && !switch_user(user))) {
		if (cfg->pidfile[0])
			unlink(cfg->pidfile);
		return 1;
	}
	log_info("pgtenant %s started (pid %d)", PGT_VERSION, (int)getpid());
	while (!pgt.exit_now) {
		event_base_loop(pgt.base, EVLOOP_ONCE);
		client_free_dead();
		server_free_dead();
	}
	log_info("shutting down");
	client_shutdown();
	audit_shutdown(); /* after client_shutdown's disconnects */
	listener_close_all();
	metrics_stop();
	janitor_stop();
	tls_shutdown();
	jwks_shutdown();
	jwt_shutdown();
	secretfile_shutdown();
	authq_shutdown();
	awscreds_shutdown();
	/* pgt.cfg, not cfg: a reload may have replaced the startup config */
	if (pgt.cfg->pidfile[0])
		unlink(pgt.cfg->pidfile);
	for (int i = 0; i < 3; i++)
		event_free(sigs[i]);
	dns_shutdown();
	config_free(pgt.cfg);
	pgt.cfg = NULL;
	return 0;
}
