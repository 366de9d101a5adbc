import type { Dataplane } from '../../rules/dataplane.js';
import type { Names } from '../../rules/names.js';
import { PalisadeError } from '../errors.js';
import type { Ipset } from '../ipset.js';
import type { Iptables } from '../iptables/iptables.js';
import type { Logger } from '../logger.js';
import { silentLogger } from '../logger.js';
import type { LiveState } from './live-state.js';
import { chainHashes, liveStateFromDesired, liveStateFromKernel } from './live-state.js';
import { isCountedDrop } from '../../rules/endpoint-chains.js';
import type { Direction } from '../../rules/model.js';
import { plan, planIsEmpty } from './plan.js';
import { removeOwnedChains } from './cleanup.js';
import { HISTORIC_TABLES } from '../../rules/dataplane.js';
import type { Finding, FindingKind, Plan } from './plan.js';

/**
 * Keeps the kernel at the desired dataplane. Desired and actual state are kept apart, as in Felix's
 * Table: the applier remembers what it wrote and writes only the difference; after any failure it
 * forgets, and the next apply starts from a fresh read of the kernel. After every write, and on every
 * refresh, it reads the kernel back and repairs whatever someone else changed, counting each repair.
 */

export interface ApplyReport {
  /** The writes made to reach the desired state (empty when nothing changed). */
  readonly plan: Plan | null;
  /** Differences found between what was written and what the kernel held, and repaired. */
  readonly repaired: readonly Finding[];
  /** Sets that could not be destroyed yet (still referenced); tried again next time. */
  readonly pendingDestroy: readonly string[];
  /** Where the time went, in milliseconds: reading state, planning, writing, reading back. */
  readonly timings: { readonly read: number; readonly plan: number; readonly write: number; readonly check: number };
}

const NO_TIME = { read: 0, plan: 0, write: 0, check: 0 } as const;

export interface Counter {
  readonly packets: number;
  readonly bytes: number;
}

/** A pod's dropped traffic per direction; null where the pod is not isolated (it has no drop rule). */
export interface DropCounters {
  readonly namespace: string;
  readonly name: string;
  readonly ingress: Counter | null;
  readonly egress: Counter | null;
  /** Per direction with a drop-log rule: packets that reached the drop (or would-deny count), and those logged. */
  readonly ingressLog: LogCounts | null;
  readonly egressLog: LogCounts | null;
}

export interface LogCounts {
  readonly chain: string;
  readonly reached: number;
  readonly logged: number;
}

