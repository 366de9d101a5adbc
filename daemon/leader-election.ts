import type { Clock } from './clock.js';
import type { Logger } from '../lib/logger.js';
import type { LeaseRecord, LeaseStore, StoredLease } from '../lib/kube/leases.js';
import { LeaseConflict, microTime } from '../lib/kube/leases.js';

/**
 * Leader election on one Lease, as client-go's leaderelection package does it:
 *
 *   candidate ──get: none, or released, or not renewed for leaseDuration──► update (resourceVersion) ──ok──► leader
 *       ▲  └─ held by another, renewed lately: wait retryPeriod (with a little jitter)                     │
 *       │                                                                                                │ every retryPeriod:
 *       └──────── 409 Conflict (someone wrote first), or no successful renew for renewDeadline ◄──────── update (resourceVersion)
 *
 * Time is never read from the Lease: a candidate measures a holder's silence from when it last saw
 * the record change on its own clock (observedAt), so clock skew between nodes does not matter. The
 * leader counts its leadership from when it sent its last successful write and gives it up after
 * renewDeadline (10 s), well before a candidate may take over (leaseDuration, 15 s, after it saw that
 * write): that margin, and the resourceVersion precondition on every write, keep two leaders apart.
 * stop() releases the Lease (holder '') so a successor takes over at once; a killed process is
 * replaced once its Lease expires.
 */

export interface LeaseTiming {
  readonly leaseDurationMs: number;
  readonly renewDeadlineMs: number;
  readonly retryPeriodMs: number;
}

/** client-go's defaults for its own controllers. */
export const DEFAULT_LEASE_TIMING: LeaseTiming = Object.freeze({ leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 });

/** Candidates wait retryPeriod plus up to this share of it, so they do not all ask at once. */
const JITTER = 0.2;

export interface LeaderElectorOptions {
  readonly store: LeaseStore;
  /** holderIdentity: the pod's name and node. */
  readonly identity: string;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly timing?: LeaseTiming;
  /** Called when this process becomes or stops being the leader. */
  readonly onChange?: (leader: boolean) => void;
  /** 0 ≤ x < 1; Math.random by default, fixed in tests. */
  readonly random?: () => number;
}

export interface ElectionStatus {
  readonly identity: string;
  readonly lease: string;
  readonly leader: boolean;
  /** Who holds the Lease, as last read; null before the first read or when released. */
  readonly holder: string | null;
  readonly lastError: string | null;
}

export class LeaderElector {
  private readonly options: LeaderElectorOptions;
  private readonly timing: LeaseTiming;
  private observed: StoredLease | null = null;
  /** Local time at which the observed record was first seen. */
  private observedAt = 0;
  /** Local time at which the last successful acquire or renew was sent; null when not leading. */
  private renewedAt: number | null = null;
  private wasLeader = false;
  private lastError: string | null = null;
  private timer: unknown = null;
  private running = false;
  private attempt: Promise<void> | null = null;

  constructor(options: LeaderElectorOptions) {
    this.options = options;
    this.timing = options.timing ?? DEFAULT_LEASE_TIMING;
  }

  /** Whether this process leads now: it renewed within the renew deadline and nobody has taken over since. */
  get leader(): boolean {
    return this.renewedAt !== null && this.options.clock.now() < this.renewedAt + this.timing.renewDeadlineMs;
  }

  status(): ElectionStatus {
    const holder = this.observed?.record.holderIdentity ?? '';
    return { identity: this.options.identity, lease: this.options.store.description, leader: this.leader, holder: holder === '' ? null : holder, lastError: this.lastError };
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule(0);
  }

  /** Stops trying; a leader releases the Lease so another process takes over without waiting for it to expire. */
  async stop(): Promise<void> {
    this.halt();
    await this.attempt;
    if (!this.leader || this.observed === null) return;
    const now = this.options.clock.now();
    const released: LeaseRecord = { ...this.observed.record, holderIdentity: '', leaseDurationSeconds: 1, renewTime: microTime(now) };
    this.renewedAt = null;
    this.publish();
    try {
      await this.options.store.update(this.observed.resourceVersion, released);
      this.options.logger.info({ lease: this.options.store.description }, 'released the Lease');
    } catch (error) {
      this.options.logger.warn({ lease: this.options.store.description, err: message(error) }, 'could not release the Lease; another process takes over once it expires');
    }
  }

