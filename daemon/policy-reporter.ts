import type { Clock } from './clock.js';
import type { Logger } from '../lib/logger.js';
import type { EventSink } from '../lib/kube/events.js';
import { ApiRequestError } from '../lib/kube/api-client.js';
import type { ElectionStatus } from './leader-election.js';
import { LeaderWrites } from './leader-writes.js';
import type { WriteResult } from './leader-writes.js';
import type { PolicyEventReason, PolicyReport, Reporter } from './policy-events.js';
import { policyEvent, reportKey } from './policy-events.js';

/**
 * Sends the policy reports as Events, from the one daemon that holds the Lease:
 *
 *   daemon (after each compile) ─ observe(reports) ─► due: reports not yet sent ─┐
 *   LeaderElector ─ leader? ───────────────────────────────────────────────────────┼─► token bucket ─► EventSink (POST)
 *                                                                                   └─ 201 or 409 AlreadyExists: sent
 *
 * Every daemon keeps the reports (they are cheap, and a follower must be ready to lead); only the
 * leader writes. Writes go one at a time through a token bucket (RATE per second, BURST at once), taking
 * namespaces in turn, so one tenant's thousand bad policies neither flood the API server nor hold
 * back another namespace's report. Only the latest version of each policy is ever due: edits while
 * waiting replace it. A failed write is retried with backoff; one the API server will never accept
 * (404: the namespace is gone; 422) is given up and logged.
 */

export const EVENT_RATE_PER_SECOND = 2;
export const EVENT_BURST = 20;

/** The election, as the reporter sees it. */
export interface Election {
  readonly leader: boolean;
  status(): ElectionStatus;
}

export interface PolicyReporterMetrics {
  eventCreated(reason: PolicyEventReason): void;
}

export interface PolicyReporterOptions {
  readonly election: Election;
  readonly sink: EventSink;
  readonly reporter: Reporter;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: PolicyReporterMetrics;
  readonly rate?: { readonly perSecond: number; readonly burst: number };
}

export interface ReporterStatus extends ElectionStatus {
  /** Reports of current policy versions sent (or found sent by an earlier leader). */
  readonly reported: number;
  /** Reports waiting to be sent (only the leader sends). */
  readonly pending: number;
  readonly lastWriteError: string | null;
}

export class PolicyReporter {
  private readonly options: PolicyReporterOptions;
  private readonly writes: LeaderWrites<PolicyReport>;
  /** The current reports, by reportKey. */
  private due = new Map<string, PolicyReport>();
  private readonly sent = new Set<string>();
  private lastNamespace = '';
  private lastWriteError: string | null = null;

  constructor(options: PolicyReporterOptions) {
    this.options = options;
    this.writes = new LeaderWrites({
      election: options.election,
      clock: options.clock,
      rate: options.rate ?? { perSecond: EVENT_RATE_PER_SECOND, burst: EVENT_BURST },
      next: () => this.next(),
      write: (report) => this.send(report),
    });
  }

  /** The reports due now (all of them, each time): what is no longer due is forgotten, what is new is queued. */
  observe(reports: readonly PolicyReport[]): void {
    this.due = new Map(reports.map((r) => [reportKey(r), r]));
    for (const key of this.sent) if (!this.due.has(key)) this.sent.delete(key);
    this.writes.kick();
  }

  /** Leadership changed: a new leader starts sending what is due. */
  leadershipChanged(): void {
    this.writes.kick();
  }

  status(): ReporterStatus {
    let pending = 0;
    for (const key of this.due.keys()) if (!this.sent.has(key)) pending++;
    return { ...this.options.election.status(), reported: this.due.size - pending, pending, lastWriteError: this.lastWriteError };
  }

  stop(): Promise<void> {
    return this.writes.stop();
  }

  /** Resolves once no write is running or could run now (for tests). */
  idle(): Promise<void> {
    return this.writes.idle();
  }

  /** The next report to send: namespaces in turn, after the one served last. */
  private next(): PolicyReport | null {
    let first: PolicyReport | null = null;
    let after: PolicyReport | null = null;
    for (const [key, report] of this.due) {
      if (this.sent.has(key)) continue;
      if (first === null || report.namespace < first.namespace) first = report;
      if (report.namespace > this.lastNamespace && (after === null || report.namespace < after.namespace)) after = report;
    }
    return after ?? first;
  }

  private async send(report: PolicyReport): Promise<WriteResult> {
    this.lastNamespace = report.namespace;
    const { sink, reporter, clock, logger, metrics } = this.options;
    const key = reportKey(report);
    const policy = `${report.namespace}/${report.name}`;
    try {
      const outcome = await sink.create(report.namespace, policyEvent(report, reporter, clock.now()));
      this.sent.add(key);
      this.lastWriteError = null;
      if (outcome === 'created') {
        metrics.eventCreated(report.reason);
        logger.info({ policy, reason: report.reason, version: report.version }, 'reported a policy palisade cannot fully enforce as an Event');
      } else {
        logger.debug({ policy, reason: report.reason, version: report.version }, 'the Event for this policy version exists already');
      }
      return 'written';
    } catch (error) {
      const text = error instanceof Error ? error.message : String(error);
      this.lastWriteError = text;
      if (error instanceof ApiRequestError && (error.status === 404 || error.status === 422 || error.status === 400)) {
        // The API server will never take it (the namespace is gone, or it finds the Event invalid): not retried.
        this.sent.add(key);
        logger.warn({ policy, err: text }, 'the API server refused the policy Event; not retrying it');
        return 'settled';
      }
      logger.warn({ policy, err: text, retryInMs: this.writes.nextBackoffMs() }, 'could not write the policy Event; retrying');
      return 'retry';
    }
  }
}
