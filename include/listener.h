/*
 * Listening sockets: TCP on listen_addr:listen_port and the unix socket
 * .s.PGSQL.<port> in unix_socket_dir.
 */
#ifndef PGT_LISTENER_H
#define PGT_LISTENER_H

#include <stdbool.h>

#include "util.h"

struct pgt_config;

bool listener_open(const struct pgt_config *cfg) _MUSTCHECK;
/* Close (and unlink the unix socket): SIGINT and exit. */
void listener_close_all(void);

#endif
