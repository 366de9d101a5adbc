/*
 * Load-generator client for bench/packet-path.bench.ts: runs inside a pod's network namespace, against
 * pp-server in another pod.
 *
 *   pp-client crr    IP PORT SECONDS THREADS TIMEOUT_MS MAX_CONNECTIONS
 *   pp-client stream IP PORT SECONDS TIMEOUT_MS
 *
 * crr: THREADS threads each open a connection, send one byte, read the one-byte answer and close,
 * over and over, until SECONDS have passed or MAX_CONNECTIONS were made in all. Every close resets the
 * connection (SO_LINGER 0), so the client leaves no TIME_WAIT behind and never runs out of ports.
 * Prints "connections=N refused=N timeouts=N errors=N seconds=S cpu=S".
 *
 * stream: one connection; sends 256 KiB writes for SECONDS, then half-closes and waits for the server
 * to close, so every byte counted has been received. Prints "bytes=N seconds=S cpu=S".
 *
 * cpu is the user + system time of the client process, packet processing done in its context included.
 *
 * TIMEOUT_MS bounds every connect, read and write, so a dropped SYN or a stalled path ends the run.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STREAM_BUFFER (256 * 1024)

static struct sockaddr_in target;
static double seconds;
static struct timeval timeout;
static long long max_connections;
static _Atomic long long started_connections;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/** CPU seconds (user + system) this process has used so far, all threads. */
static double cpu(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6 + (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6;
}

static int open_socket(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return fd;
}

struct crr_result {
  long long ok, refused, timeouts, errors;
};

static void *crr_thread(void *arg) {
  struct crr_result *result = arg;
  const struct linger reset = { .l_onoff = 1, .l_linger = 0 };
  double deadline = now() + seconds;
  while (now() < deadline) {
    if (atomic_fetch_add(&started_connections, 1) >= max_connections) break;
    int fd = open_socket();
    if (fd < 0) { result->errors++; continue; }
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    char byte = 'c';
    if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) {
      if (errno == ECONNREFUSED) result->refused++;
      else if (errno == EINPROGRESS || errno == ETIMEDOUT || errno == EAGAIN) result->timeouts++;
      else result->errors++;
    } else if (write(fd, &byte, 1) != 1 || read(fd, &byte, 1) != 1) {
      if (errno == EAGAIN || errno == ETIMEDOUT) result->timeouts++;
      else result->errors++;
    } else {
      result->ok++;
    }
    close(fd);
  }
  return NULL;
}

static int run_crr(int threads) {
  pthread_t ids[64];
  struct crr_result results[64];
  memset(results, 0, sizeof results);
  double began = now();
  for (int i = 0; i < threads; i++) {
    if (pthread_create(&ids[i], NULL, crr_thread, &results[i]) != 0) { fprintf(stderr, "pthread_create failed\n"); return 1; }
  }
  struct crr_result total = { 0, 0, 0, 0 };
  for (int i = 0; i < threads; i++) {
    pthread_join(ids[i], NULL);
    total.ok += results[i].ok;
    total.refused += results[i].refused;
    total.timeouts += results[i].timeouts;
    total.errors += results[i].errors;
  }
  printf("connections=%lld refused=%lld timeouts=%lld errors=%lld seconds=%.6f cpu=%.6f\n", total.ok, total.refused, total.timeouts, total.errors, now() - began, cpu());
  return 0;
}

static int run_stream(void) {
  char *buffer = malloc(STREAM_BUFFER);
  if (buffer == NULL) { perror("malloc"); return 1; }
  memset(buffer, 'x', STREAM_BUFFER);
  int fd = open_socket();
  if (fd < 0) { perror("socket"); return 1; }
  if (connect(fd, (struct sockaddr *)&target, sizeof target) < 0) { perror("connect"); return 1; }
  char kind = 's';
  if (write(fd, &kind, 1) != 1) { perror("write"); return 1; }
  long long bytes = 0;
  double began = now();
  double deadline = began + seconds;
  while (now() < deadline) {
    ssize_t sent = write(fd, buffer, STREAM_BUFFER);
    if (sent < 0) {
      if (errno == EINTR) continue;
      perror("write");
      return 1;
    }
    bytes += sent;
  }
  shutdown(fd, SHUT_WR);
  for (;;) {
    ssize_t got = read(fd, buffer, STREAM_BUFFER);
    if (got > 0) continue;
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) { perror("read (waiting for the server to close)"); return 1; }
    break;
  }
  printf("bytes=%lld seconds=%.6f cpu=%.6f\n", bytes, now() - began, cpu());
  close(fd);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  int crr = argc == 8 && strcmp(argv[1], "crr") == 0;
  int stream = argc == 6 && strcmp(argv[1], "stream") == 0;
  if (!crr && !stream) {
    fprintf(stderr, "usage: %s crr IP PORT SECONDS THREADS TIMEOUT_MS MAX_CONNECTIONS\n       %s stream IP PORT SECONDS TIMEOUT_MS\n", argv[0], argv[0]);
    return 2;
  }
  memset(&target, 0, sizeof target);
  target.sin_family = AF_INET;
  int port = atoi(argv[3]);
  seconds = atof(argv[4]);
  long timeout_ms = atol(argv[crr ? 6 : 5]);
  if (inet_pton(AF_INET, argv[2], &target.sin_addr) != 1 || port <= 0 || port > 65535 || seconds <= 0 || seconds > 60 || timeout_ms <= 0) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  target.sin_port = htons((unsigned short)port);
  timeout.tv_sec = timeout_ms / 1000;
  timeout.tv_usec = (timeout_ms % 1000) * 1000;
  if (stream) return run_stream();
  int threads = atoi(argv[5]);
  max_connections = atoll(argv[7]);
  if (threads <= 0 || threads > 64 || max_connections <= 0) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  return run_crr(threads);
}
