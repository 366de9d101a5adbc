import type { Direction } from '../rules/model.js';
import type { EndpointInfo } from '../rules/dataplane.js';
import type { DropLogSource, DropVerdict } from '../rules/drop-log.js';
import type { NflogPacket } from '../lib/drop-log/nflog-packet.js';
import type { Logger } from '../lib/logger.js';
import { RingBuffer } from './ring-buffer.js';

/**
 * Turns what the kernel logged (NFLOG packets carrying the prefix of the rule that logged them) into
 * records of denied connections: who refused (the pod and direction the prefix stands for, in the
 * dataplane palisade installed), who else took part (the pod owning the other address), and the
 * policies. Nothing is re-evaluated after the fact: the prefix names the decision the kernel took.
 *
 * Records are kept newest first in a bounded ring, logged one JSON line each and counted. A
 * connection's retransmitted first packets (a SYN sent again, every one of them new to conntrack)
 * make one record. What never became a record is counted as lost: the kernel's rate limits (the
 * difference between a rule's reached and logged counters) and what the reader reports missing.
 */

export interface DropEndpoint {
  readonly ip: string;
  readonly namespace?: string;
  readonly pod?: string;
}

export interface DropRecord {
  readonly time: string;
  readonly verdict: DropVerdict;
  readonly direction: Direction;
  readonly protocol: string;
  /** The destination port; null for ICMP and protocols without ports. */
  readonly port: number | null;
  readonly source: DropEndpoint;
  readonly destination: DropEndpoint;
  readonly policies: readonly string[];
}

export interface DropQuery {
  /** "namespace/pod": records where it is the source or the destination. */
  readonly pod?: string;
  readonly limit?: number;
}

/** Why records went missing, as the lost counter's label says. */
export type LossReason = 'rate-limit' | 'reader';

export interface DropLogMetrics {
  denied(record: DropRecord): void;
  lost(reason: LossReason, count: number): void;
  /** The policies that may appear in records now; series of any other go. */
  policiesInUse(policies: ReadonlySet<string>): void;
}

/** A pod's logged and reached (denied or would-deny) packet counts in one direction, as the kernel holds them. */
export interface LogCounter {
  readonly chain: string;
  readonly direction: Direction;
  readonly reached: number;
  readonly logged: number;
}

export interface DropLogOptions {
  readonly capacity: number;
  readonly logger: Logger;
  readonly metrics: DropLogMetrics;
  readonly now?: () => number;
}

/** How long a superseded dataplane's prefixes still attribute packets logged just before it changed. */
const SUPERSEDED_GRACE_MS = 30_000;
/** Retransmissions of a refused connection's first packet within this window make no new record. */
const REPEAT_WINDOW_MS = 10_000;
/** Connections remembered for that; more than the kernel's limits let through in the window. */
const MAX_REMEMBERED = 50_000;

const PROTOCOL_NAMES: ReadonlyMap<number, string> = new Map([[1, 'ICMP'], [6, 'TCP'], [17, 'UDP'], [132, 'SCTP']]);

export class DropLog {
  private readonly ring: RingBuffer<DropRecord>;
  private readonly now: () => number;
  private sources = new Map<string, DropLogSource>();
  private superseded: { until: number; sources: Map<string, DropLogSource> }[] = [];
  private readonly recent = new Map<string, number>();
  private readonly lastCounters = new Map<string, { reached: number; logged: number }>();
  private countersBaselined = false;
  private lostTotal = 0;
  private podAt: (address: string) => string | null = () => null;
  private readonly unknownPrefixes = new Set<string>();
  private installedFrom: readonly EndpointInfo[] | null = null;

  constructor(private readonly options: DropLogOptions) {
    this.ring = new RingBuffer(options.capacity);
    this.now = options.now ?? Date.now;
  }

  /** Who owns an address ("namespace/name"), from the daemon's own view of the cluster. */
  setPodLookup(podAt: (address: string) => string | null): void {
    this.podAt = podAt;
  }

  /**
   * The endpoints of the dataplane about to be written: their prefixes are what the kernel logs from
   * the moment it is, and the previous ones stay known for a while for what it logged before.
   */
  install(endpoints: readonly EndpointInfo[]): void {
    // The compiler hands out the same list while no endpoint changed: nothing to learn then.
    if (endpoints === this.installedFrom) return;
    this.installedFrom = endpoints;
    const next = new Map<string, DropLogSource>();
    for (const e of endpoints) {
      if (e.ingressLog !== null) next.set(e.ingressLog.prefix, e.ingressLog);
      if (e.egressLog !== null) next.set(e.egressLog.prefix, e.egressLog);
    }
    const now = this.now();
    this.superseded = this.superseded.filter((s) => s.until > now);
    const gone = new Map([...this.sources].filter(([prefix]) => !next.has(prefix)));
    if (gone.size > 0) this.superseded.push({ until: now + SUPERSEDED_GRACE_MS, sources: gone });
    this.sources = next;
    this.options.metrics.policiesInUse(new Set([...next.values()].flatMap((s) => s.policies)));
  }

