/*
 * Listening sockets.  accept4() in a bounded loop per readable event, so a
 * connection storm cannot starve established clients of loop turns.  When
 * the process runs out of file descriptors, the pending connection stays
 * in the kernel's queue and the listening socket stays readable: accepting
 * pauses for a moment instead of spinning, with one log line per pause.
 */
#include "listener.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "config.h"
#include "log.h"
#include "loop.h"
#include "sbuf.h"

struct listener {
	int fd;
	bool is_unix;
	char *unix_path;
	struct event ev;
	struct listener *next;
};

static struct listener *listeners;
static struct event *resume_ev; /* re-enables accepting after a pause */

#define ACCEPT_PAUSE_USEC 1000000

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	for (struct listener *l = listeners; l; l = l->next)
		event_add(&l->ev, NULL);
}

static void pause_accepting(const char *why)
{
	/* silent connections that never logged in give their descriptors back
	 * first; if there were some, accepting resumes almost at once */
	int freed = 0;
	while (freed < 16 && client_evict_silent_login(NULL))
		freed++;
	long usec = freed ? 10000 : ACCEPT_PAUSE_USEC;
	/* one line per pause, but at most one a second */
	static usec_t last_log;
	static int unlogged;
	usec_t now = loop_now();
	if (now - last_log >= USEC_PER_SEC) {
		log_error(
		    "accept: %s: not accepting connections for %ld ms (raise the open file limit, ulimit "
		    "-n, or lower max_client_conn)%s; %d more pauses since the last line",
		    why, usec / 1000, freed ? "; closed silent connections that had not logged in" : "",
		    unlogged);
		last_log = now;
		unlogged = 0;
	} else {
		unlogged++;
	}
	for (struct listener *l = listeners; l; l = l->next)
		event_del(&l->ev);
	if (!resume_ev)
		resume_ev = evtimer_new(pgt.base, resume_cb, NULL);
	struct timeval tv = {usec / 1000000, usec % 1000000};
	if (resume_ev)
		evtimer_add(resume_ev, &tv);
}

static void accept_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	(void)what;
	for (int i = 0; i < 64; i++) {
		union pgt_addr addr;
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int cfd = accept4(fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				pause_accepting(strerror(errno));
			return;
		}
		memset(&addr, 0, sizeof(addr));
		if (l->is_unix) {
			addr.sa.sa_family = AF_UNIX;
		} else {
			memcpy(&addr, &ss, PGT_MIN(len, (socklen_t)sizeof(addr)));
			const struct pgt_config *cfg = pgt.cfg;
			util_tcp_options(cfd, cfg->tcp_keepalive, cfg->tcp_keepidle, cfg->tcp_keepintvl,
			                 cfg->tcp_keepcnt, cfg->tcp_user_timeout);
		}
		client_accept(cfd, &addr);
	}
}

static bool add_listener(int fd, bool is_unix, const char *path)
{
	struct listener *l = xcalloc(1, sizeof(*l));
	l->fd = fd;
	l->is_unix = is_unix;
	l->unix_path = path ? xstrdup(path) : NULL;
	event_assign(&l->ev, pgt.base, fd, EV_READ | EV_PERSIST, accept_cb, l);
	event_add(&l->ev, NULL);
	l->next = listeners;
	listeners = l;
	return true;
}

static bool listen_tcp(const char *host, int port)
{
	struct addrinfo hints, *res, *ai;
	char portstr[16];
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
	snprintf(portstr, sizeof(portstr), "%d", port);
	/* startup only, before the loop runs: a blocking lookup is acceptable here,
	 * and listen_addr must be numeric or '*' anyway */
	int r = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, portstr, &hints, &res);
	if (r != 0) {
		log_error("listen_addr %s: %s (use a numeric address or *)", host, gai_strerror(r));
		return false;
	}
	int n = 0;
	for (ai = res; ai; ai = ai->ai_next) {
		int fd =
		    socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
			log_error("could not listen on %s:%d: %s", host, port, strerror(errno));
			close(fd);
			freeaddrinfo(res);
			return false;
		}
		add_listener(fd, false, NULL);
		n++;
	}
	freeaddrinfo(res);
	if (n)
		log_info("listening on %s:%d", host, port);
	return n > 0;
}

static bool listen_unix(const char *dir, int port, int mode)
{
	struct sockaddr_un un;
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	if ((size_t)snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", dir, port) >=
	    sizeof(un.sun_path)) {
		log_error("unix_socket_dir too long");
		return false;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	/* a stale socket from a crashed run: only remove it if nobody answers */
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0) {
		if (connect(probe, (struct sockaddr *)&un, sizeof(un)) == 0) {
			log_error("another process is listening on %s", un.sun_path);
			close(probe);
			close(fd);
			return false;
		}
		close(probe);
	}
	unlink(un.sun_path);
	if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(fd, 4096) < 0) {
		log_error("could not listen on %s: %s", un.sun_path, strerror(errno));
		close(fd);
		return false;
	}
	chmod(un.sun_path, (mode_t)mode);
	log_info("listening on %s", un.sun_path);
	return add_listener(fd, true, un.sun_path);
}

bool listener_open(const struct pgt_config *cfg)
{
	char *addrs = xstrdup(cfg->listen_addr);
	bool ok = true;
	for (char *save = NULL, *tok = strtok_r(addrs, ", \t", &save); tok && ok;
	     tok = strtok_r(NULL, ", \t", &save))
		ok = listen_tcp(tok, cfg->listen_port);
	free(addrs);
	if (ok && cfg->unix_socket_dir[0])
		ok = listen_unix(cfg->unix_socket_dir, cfg->listen_port, cfg->unix_socket_mode);
	return ok;
}

void listener_close_all(void)
{
	if (resume_ev) {
		event_free(resume_ev);
		resume_ev = NULL;
	}
	while (listeners) {
		struct listener *l = listeners;
		listeners = l->next;
		event_del(&l->ev);
		close(l->fd);
		if (l->unix_path)
			unlink(l->unix_path);
		free(l->unix_path);
		free(l);
	}
}
