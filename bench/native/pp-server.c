/*
 * Load-generator server for bench/packet-path.bench.ts: runs inside a pod's network namespace.
 *
 *   pp-server PORT THREADS LIFETIME_SECONDS
 *
 * Listens on 0.0.0.0:PORT; THREADS threads accept on the one listener. Each connection starts with one
 * byte from the client that says what it wants:
 *   'c'  connect/request/response/close: the server answers one byte and closes (TCP_CRR);
 *   's'  stream: the server reads and discards until EOF, then closes.
 * Prints "ready" once listening. Exits by itself after LIFETIME_SECONDS (alarm), so it can never
 * outlive the benchmark that started it by much, even if nobody kills it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SINK_BUFFER (256 * 1024)

static int listener;

static void serve(int fd, char *buffer) {
  char kind;
  ssize_t n = read(fd, &kind, 1);
  if (n == 1 && kind == 'c') {
    char answer = 'k';
    if (write(fd, &answer, 1) < 0) { /* the client went away: nothing to do */ }
  } else if (n == 1 && kind == 's') {
    for (;;) {
      ssize_t got = read(fd, buffer, SINK_BUFFER);
      if (got > 0) continue;
      if (got < 0 && errno == EINTR) continue;
      break;
    }
  }
  close(fd);
}

static void *acceptor(void *unused) {
  (void)unused;
  char *buffer = malloc(SINK_BUFFER);
  if (buffer == NULL) { perror("malloc"); exit(1); }
  for (;;) {
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) continue;
      perror("accept");
      exit(1);
    }
    serve(fd, buffer);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s PORT THREADS LIFETIME_SECONDS\n", argv[0]);
    return 2;
  }
  int port = atoi(argv[1]);
  int threads = atoi(argv[2]);
  int lifetime = atoi(argv[3]);
  if (port <= 0 || port > 65535 || threads <= 0 || threads > 64 || lifetime <= 0) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  alarm((unsigned)lifetime); /* default action of SIGALRM: terminate */

  listener = socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) { perror("socket"); return 1; }
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port), .sin_addr = { .s_addr = htonl(INADDR_ANY) } };
  if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0) { perror("bind"); return 1; }
  if (listen(listener, 4096) < 0) { perror("listen"); return 1; }

  pthread_t ids[64];
  for (int i = 0; i < threads; i++) {
    if (pthread_create(&ids[i], NULL, acceptor, NULL) != 0) { fprintf(stderr, "pthread_create failed\n"); return 1; }
  }
  printf("ready\n");
  fflush(stdout);
  for (int i = 0; i < threads; i++) pthread_join(ids[i], NULL);
  return 0;
}
