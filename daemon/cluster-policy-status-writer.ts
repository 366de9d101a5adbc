import type { Clock } from './clock.js';
import type { Logger } from '../lib/logger.js';
import { ApiRequestError } from '../lib/kube/api-client.js';
import type { ClusterPolicyStatusSink } from '../lib/kube/cluster-policy-status.js';
import { TokenBucket } from './token-bucket.js';
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

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 60_000;

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
  private readonly bucket: TokenBucket;
  private reports = new Map<string, ConditionReport>();
  /** Objects written, by name, with the condition written and the object's uid, until the watch shows it. */
  private readonly written = new Map<string, { readonly key: string; readonly uid: string }>();
  /** Objects whose write was refused as stale, by name, with the resourceVersion it was made from. */
  private readonly stale = new Map<string, string>();
  private timer: unknown = null;
  private writing: Promise<void> | null = null;
  private failures = 0;
  private retryAt = 0;
  private lastWriteError: string | null = null;
  private stopped = false;

  constructor(options: ConditionWriterOptions) {
    this.options = options;
    const rate = options.rate ?? { perSecond: EVENT_RATE_PER_SECOND, burst: EVENT_BURST };
    this.bucket = new TokenBucket(rate.perSecond, rate.burst, () => options.clock.now());
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
    this.kick();
  }

  leadershipChanged(): void {
    this.kick();
  }

  status(): ConditionWriterStatus {
    let pending = 0;
    for (const report of this.reports.values()) if (this.isDue(report)) pending++;
    return { current: this.reports.size - pending, pending, lastWriteError: this.lastWriteError };
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) this.options.clock.clearTimeout(this.timer);
    this.timer = null;
    await this.writing;
  }

  /** Resolves once no write is running or could run now (for tests). */
  async idle(): Promise<void> {
    while (this.writing !== null) await this.writing;
  }

  private isDue(report: ConditionReport): boolean {
    return !saysAlready(report.object, report.desired) && !this.written.has(report.object.name);
  }

  private kick(delayMs = 0): void {
    if (this.stopped || this.writing !== null || this.timer !== null) return;
    this.timer = this.options.clock.setTimeout(() => {
      this.timer = null;
      this.writing = this.pump().then((later) => {
        this.writing = null;
        if (later !== null) this.kick(later);
      });
    }, delayMs);
  }

  private next(): ConditionReport | null {
    for (const report of this.reports.values()) if (this.isDue(report) && !this.stale.has(report.object.name)) return report;
    return null;
  }

  private async pump(): Promise<number | null> {
    for (;;) {
      if (this.stopped || !this.options.election.leader) return null;
      const report = this.next();
      if (report === null) return null;
      const wait = Math.max(this.retryAt - this.options.clock.now(), this.bucket.waitMs());
      if (wait > 0) return wait;
      this.bucket.take();
      await this.send(report);
    }
  }

  private async send(report: ConditionReport): Promise<void> {
    const { sink, clock, logger } = this.options;
    const { name } = report.object;
    const fields = { clusterNetworkPolicy: name, status: report.desired.status, reason: report.desired.reason, observedGeneration: report.desired.observedGeneration };
    try {
      await sink.patchStatus(name, statusPatch(report, clock.now()));
      this.written.set(name, { key: conditionKey(report), uid: report.object.uid });
      this.failures = 0;
      this.retryAt = 0;
      this.lastWriteError = null;
      this.options.onWritten?.(report.desired.reason);
      logger.info(fields, 'wrote the Accepted condition of a ClusterNetworkPolicy');
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      if (error instanceof ApiRequestError && (error.status === 409 || (error.status === 422 && /test/i.test(text)))) {
        // Someone wrote the object since the watch showed it (the resourceVersion test failed): the next
        // report comes from the newer one.
        this.stale.set(name, report.object.resourceVersion);
        logger.debug({ ...fields, err: text }, 'the ClusterNetworkPolicy changed before its status was written; waiting for the watch');
        return;
      }
      this.lastWriteError = text;
      if (error instanceof ApiRequestError && (error.status === 404 || error.status === 422 || error.status === 400)) {
        // Gone, or refused as invalid: asking again with the same words would get the same answer.
        this.stale.set(name, report.object.resourceVersion);
        logger.warn({ ...fields, err: text }, 'the API server refused the status of a ClusterNetworkPolicy; not retrying it until the object changes');
        return;
      }
      this.failures++;
      const backoff = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (this.failures - 1));
      this.retryAt = clock.now() + backoff;
      logger.warn({ ...fields, err: text, retryInMs: backoff }, 'could not write the status of a ClusterNetworkPolicy; retrying');
    }
  }
}

function conditionKey(report: ConditionReport): string {
  const { status, reason, message, observedGeneration } = report.desired;
  return JSON.stringify([status, reason, message, observedGeneration]);
}
