import type { Clock } from './clock.js';
import type { Logger } from '../lib/logger.js';
import { ApiRequestError } from '../lib/kube/api-client.js';
import type { ClusterPolicyStatusSink } from '../lib/kube/cluster-policy-status.js';
import { LeaderWrites } from './leader-writes.js';
import type { WriteResult } from './leader-writes.js';
import type { Election } from './policy-reporter.js';
import { EVENT_BURST, EVENT_RATE_PER_SECOND } from './policy-reporter.js';
import type { AcceptedReason, ConditionReport } from './cluster-policy-conditions.js';
import { saysAlready, statusPatch } from './cluster-policy-conditions.js';

/**
 * Writes the Accepted condition on ClusterNetworkPolicies, from the one daemon that holds the policy
 * reporter's Lease (the same election as the Events):
 *
 *   daemon (after each compile, each refresh, each watched change) ─ observe(reports) ─► due: objects
 *   whose status does not say what it should ─► leader? ─► token bucket ─► PATCH .../status (JSON patch)
 *
 * Nothing is written when the object says it already: every daemon compares with the status the watch
 * brought, so a new leader writes only what is missing. After a write, the object is not due again
 * until the watch shows it (what was written stands in until then), so a status is never written
 * twice for one change. A write refused as stale (409, or 422: the resourceVersion test failed)
 * waits for the watch to bring the newer object. A 404 (the object or its CRD is gone), or another 422
 * or a 400 (refused as invalid), is not retried until the object changes; other failures are retried
 * with backoff. Writes share the Events' rate: RATE per second, BURST at once.
 */

export interface ConditionWriterOptions {
  readonly election: Election;
  readonly sink: ClusterPolicyStatusSink;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly onWritten?: (reason: AcceptedReason) => void;
  readonly rate?: { readonly perSecond: number; readonly burst: number };
}

export interface ConditionWriterStatus {
  /** ClusterNetworkPolicies whose status says what palisade would have it say. */
  readonly current: number;
  /** Ones whose status does not yet (only the leader writes). */
  readonly pending: number;
  readonly lastWriteError: string | null;
}

export class ConditionWriter {
  private readonly options: ConditionWriterOptions;
  private readonly writes: LeaderWrites<ConditionReport>;
  private reports = new Map<string, ConditionReport>();
  /** Objects written, by name, with the condition written and the object's uid, until the watch shows it. */
  private readonly written = new Map<string, { readonly key: string; readonly uid: string }>();
  /** Objects whose write was refused as stale, by name, with the resourceVersion it was made from. */
  private readonly stale = new Map<string, string>();
  private lastWriteError: string | null = null;

  constructor(options: ConditionWriterOptions) {
    this.options = options;
    this.writes = new LeaderWrites({
      election: options.election,
      clock: options.clock,
      rate: options.rate ?? { perSecond: EVENT_RATE_PER_SECOND, burst: EVENT_BURST },
      next: () => this.next(),
      write: (report) => this.send(report),
    });
  }

  /** Every ClusterNetworkPolicy's report, each time: what is gone is forgotten, what is due is queued. */
  observe(reports: readonly ConditionReport[]): void {
    this.reports = new Map(reports.map((r) => [r.object.name, r]));
    for (const [name, written] of this.written) {
      const report = this.reports.get(name);
      // Shown by the watch (or overtaken: a new object, another version): the status is judged afresh.
      if (report === undefined || report.object.uid !== written.uid || saysAlready(report.object, report.desired) || conditionKey(report) !== written.key) this.written.delete(name);
    }
    for (const [name, resourceVersion] of this.stale) if (this.reports.get(name)?.object.resourceVersion !== resourceVersion) this.stale.delete(name);
    this.writes.kick();
  }

  leadershipChanged(): void {
    this.writes.kick();
  }

  status(): ConditionWriterStatus {
    let pending = 0;
    for (const report of this.reports.values()) if (this.isDue(report)) pending++;
    return { current: this.reports.size - pending, pending, lastWriteError: this.lastWriteError };
  }

  stop(): Promise<void> {
    return this.writes.stop();
  }

  /** Resolves once no write is running or could run now (for tests). */
  idle(): Promise<void> {
    return this.writes.idle();
  }

  private isDue(report: ConditionReport): boolean {
    return !saysAlready(report.object, report.desired) && !this.written.has(report.object.name);
  }

  private next(): ConditionReport | null {
    for (const report of this.reports.values()) if (this.isDue(report) && !this.stale.has(report.object.name)) return report;
    return null;
  }

  private async send(report: ConditionReport): Promise<WriteResult> {
    const { sink, clock, logger } = this.options;
    const { name } = report.object;
    const fields = { clusterNetworkPolicy: name, status: report.desired.status, reason: report.desired.reason, observedGeneration: report.desired.observedGeneration };
    try {
      await sink.patchStatus(name, statusPatch(report, clock.now()));
      this.written.set(name, { key: conditionKey(report), uid: report.object.uid });
      this.lastWriteError = null;
      this.options.onWritten?.(report.desired.reason);
      logger.info(fields, 'wrote the Accepted condition of a ClusterNetworkPolicy');
      return 'written';
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      if (error instanceof ApiRequestError && (error.status === 409 || (error.status === 422 && /test/i.test(text)))) {
        // Someone wrote the object since the watch showed it (the resourceVersion test failed): the next
        // report comes from the newer one.
        this.stale.set(name, report.object.resourceVersion);
        logger.debug({ ...fields, err: text }, 'the ClusterNetworkPolicy changed before its status was written; waiting for the watch');
        return 'settled';
      }
      this.lastWriteError = text;
      if (error instanceof ApiRequestError && (error.status === 404 || error.status === 422 || error.status === 400)) {
        // Gone, or refused as invalid: asking again with the same words would get the same answer.
        this.stale.set(name, report.object.resourceVersion);
        logger.warn({ ...fields, err: text }, 'the API server refused the status of a ClusterNetworkPolicy; not retrying it until the object changes');
        return 'settled';
      }
      logger.warn({ ...fields, err: text, retryInMs: this.writes.nextBackoffMs() }, 'could not write the status of a ClusterNetworkPolicy; retrying');
      return 'retry';
    }
  }
}

function conditionKey(report: ConditionReport): string {
  const { status, reason, message, observedGeneration } = report.desired;
  return JSON.stringify([status, reason, message, observedGeneration]);
}
