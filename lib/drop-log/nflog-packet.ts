/**
 * The drop log's record: one packet that an NFLOG rule of palisade's chains logged before the DROP
 * that denies a new connection, and the seam through which a reader hands such records to the daemon.
 * Node.js cannot read NFLOG (it needs a netlink socket), so a reader runs a program that can
 * (ulogd-reader.ts) and turns its output into these records.
 */
export interface NflogPacket {
  readonly prefix: string;            // the rule's --nflog-prefix
  readonly time: Date;                // kernel timestamp if available, else when read
  readonly source: string;            // dotted IPv4
  readonly destination: string;
  readonly protocol: number;          // IP protocol number (6 tcp, 17 udp, 1 icmp, 132 sctp...)
  readonly sourcePort: number | null; // null when not TCP/UDP/SCTP
  readonly destinationPort: number | null;
  readonly icmpType: number | null;   // null unless ICMP
}

export interface NflogReaderEvents {
  packet(p: NflogPacket): void;
  /** Records lost between the kernel and palisade (netlink overrun, sequence gaps), with why. */
  lost(count: number, why: string): void;
}

export interface NflogReader {
  start(): Promise<void>;   // resolves once it is listening (bound to the group), rejects with a clear PalisadeError (lib/errors.ts) if it cannot (binary missing, group busy, ...)
  stop(): Promise<void>;
  readonly running: boolean;
}
