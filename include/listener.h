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
void listener_close_all(void);
/* Stop/start accepting (max_client_conn reached, shutdown). */
void listener_pause(bool paused);

#endif
