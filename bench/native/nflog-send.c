/*
 * The nflog-reader benchmark's load: COUNT UDP datagrams of one byte from one socket to
 * DST:BASE_PORT+i (i = 0..COUNT-1), at RATE per second (0: as fast as possible), so each logged
 * record names the datagram it stands for by its destination port. Prints, when done, one line per
 * datagram: "<i> <CLOCK_REALTIME microseconds when it was sent>".
 *   nflog-send DST BASE_PORT COUNT RATE
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

static uint64_t now_us(clockid_t clock) {
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int main(int argc, char **argv) {
	if (argc != 5) { fprintf(stderr, "usage: nflog-send DST BASE_PORT COUNT RATE\n"); return 2; }
	int base = atoi(argv[2]), count = atoi(argv[3]);
	double rate = atof(argv[4]);
	if (count <= 0 || base <= 0 || base + count > 65536) { fprintf(stderr, "ports out of range\n"); return 2; }
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) { perror("socket"); return 1; }
	struct sockaddr_in to = { .sin_family = AF_INET };
	if (inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) { fprintf(stderr, "bad address\n"); return 2; }
	uint64_t *sent = calloc((size_t)count, sizeof *sent);
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (int i = 0; i < count; i++) {
		if (rate > 0) {
			double at = (double)i / rate;
			struct timespec due = start;
			due.tv_sec += (time_t)at;
			due.tv_nsec += (long)((at - (double)(time_t)at) * 1e9);
			if (due.tv_nsec >= 1000000000L) { due.tv_sec++; due.tv_nsec -= 1000000000L; }
			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
		}
		to.sin_port = htons((uint16_t)(base + i));
		sent[i] = now_us(CLOCK_REALTIME);
		/* A datagram the firewall refuses still counts as sent: the log rule saw it first. */
		sendto(fd, "x", 1, 0, (struct sockaddr *)&to, sizeof to);
	}
	for (int i = 0; i < count; i++) printf("%d %llu\n", i, (unsigned long long)sent[i]);
	return 0;
}
