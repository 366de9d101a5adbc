/*
 * A minimal NFLOG reader on a raw netfilter netlink socket, for the nflog-reader benchmark's
 * comparison with ulogd: binds one group, asks for sequence numbers and the first 128 bytes of each
 * packet, and prints one line per record:
 *
 *   <seq> <kernel time in us, or 0> <protocol> <source> <destination> <sport|-> <dport|-> <icmp type|-> <prefix>
 *
 * and "overrun" when the socket's buffer overflowed (ENOBUFS). Exits on SIGTERM or SIGINT.
 *   nflog-read GROUP [RCVBUF_BYTES] [QTHRESHOLD]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_log.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t done;
static void on_signal(int sig) { (void)sig; done = 1; }

static int fd;
static unsigned seq_out = 1;

/* Sends one NFULNL_MSG_CONFIG with one attribute and waits for its ack; returns 0 or -errno. */
static int config(uint16_t group, uint16_t family, uint16_t type, const void *data, uint16_t len) {
	char buf[256];
	memset(buf, 0, sizeof buf);
	struct nlmsghdr *nlh = (struct nlmsghdr *)buf;
	nlh->nlmsg_type = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	nlh->nlmsg_seq = seq_out++;
	struct nfgenmsg *nfg = (struct nfgenmsg *)NLMSG_DATA(nlh);
	nfg->nfgen_family = family;
	nfg->version = NFNETLINK_V0;
	nfg->res_id = htons(group);
	struct nlattr *attr = (struct nlattr *)((char *)nfg + NLMSG_ALIGN(sizeof *nfg));
	attr->nla_type = type;
	attr->nla_len = NLA_HDRLEN + len;
	memcpy((char *)attr + NLA_HDRLEN, data, len);
	nlh->nlmsg_len = NLMSG_LENGTH(NLMSG_ALIGN(sizeof *nfg) + NLA_ALIGN(attr->nla_len));
	struct sockaddr_nl to = { .nl_family = AF_NETLINK };
	if (sendto(fd, buf, nlh->nlmsg_len, 0, (struct sockaddr *)&to, sizeof to) < 0) return -errno;
	for (;;) {
		char reply[4096];
		ssize_t n = recv(fd, reply, sizeof reply, 0);
		if (n < 0) return -errno;
		for (struct nlmsghdr *r = (struct nlmsghdr *)reply; NLMSG_OK(r, (size_t)n); r = NLMSG_NEXT(r, n)) {
			if (r->nlmsg_type == NLMSG_ERROR && r->nlmsg_seq == nlh->nlmsg_seq) return ((struct nlmsgerr *)NLMSG_DATA(r))->error;
		}
	}
}

