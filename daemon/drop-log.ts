import type { Direction } from '../rules/model.js';
import type { EndpointInfo } from '../rules/dataplane.js';
import type { ClusterDenyLog, DropLogSource, DropVerdict } from '../rules/drop-log.js';
import type { ClusterTier } from '../rules/model.js';
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
  /** The NetworkPolicies isolating the refusing pod ("namespace/name"); empty when a ClusterNetworkPolicy denied. */
  readonly policies: readonly string[];
  /** The ClusterNetworkPolicy rule that denied, when one did. */
  readonly clusterPolicy?: { readonly tier: ClusterTier; readonly name: string; readonly priority: number; readonly rule: number; readonly ruleName: string };
}

/** What a prefix stands for: a pod's isolation drop, or a ClusterNetworkPolicy Deny rule shared by the pods it selects. */
type Source = { readonly kind: 'pod'; readonly source: DropLogSource } | { readonly kind: 'cluster'; readonly log: ClusterDenyLog };

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
  /**
   * The policies that may appear in records now ("namespace/name", and "ClusterNetworkPolicy/<name>"
   * for cluster ones, whose names no namespace can hold); series of any other go.
   */
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
  private sources = new Map<string, Source>();
  private superseded: { until: number; sources: Map<string, Source> }[] = [];
  private readonly recent = new Map<string, number>();
  private readonly lastCounters = new Map<string, { reached: number; logged: number }>();
  private countersBaselined = false;
  private lostTotal = 0;
  private podAt: (address: string) => string | null = () => null;
  private readonly unknownPrefixes = new Set<string>();
  private installedFrom: readonly EndpointInfo[] | null = null;
  private installedClusterFrom: readonly ClusterDenyLog[] | null = null;

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
  install(endpoints: readonly EndpointInfo[], clusterLogs: readonly ClusterDenyLog[] = []): void {
    // The compiler hands out the same lists while nothing changed: nothing to learn then.
    if (endpoints === this.installedFrom && clusterLogs === this.installedClusterFrom) return;
    this.installedFrom = endpoints;
    this.installedClusterFrom = clusterLogs;
    const next = new Map<string, Source>();
    for (const e of endpoints) {
      if (e.ingressLog !== null) next.set(e.ingressLog.prefix, { kind: 'pod', source: e.ingressLog });
      if (e.egressLog !== null) next.set(e.egressLog.prefix, { kind: 'pod', source: e.egressLog });
    }
    for (const log of clusterLogs) next.set(log.prefix, { kind: 'cluster', log });
    const now = this.now();
    this.superseded = this.superseded.filter((s) => s.until > now);
    const gone = new Map([...this.sources].filter(([prefix]) => !next.has(prefix)));
    if (gone.size > 0) this.superseded.push({ until: now + SUPERSEDED_GRACE_MS, sources: gone });
    this.sources = next;
    this.options.metrics.policiesInUse(new Set([...next.values()].flatMap((s) => (s.kind === 'pod' ? s.source.policies : [`ClusterNetworkPolicy/${s.log.policy}`]))));
  }

  /** One packet the kernel logged. */
  packet(packet: NflogPacket): void {
    const found = this.sourceOf(packet.prefix);
    if (found === undefined) {
      // Another program's rules on this group, or a rule from before a restart: said once per prefix.
      if (!this.unknownPrefixes.has(packet.prefix) && this.unknownPrefixes.size < 100) {
        this.unknownPrefixes.add(packet.prefix);
        this.options.logger.warn({ prefix: packet.prefix }, 'an NFLOG packet with a prefix no installed rule of palisade has: not recorded');
      }
      return;
    }
    const at = this.now();
    const key = `${packet.prefix}|${packet.protocol}|${packet.source}|${packet.sourcePort ?? packet.icmpType ?? ''}|${packet.destination}|${packet.destinationPort ?? ''}`;
    const seen = this.recent.get(key);
    if (seen !== undefined && at - seen < REPEAT_WINDOW_MS) return;
    this.remember(key, at);
    const other = (ip: string): DropEndpoint => {
      const owner = this.podAt(ip);
      if (owner === null) return { ip };
      const slash = owner.indexOf('/');
      return { ip, namespace: owner.slice(0, slash), pod: owner.slice(slash + 1) };
    };
    const direction = found.kind === 'pod' ? found.source.direction : found.log.direction;
    // A pod's own rule names it; a ClusterNetworkPolicy rule is shared, and its pod is the packet's own address.
    const own = (ip: string): DropEndpoint => (found.kind === 'pod' ? { ip, namespace: found.source.namespace, pod: found.source.pod } : other(ip));
    const record: DropRecord = {
      time: packet.time.toISOString(),
      verdict: found.kind === 'pod' ? found.source.verdict : 'denied',
      direction,
      protocol: PROTOCOL_NAMES.get(packet.protocol) ?? String(packet.protocol),
      port: packet.protocol === 1 ? null : packet.destinationPort,
      source: direction === 'egress' ? own(packet.source) : other(packet.source),
      destination: direction === 'ingress' ? own(packet.destination) : other(packet.destination),
      policies: found.kind === 'pod' ? found.source.policies : [],
      ...(found.kind === 'cluster' ? { clusterPolicy: { tier: found.log.tier, name: found.log.policy, priority: found.log.priority, rule: found.log.rule, ruleName: found.log.ruleName } } : {}),
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

  private sourceOf(prefix: string): Source | undefined {
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