  /** Stops trying without releasing anything: what a killed process leaves. For tests. */
  halt(): void {
    this.running = false;
    if (this.timer !== null) this.options.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  /** One round, as the timer runs it; exposed so tests can step without timers. */
  async tick(): Promise<void> {
    this.attempt = this.tryAcquireOrRenew().catch((error: unknown) => {
      this.lastError = message(error);
    });
    await this.attempt;
    this.attempt = null;
    this.publish();
  }

  private schedule(ms: number): void {
    this.timer = this.options.clock.setTimeout(() => {
      this.timer = null;
      void this.tick().then(() => {
        if (!this.running) return;
        const jitter = this.leader ? 0 : (this.options.random ?? Math.random)() * JITTER * this.timing.retryPeriodMs;
        this.schedule(this.timing.retryPeriodMs + jitter);
      });
    }, ms);
  }

  private publish(): void {
    const now = this.leader;
    if (now === this.wasLeader) return;
    this.wasLeader = now;
    const fields = { lease: this.options.store.description, identity: this.options.identity };
    if (now) this.options.logger.info(fields, 'became the leader: this process reports policy problems as Events');
    else this.options.logger.info({ ...fields, holder: this.status().holder }, 'no longer the leader');
    this.options.onChange?.(now);
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const { store, clock, identity } = this.options;
    const sentAt = clock.now();
    // Fast path, as client-go's: a leader renews from what it wrote last, one request per period.
    if (this.leader && this.observed !== null) {
      await this.write(sentAt, this.observed, this.renewal(this.observed.record, sentAt));
      return;
    }
    const current = await store.get();
    if (current === null) {
      const record: LeaseRecord = { holderIdentity: identity, leaseDurationSeconds: this.timing.leaseDurationMs / 1000, acquireTime: microTime(sentAt), renewTime: microTime(sentAt), leaseTransitions: 0 };
      try {
        this.observe(await store.create(record));
        this.renewedAt = sentAt;
        this.lastError = null;
      } catch (error) {
        if (!(error instanceof LeaseConflict)) throw error;
        this.renewedAt = null;
      }
      return;
    }
    this.observe(current);
    const holder = current.record.holderIdentity;
    const durationMs = current.record.leaseDurationSeconds > 0 ? current.record.leaseDurationSeconds * 1000 : this.timing.leaseDurationMs;
    if (holder !== '' && holder !== identity && clock.now() < this.observedAt + durationMs) {
      // Held, and renewed lately as far as this process can tell.
      this.renewedAt = null;
      this.lastError = null;
      return;
    }
    await this.write(sentAt, current, this.renewal(current.record, sentAt));
  }

  /** The record this process writes to hold the Lease: acquireTime and transitions change only when it changes hands. */
  private renewal(old: LeaseRecord, now: number): LeaseRecord {
    const mine = old.holderIdentity === this.options.identity;
    return {
      holderIdentity: this.options.identity,
      leaseDurationSeconds: this.timing.leaseDurationMs / 1000,
      acquireTime: mine && old.acquireTime !== null ? old.acquireTime : microTime(now),
      renewTime: microTime(now),
      leaseTransitions: mine ? old.leaseTransitions : old.leaseTransitions + 1,
    };
  }

  private async write(sentAt: number, from: StoredLease, record: LeaseRecord): Promise<void> {
    try {
      this.observe(await this.options.store.update(from.resourceVersion, record));
      this.renewedAt = sentAt;
      this.lastError = null;
    } catch (error) {
      if (error instanceof LeaseConflict) {
        // Someone else wrote the Lease since it was read: whoever it was, this process does not lead.
        this.renewedAt = null;
        this.observed = null;
        this.lastError = error.message;
        return;
      }
      // Unknown outcome (a timeout, the API server away): leadership lapses by itself at the renew deadline.
      throw error;
    }
  }

  private observe(lease: StoredLease): void {
    if (this.observed?.resourceVersion === lease.resourceVersion) return;
    this.observed = lease;
    this.observedAt = this.options.clock.now();
  }
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