static void print_record(struct nlmsghdr *nlh) {
	struct nfgenmsg *nfg = (struct nfgenmsg *)NLMSG_DATA(nlh);
	int len = nlh->nlmsg_len - NLMSG_LENGTH(sizeof *nfg);
	struct nlattr *attr = (struct nlattr *)((char *)nfg + NLMSG_ALIGN(sizeof *nfg));
	const char *prefix = "";
	unsigned long long us = 0;
	long long seq = -1;
	const unsigned char *pkt = NULL;
	int pktlen = 0;
	while (len >= (int)NLA_HDRLEN && attr->nla_len >= NLA_HDRLEN && attr->nla_len <= len) {
		void *data = (char *)attr + NLA_HDRLEN;
		switch (attr->nla_type & NLA_TYPE_MASK) {
		case NFULA_PREFIX: prefix = data; break;
		case NFULA_SEQ: seq = ntohl(*(uint32_t *)data); break;
		case NFULA_PAYLOAD: pkt = data; pktlen = attr->nla_len - NLA_HDRLEN; break;
		case NFULA_TIMESTAMP: {
			struct nfulnl_msg_packet_timestamp *ts = data;
			us = be64toh(ts->sec) * 1000000ULL + be64toh(ts->usec);
			break;
		}
		}
		len -= NLA_ALIGN(attr->nla_len);
		attr = (struct nlattr *)((char *)attr + NLA_ALIGN(attr->nla_len));
	}
	if (pkt == NULL || pktlen < 20 || (pkt[0] >> 4) != 4) return;
	int ihl = (pkt[0] & 15) * 4, proto = pkt[9];
	char src[16], dst[16], sport[8] = "-", dport[8] = "-", icmp[8] = "-";
	inet_ntop(AF_INET, pkt + 12, src, sizeof src);
	inet_ntop(AF_INET, pkt + 16, dst, sizeof dst);
	if ((proto == 6 || proto == 17 || proto == 132) && pktlen >= ihl + 4) {
		snprintf(sport, sizeof sport, "%u", (pkt[ihl] << 8) | pkt[ihl + 1]);
		snprintf(dport, sizeof dport, "%u", (pkt[ihl + 2] << 8) | pkt[ihl + 3]);
	} else if (proto == 1 && pktlen > ihl) {
		snprintf(icmp, sizeof icmp, "%u", pkt[ihl]);
	}
	printf("%lld %llu %d %s %s %s %s %s %s\n", seq, us, proto, src, dst, sport, dport, icmp, prefix);
}

int main(int argc, char **argv) {
	if (argc < 2) { fprintf(stderr, "usage: nflog-read GROUP [RCVBUF_BYTES] [QTHRESHOLD]\n"); return 2; }
	uint16_t group = (uint16_t)atoi(argv[1]);
	int rcvbuf = argc > 2 ? atoi(argv[2]) : 1 << 20;
	uint32_t qthresh = argc > 3 ? (uint32_t)atoi(argv[3]) : 1;
	/* Without SA_RESTART, so a signal ends the blocking recv() and the loop sees `done`. */
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
	if (fd < 0) { perror("socket"); return 1; }
	struct sockaddr_nl local = { .nl_family = AF_NETLINK };
	if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) { perror("bind"); return 1; }
	if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) perror("SO_RCVBUFFORCE");
	struct nfulnl_msg_config_cmd bindcmd = { .command = NFULNL_CFG_CMD_BIND };
	int err = config(group, AF_UNSPEC, NFULA_CFG_CMD, &bindcmd, sizeof bindcmd);
	if (err < 0) { fprintf(stderr, "cannot bind NFLOG group %u: %s\n", group, strerror(-err)); return 1; }
	struct nfulnl_msg_config_mode mode = { .copy_range = htonl(128), .copy_mode = NFULNL_COPY_PACKET };
	uint16_t flags = htons(NFULNL_CFG_F_SEQ);
	uint32_t qt = htonl(qthresh);
	if ((err = config(group, AF_UNSPEC, NFULA_CFG_MODE, &mode, sizeof mode)) < 0 ||
	    (err = config(group, AF_UNSPEC, NFULA_CFG_FLAGS, &flags, sizeof flags)) < 0 ||
	    (err = config(group, AF_UNSPEC, NFULA_CFG_QTHRESH, &qt, sizeof qt)) < 0) {
		fprintf(stderr, "cannot configure NFLOG group %u: %s\n", group, strerror(-err));
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	static char buf[1 << 17];
	while (!done) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0) {
			if (errno == ENOBUFS) { printf("overrun\n"); fflush(stdout); continue; }
			if (errno == EINTR) continue;
			perror("recv");
			return 1;
		}
		for (struct nlmsghdr *nlh = (struct nlmsghdr *)buf; NLMSG_OK(nlh, (size_t)n); nlh = NLMSG_NEXT(nlh, n)) {
			if ((nlh->nlmsg_type >> 8) == NFNL_SUBSYS_ULOG && (nlh->nlmsg_type & 0xff) == NFULNL_MSG_PACKET) print_record(nlh);
		}
		fflush(stdout);
	}
	return 0;
}
