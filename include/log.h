/*
 * Logging.  One line per event, with a timestamp and the pid; lines about a
 * connection are prefixed by that connection's identity (see client_log and
 * server_log) so that an SRE can grep one client, database or tenant.
 */
#ifndef PGT_LOG_H
#define PGT_LOG_H

#include <stdarg.h>
#include <stdbool.h>

#include "util.h"

enum pgt_log_level {
	PGT_LOG_FATAL = 0,
	PGT_LOG_ERROR = 1,
	PGT_LOG_WARNING = 2,
	PGT_LOG_INFO = 3, /* printed as LOG, like PgBouncer */
	PGT_LOG_DEBUG = 4,
	PGT_LOG_NOISE = 5,
};

/* Open logfile (NULL or "" = stderr); verbosity is the highest level printed. */
bool log_open(const char *logfile) _MUSTCHECK;
void log_set_verbosity(int level);
int log_get_verbosity(void);
void log_reopen(void);
bool log_enabled(int level);

void log_msg(int level, const char *fmt, ...) PGT_PRINTF(2, 3);
void log_vmsg(int level, const char *prefix, const char *fmt, va_list ap) PGT_PRINTF(3, 0);

#define log_fatal(...) log_msg(PGT_LOG_FATAL, __VA_ARGS__)
#define log_error(...) log_msg(PGT_LOG_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(PGT_LOG_WARNING, __VA_ARGS__)
#define log_info(...) log_msg(PGT_LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                                       \
	do {                                                                                                 \
		if (log_enabled(PGT_LOG_DEBUG))                                                              \
			log_msg(PGT_LOG_DEBUG, __VA_ARGS__);                                                 \
	} while (0)
#define log_noise(...)                                                                                       \
	do {                                                                                                 \
		if (log_enabled(PGT_LOG_NOISE))                                                              \
			log_msg(PGT_LOG_NOISE, __VA_ARGS__);                                                 \
	} while (0)

#endif