export class DataplaneWriteError extends PalisadeError {
  constructor(step: string, cause: unknown) {
    super('DATAPLANE_WRITE_FAILED', `${step} failed; the previous rules stay in force: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'DataplaneWriteError';
  }
}

export interface ApplierOptions {
  readonly iptables: Iptables;
  readonly ipset: Ipset;
  readonly names: Names;
  readonly logger?: Logger;
}

export class DataplaneApplier {
  private readonly iptables: Iptables;
  private readonly ipset: Ipset;
  private readonly names: Names;
  private readonly logger: Logger;
  /** What the kernel holds as far as we know; null means "unknown: read it before writing". */
  private remembered: LiveState | null = null;
  private desired: Dataplane | null = null;
  private readonly repairs = new Map<FindingKind, number>();
  /** A write happened that has not been read back yet. */
  private unchecked = false;
  /** Whether the tables earlier versions used have been emptied of palisade's chains since start. */
  private historicCleared = false;

  constructor(options: ApplierOptions) {
    this.iptables = options.iptables;
    this.ipset = options.ipset;
    this.names = options.names;
    this.logger = options.logger ?? silentLogger;
  }

  get backend(): string {
    return this.iptables.backend;
  }

  /** Repairs made so far, by kind of drift. */
  repairCounts(): ReadonlyMap<FindingKind, number> {
    return this.repairs;
  }

  async readLive(): Promise<LiveState> {
    const owns = (name: string) => this.names.owns(name);
    const [table, sets] = await Promise.all([this.iptables.save(), this.ipset.save(owns)]);
    return liveStateFromKernel(table, sets, owns);
  }

  /** Brings the kernel to `desired`. Throws DataplaneWriteError, leaving the previous rules in force. */
  async apply(desired: Dataplane): Promise<ApplyReport> {
    this.desired = desired;
    const t0 = performance.now();
    const base = this.remembered ?? (await this.readLive());
    const t1 = performance.now();
    const writes = plan(desired, base, this.names);
    const t2 = performance.now();
    if (planIsEmpty(writes)) {
      this.remembered = base === this.remembered ? base : liveStateFromDesired(desired);
      await this.clearHistoricTables();
      return { plan: null, repaired: [], pendingDestroy: [], timings: { ...NO_TIME, read: t1 - t0, plan: t2 - t1 } };
    }
    const pendingDestroy = await this.execute(writes);
    this.remembered = liveStateFromDesired(desired);
    this.unchecked = true;
    await this.clearHistoricTables();
    return { plan: writes, repaired: [], pendingDestroy, timings: { read: t1 - t0, plan: t2 - t1, write: performance.now() - t2, check: 0 } };
  }

  /**
   * After an upgrade, the previous version's chains may still sit in a table palisade no longer uses,
   * enforcing the policy of the moment it stopped. They go once the rules in the current table are in
   * force (never before: in between, the node would be open). A failure is logged and tried again on
   * the next apply; until then the leftovers can only deny more, never allow more.
   */
  private async clearHistoricTables(): Promise<void> {
    if (this.historicCleared) return;
    const owns = (name: string) => this.names.owns(name);
    try {
      for (const table of HISTORIC_TABLES) {
        const removed = await removeOwnedChains(this.iptables, table, owns);
        if (removed.chainsRemoved.length > 0 || removed.hooksRemoved > 0) {
          this.logger.info({ table, chains: removed.chainsRemoved.length, hooks: removed.hooksRemoved }, `removed the chains an earlier version left in the ${table} table`);
          // Their sets may be free to go now.
          this.remembered = null;
        }
      }
      this.historicCleared = true;
    } catch (error) {
      this.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'could not remove the chains an earlier version left; trying again on the next apply');
    }
  }

  /**
   * Reads back what the last apply wrote and repairs any difference. Kept apart from apply() so the
   * rules take effect as soon as they are written; the caller runs this right after every apply.
   */
  async checkWrites(): Promise<ApplyReport> {
    if (!this.unchecked || this.desired === null) return { plan: null, repaired: [], pendingDestroy: [], timings: NO_TIME };
    const started = performance.now();
    if (await this.writtenAsExpected()) {
      this.unchecked = false;
      return { plan: null, repaired: [], pendingDestroy: [], timings: { ...NO_TIME, check: performance.now() - started } };
    }
    return this.verify();
  }

  /** apply() then checkWrites(), for callers with nothing to do in between. */
  async applyAndCheck(desired: Dataplane): Promise<ApplyReport> {
    const applied = await this.apply(desired);
    const checked = await this.checkWrites();
    return { ...applied, repaired: checked.repaired, pendingDestroy: [...applied.pendingDestroy, ...checked.pendingDestroy], timings: { ...applied.timings, check: checked.timings.check + checked.timings.read + checked.timings.write } };
  }

  /**
   * The read-back after a write: every chain's rule hashes and hooks from iptables-save, and each set's
   * type and size. Reading every set member would cost more than the write itself; full contents are
   * compared on every refresh. Any doubt leads to the full check and repair.
   */
  private async writtenAsExpected(): Promise<boolean> {
    const owns = (name: string) => this.names.owns(name);
    let table;
    let summary;
    try {
      [table, summary] = await Promise.all([this.iptables.save(), this.ipset.summary(owns)]);
    } catch (error) {
      this.remembered = null;
      throw new DataplaneWriteError('reading the live rules back', error);
    }
    const expected = this.remembered!;
    const live = liveStateFromKernel(table, expected.sets, owns);
    if (!planIsEmpty(plan(this.desired!, live, this.names))) return false;
    if (summary.size !== expected.sets.size) return false;
    for (const [name, set] of expected.sets) {
      const found = summary.get(name);
      if (found === undefined || found.type !== set.type || found.entries !== set.members.size) return false;
    }
    return true;
  }

  /**
   * Reads the kernel and repairs any drift from the last desired state; a no-op before the first
   * apply. The quick form compares every rule's hash and each set's type and size (a set emptied,
   * destroyed or swapped shows); the full form also compares every set member, which on a large
   * cluster costs tens of times more.
   */
  async refresh(options: { full?: boolean } = {}): Promise<ApplyReport> {
    if (this.desired === null) return { plan: null, repaired: [], pendingDestroy: [], timings: NO_TIME };
    if (options.full !== true && this.remembered !== null) {
      const started = performance.now();
      if (await this.writtenAsExpected()) return { plan: null, repaired: [], pendingDestroy: [], timings: { ...NO_TIME, check: performance.now() - started } };
    }
    return this.verify();
  }

  private async verify(): Promise<ApplyReport> {
    const desired = this.desired!;
    const started = performance.now();
    let live: LiveState;
    try {
      live = await this.readLive();
    } catch (error) {
      this.remembered = null;
      throw new DataplaneWriteError('reading the live rules back', error);
    }
    const repair = plan(desired, live, this.names);
    const read = performance.now() - started;
    if (planIsEmpty(repair)) {
      this.unchecked = false;
      return { plan: null, repaired: [], pendingDestroy: [], timings: { ...NO_TIME, read } };
    }
    for (const finding of repair.findings) {
      this.repairs.set(finding.kind, (this.repairs.get(finding.kind) ?? 0) + 1);
      this.logger.warn({ drift: finding.kind, subject: finding.subject }, `repairing drift: ${finding.detail}`);
    }
    const pendingDestroy = await this.execute(repair);
    this.remembered = liveStateFromDesired(desired);
    this.unchecked = false;
    return { plan: repair, repaired: repair.findings, pendingDestroy, timings: { ...NO_TIME, read, write: performance.now() - started - read } };
  }

  /**
   * Packet and byte counters of each local pod's drop rules, read without resetting them. A chain that
   * is rewritten starts its counters again from zero; callers that publish totals must allow for that.
   */
  async readDropCounters(): Promise<DropCounters[]> {
    return (await this.readCounters()).drops;
  }

  /** Each pod's drop counters and each ClusterNetworkPolicy Deny rule's log counters, from one read of the table. */
  async readCounters(): Promise<{ drops: DropCounters[]; clusterLogs: (LogCounts & { readonly direction: Direction })[] }> {
    const desired = this.desired;
    if (desired === null) return { drops: [], clusterLogs: [] };
    const table = await this.iptables.save({ counters: true });
    // The chain's last rule is the drop (or the would-deny count); a drop-log rule comes just before it.
    const lastRules = (chainName: string, count: number): { packets: number; bytes: number }[] | null => {
      const chain = desired.chains.get(chainName);
      const live = table.get(chainName);
      if (chain === undefined || live === undefined || live.rules.length < count) return null;
      const want = chainHashes(chain).slice(-count);
      const got = live.rules.slice(-count);
      return want.length === count && got.every((r, i) => r.hash === want[i]) ? got : null;
    };
    /**
     * Every counted drop of the pod's chain: the NetworkPolicy isolation drop (its last rule) and the
     * ClusterNetworkPolicy tiers' drops; null when the chain has none.
     */
    const read = (chainName: string): Counter | null => {
      const chain = desired.chains.get(chainName);
      const live = table.get(chainName);
      if (chain === undefined || live === undefined || live.rules.length !== chain.rules.length) return null;
      const want = chainHashes(chain);
      let total: Counter | null = null;
      chain.rules.forEach((rule, i) => {
        if (!isCountedDrop(rule)) return;
        const got = live.rules[i]!;
        if (got.hash !== want[i]) return;
        total = { packets: (total?.packets ?? 0) + got.packets, bytes: (total?.bytes ?? 0) + got.bytes };
      });
      return total;
    };
    const readLog = (chainName: string, logged: boolean): LogCounts | null => {
      const rules = logged ? lastRules(chainName, 2) : null;
      return rules === null ? null : { chain: chainName, reached: rules[1]!.packets, logged: rules[0]!.packets };
    };
    const drops = desired.endpoints.map((e) => ({
      namespace: e.namespace,
      name: e.name,
      ingress: read(e.toChain),
      egress: read(e.fromChain),
      ingressLog: readLog(e.toChain, e.ingressLog !== null),
      egressLog: readLog(e.fromChain, e.egressLog !== null),
    }));
    const clusterLogs: (LogCounts & { readonly direction: Direction })[] = [];
    for (const log of desired.clusterDenyLogs) {
      const rules = lastRules(log.chain, 2);
      if (rules !== null && desired.chains.get(log.chain)?.rules.length === 2) clusterLogs.push({ chain: log.chain, direction: log.direction, reached: rules[1]!.packets, logged: rules[0]!.packets });
    }
    return { drops, clusterLogs };
  }

  /** Runs a plan's writes in order; on failure forgets the remembered state and rethrows with the step named. */
  private async execute(writes: Plan): Promise<string[]> {
    try {
      await this.ipset.restore(writes.ipsetBefore);
    } catch (error) {
      this.remembered = null;
      throw new DataplaneWriteError('ipset restore (new sets, removed members)', error);
    }
    if (writes.iptables !== '') {
      try {
        await this.iptables.restore(writes.iptables);
      } catch (error) {
        this.remembered = null;
        // The old chains stay; give their sets back the members they lost a moment ago.
        await this.ipset.restore(writes.ipsetRollback).catch((rollbackError: unknown) => {
          this.logger.error({ err: rollbackError }, 'could not restore set members after a failed iptables-restore; the next sync repairs them');
        });
        throw new DataplaneWriteError(`${this.iptables.binary('restore')} of ${writes.chainsWritten.length} chains`, error);
      }
    }
    try {
      await this.ipset.restore(writes.ipsetAfter);
    } catch (error) {
      this.remembered = null;
      throw new DataplaneWriteError('ipset restore (added members)', error);
    }
    const pending: string[] = [];
    try {
      for (const name of writes.destroySets) {
        // The kernel may hold a set for a moment after the last rule using it is gone: retry next time.
        if ((await this.ipset.destroy(name)) === 'in-use') pending.push(name);
      }
    } catch (error) {
      this.remembered = null;
      throw new DataplaneWriteError('ipset destroy of unused sets', error);
    }
    if (pending.length > 0) this.remembered = null;
    this.logger.debug({ chains: writes.chainsWritten.length, deleted: writes.chainsDeleted.length, sets: writes.setsWritten.length }, 'dataplane written');
    return pending;
  }
}