  /** One packet the kernel logged. */
  packet(packet: NflogPacket): void {
    const source = this.sourceOf(packet.prefix);
    if (source === undefined) {
      // Another program's rules on this group, or a rule from before a restart: said once per prefix.
      if (!this.unknownPrefixes.has(packet.prefix) && this.unknownPrefixes.size < 100) {
        this.unknownPrefixes.add(packet.prefix);
        this.options.logger.warn({ prefix: packet.prefix }, 'an NFLOG packet with a prefix no installed rule of palisade has: not recorded');
      }
      return;
    }
    const at = this.now();
    const key = `${source.prefix}|${packet.protocol}|${packet.source}|${packet.sourcePort ?? packet.icmpType ?? ''}|${packet.destination}|${packet.destinationPort ?? ''}`;
    const seen = this.recent.get(key);
    if (seen !== undefined && at - seen < REPEAT_WINDOW_MS) return;
    this.remember(key, at);
    const own = { namespace: source.namespace, pod: source.pod };
    const other = (ip: string): DropEndpoint => {
      const owner = this.podAt(ip);
      if (owner === null) return { ip };
      const slash = owner.indexOf('/');
      return { ip, namespace: owner.slice(0, slash), pod: owner.slice(slash + 1) };
    };
    const record: DropRecord = {
      time: packet.time.toISOString(),
      verdict: source.verdict,
      direction: source.direction,
      protocol: PROTOCOL_NAMES.get(packet.protocol) ?? String(packet.protocol),
      port: packet.protocol === 1 ? null : packet.destinationPort,
      source: source.direction === 'egress' ? { ip: packet.source, ...own } : other(packet.source),
      destination: source.direction === 'ingress' ? { ip: packet.destination, ...own } : other(packet.destination),
      policies: source.policies,
    };
    this.ring.push(record);
    const { time: _time, ...fields } = record;
    this.options.logger.info(fields, 'connection denied');
    this.options.metrics.denied(record);
  }

  /** Records the reader knows it missed (socket overruns, sequence gaps). */
  lost(count: number): void {
    if (count <= 0) return;
    this.lostTotal += count;
    this.options.metrics.lost('reader', count);
  }

  /**
   * The kernel's counters of each log rule and the rule after it. What reached the drop (or the
   * would-deny count) but was not logged, the rate limits held back. Counters restart from zero when
   * a chain is rewritten; the first reading after start is the baseline for the rules already there.
   */
  observeCounters(counters: readonly LogCounter[]): void {
    const seen = new Set<string>();
    let held = 0;
    for (const c of counters) {
      const key = `${c.chain}|${c.direction}`;
      seen.add(key);
      const last = this.lastCounters.get(key) ?? (this.countersBaselined ? { reached: 0, logged: 0 } : { reached: c.reached, logged: c.logged });
      const reset = c.reached < last.reached || c.logged < last.logged;
      const reached = reset ? c.reached : c.reached - last.reached;
      const logged = reset ? c.logged : c.logged - last.logged;
      held += Math.max(0, reached - logged);
      this.lastCounters.set(key, { reached: c.reached, logged: c.logged });
    }
    for (const key of this.lastCounters.keys()) if (!seen.has(key)) this.lastCounters.delete(key);
    this.countersBaselined = true;
    if (held > 0) {
      this.lostTotal += held;
      this.options.metrics.lost('rate-limit', held);
    }
  }

  query(query: DropQuery = {}): { drops: DropRecord[]; lost: number } {
    const limit = query.limit ?? Number.POSITIVE_INFINITY;
    const drops: DropRecord[] = [];
    const involves = (e: DropEndpoint): boolean => e.namespace !== undefined && `${e.namespace}/${e.pod}` === query.pod;
    for (const record of this.ring.newestFirst()) {
      if (drops.length >= limit) break;
      if (query.pod === undefined || involves(record.source) || involves(record.destination)) drops.push(record);
    }
    return { drops, lost: this.lostTotal };
  }

  private sourceOf(prefix: string): DropLogSource | undefined {
    const current = this.sources.get(prefix);
    if (current !== undefined) return current;
    const now = this.now();
    for (let i = this.superseded.length - 1; i >= 0; i--) {
      const old = this.superseded[i]!;
      if (old.until > now && old.sources.has(prefix)) return old.sources.get(prefix);
    }
    return undefined;
  }

  private remember(key: string, at: number): void {
    if (this.recent.size >= MAX_REMEMBERED) {
      for (const [k, t] of this.recent) {
        if (at - t < REPEAT_WINDOW_MS && this.recent.size < MAX_REMEMBERED) break;
        this.recent.delete(k);
      }
    }
    this.recent.delete(key);
    this.recent.set(key, at);
  }
}
