/*
 * Log output: stderr or a logfile opened in append mode.  Lines are written
 * with one write() each so that concurrent writers (a second instance, a
 * logrotate copy) never interleave inside a line.
 */
#include "log.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 2;
static int verbosity = PGT_LOG_INFO;
static char *log_path;

static const char *level_names[] = {"FATAL", "ERROR", "WARNING", "LOG", "DEBUG", "NOISE"};

bool log_open(const char *logfile)
{
	if (!logfile || !*logfile) {
		if (log_fd > 2)
			close(log_fd);
		log_fd = 2;
		free(log_path);
		log_path = NULL;
		return true;
	}
	int fd = open(logfile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return false;
	if (log_fd > 2)
		close(log_fd);
	log_fd = fd;
	if (log_path != logfile) {
		free(log_path);
		log_path = xstrdup(logfile);
	}
	return true;
}

void log_reopen(void)
{
	if (log_path) {
		char *p = xstrdup(log_path);
		if (!log_open(p))
			log_error("could not reopen logfile %s", p);
		free(p);
	}
}

void log_set_verbosity(int level)
{
	verbosity = level;
}
int log_get_verbosity(void)
{
	return verbosity;
}
bool log_enabled(int level)
{
	return level <= verbosity;
}

void log_vmsg(int level, const char *prefix, const char *fmt, va_list ap)
{
	if (level > verbosity && level > PGT_LOG_ERROR)
		return;
	char line[2048];
	struct timeval tv;
	struct tm tm;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%04d-%02d-%02d %02d:%02d:%02d.%03d UTC [%d] %s %s",
	                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	                 (int)(tv.tv_usec / 1000), (int)getpid(), level_names[level], prefix ? prefix : "");
	if (n < 0)
		return;
	if ((size_t)n < sizeof(line)) {
		int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		if (m > 0)
			n += m;
	}
	if ((size_t)n >= sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	ssize_t w = write(log_fd, line, (size_t)n);
	(void)w;
}

void log_msg(int level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, NULL, fmt, ap);
	va_end(ap);
}
