import type { Logger } from '../lib/logger.js';
import type { Clock } from './clock.js';

/**
 * One single-flight loop for every write to the dataplane. Sync requests coalesce: the first one
 * starts a short timer and those arriving before it fires join it, so a burst of events is one
 * compile and one apply; the timer is never pushed back, so a steady stream of events cannot stall
 * enforcement. A failed sync is retried with exponential backoff while the last good rules stay in
 * force. The read-back of what a sync wrote, and periodic refreshes (read back, repair drift), run
 * through the same loop, never concurrently with a sync and never ahead of one that is due.
 */

export interface SyncLoopOptions {
  readonly delayMs: number;
  readonly refreshIntervalMs: number;
  readonly sync: () => Promise<void>;
  /** Reads back what a sync wrote; runs after syncs, once a burst of them is over, never before one. */
  readonly check: () => Promise<void>;
  /** How long after the last sync the read-back waits, so a burst of changes is enforced first. */
  readonly checkDelayMs?: number;
  readonly refresh: () => Promise<void>;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly retryBaseMs?: number;
  readonly retryMaxMs?: number;
}

export class SyncLoop {
  private readonly options: SyncLoopOptions;
  private syncWanted = false;
  private checkWanted = false;
  private refreshWanted = false;
  private running: Promise<void> | null = null;
  private timer: unknown = null;
  private timerDue = 0;
  private refreshTimer: unknown = null;
  private failures = 0;
  private stopped = true;

  constructor(options: SyncLoopOptions) {
    this.options = options;
  }

  /** Consecutive failed syncs; 0 after a success. */
  get consecutiveFailures(): number {
    return this.failures;
  }

  get pending(): boolean {
    return this.syncWanted;
  }

  start(): void {
    this.stopped = false;
    this.scheduleRefresh();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) this.options.clock.clearTimeout(this.timer);
    if (this.refreshTimer !== null) this.options.clock.clearTimeout(this.refreshTimer);
    this.timer = null;
    this.refreshTimer = null;
    await this.running;
  }

  request(): void {
    this.syncWanted = true;
    this.kick(this.options.delayMs);
  }

  /** Resolves once nothing is running or scheduled to run now (for tests and shutdown). */
  async idle(): Promise<void> {
    while (this.running !== null) await this.running;
  }

  private scheduleRefresh(): void {
    if (this.stopped) return;
    this.refreshTimer = this.options.clock.setTimeout(() => {
      this.refreshWanted = true;
      this.kick(0);
      this.scheduleRefresh();
    }, this.options.refreshIntervalMs);
  }

  /** Makes sure the loop runs within `delay` ms; an earlier scheduled run is kept. */
  private kick(delay: number): void {
    if (this.stopped || this.running !== null) return;
    const due = this.options.clock.now() + delay;
    if (this.timer !== null) {
      if (this.timerDue <= due) return;
      this.options.clock.clearTimeout(this.timer);
    }
    this.timerDue = due;
    this.timer = this.options.clock.setTimeout(() => {
      this.timer = null;
      this.running = this.runOnce().finally(() => {
        this.running = null;
        this.afterRun();
      });
    }, delay);
  }

  private afterRun(): void {
    if (this.stopped) return;
    if (this.syncWanted) {
      const base = this.options.retryBaseMs ?? 100;
      const delay = this.failures === 0 ? this.options.delayMs : Math.min(this.options.retryMaxMs ?? 30_000, base * 2 ** (this.failures - 1));
      this.kick(delay);
    } else if (this.checkWanted) this.kick(this.options.checkDelayMs ?? 200);
    else if (this.refreshWanted) this.kick(0);
  }

  private async runOnce(): Promise<void> {
    if (this.syncWanted) {
      this.syncWanted = false;
      try {
        await this.options.sync();
        this.failures = 0;
        this.checkWanted = true;
      } catch (error) {
        this.failures++;
        this.syncWanted = true;
        this.options.logger.error({ err: error instanceof Error ? error.message : String(error), failures: this.failures }, 'sync failed; the previous rules stay in force; retrying');
      }
      return;
    }
    if (this.checkWanted) {
      this.checkWanted = false;
      try {
        await this.options.check();
      } catch (error) {
        this.options.logger.error({ err: error instanceof Error ? error.message : String(error) }, 'reading back the rules failed; the next refresh tries again');
      }
      return;
    }
    if (this.refreshWanted) {
      this.refreshWanted = false;
      try {
        await this.options.refresh();
      } catch (error) {
        this.options.logger.error({ err: error instanceof Error ? error.message : String(error) }, 'refresh failed; retrying at the next interval');
      }
    }
  }
}
