/*
 * tcp_proxy.h - a TCP relay between a process under test and a server
 * (redis-server), whose link a test can cut and restore: the "network
 * partition" of a fault test, without network namespaces.
 *
 * A cut behaves as a link that went down: nothing already connected
 * passes either way (bytes wait in the kernel's buffers, no FIN, no RST),
 * and a new connection is left in the listen backlog, never relayed, so a
 * client sees its commands time out, as it would across a dead link. On
 * restore, waiting bytes flow again; a client that gave up and closed its
 * side meanwhile finds its old connection closed and makes a new one.
 *
 * The relay runs on a thread of its own (poll()), 127.0.0.1 only.
 */
#ifndef CODA_TEST_TCP_PROXY_H
#define CODA_TEST_TCP_PROXY_H

typedef struct tc_proxy tc_proxy;

/* Listens on 127.0.0.1:0 and relays every connection to
 * 127.0.0.1:target_port. NULL on failure. */
tc_proxy *tc_proxy_start(int target_port);
/* The port clients connect to. */
int tc_proxy_port(const tc_proxy *p);
/* Takes the link down / brings it back up. Returns once the relay thread
 * has seen the change. */
void tc_proxy_cut(tc_proxy *p);
void tc_proxy_restore(tc_proxy *p);
/* Closes every relayed connection (their clients see them closed) and
 * relays new ones to target_port: a failover that moves an address to
 * another server (a promoted replica). */
void tc_proxy_retarget(tc_proxy *p, int target_port);
/* Connections relayed so far (made through the proxy, while up). */
int tc_proxy_connections(const tc_proxy *p);
/* Closes every connection and the listener, joins the thread, frees p. */
void tc_proxy_stop(tc_proxy *p);

#endif /* CODA_TEST_TCP_PROXY_H */
