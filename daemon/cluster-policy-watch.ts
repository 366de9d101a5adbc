import type { Logger } from '../lib/logger.js';
import type { ReflectorStats } from '../lib/kube/reflector.js';
import type { Clock } from './clock.js';

/**
 * Watches ClusterNetworkPolicies only while the API server serves them: the CRD may be installed, or
 * removed, at any time, and a cluster without it must run exactly as one with no such thing.
 *
 *   unknown ──discovery: served──► served: reflector started ──discovery: not served──► not served:
 *      │                              ▲                            reflector stopped, every CNP forgotten
 *      └──discovery: not served──► not served ──discovery: served──┘
 *   discovery: at start, every intervalMs, and at once when the watch is answered 404 (recheck()).
 *   A discovery request that fails changes nothing (the reflector keeps its last state); it is
 *   retried sooner than the interval, with backoff, and logged once per distinct error.
 *
 * `settled` is what the first apply waits for: discovery has answered, and if the resource is served,
 * its first list is in. A cluster without the CRD is settled by one 404.
 *
 * Served to not served needs saying twice, at least CONFIRM_MS apart, before anything is forgotten:
 * an API server that is starting (a control-plane update) answers 404 for custom resources until it
 * has loaded their CRDs, and forgetting then would open every guardrail for a discovery round.
 * Meanwhile what is known stays enforced and the reflector keeps trying. When a CRD really goes, its
 * objects are deleted first, and the watch has taken them away before discovery says so.
 */

/** What the watch needs of a reflector. */
export interface PolicyReflector {
  readonly synced: boolean;
  readonly stats: ReflectorStats;
  start(): void;
  stop(): Promise<void>;
}

export interface ClusterPolicyWatchOptions {
  /** Whether the API server serves clusternetworkpolicies now; throws when it cannot be told. */
  readonly discover: () => Promise<boolean>;
  readonly makeReflector: () => PolicyReflector;
  /** The resource is no longer served: every ClusterNetworkPolicy known must go (after the reflector stopped). */
  readonly forget: () => void;
  /** After each change between served and not served (and the first answer). */
  readonly onServedChange?: (served: boolean) => void;
  readonly intervalMs: number;
  readonly clock: Clock;
  readonly logger: Logger;
}

export interface ClusterPolicyDiscoveryStatus {
  /** null until discovery has answered once. */
  readonly served: boolean | null;
  readonly lastCheckAt: number | null;
  readonly lastError: string | null;
  readonly intervalMs: number;
}

/** The first retry after a failed discovery; doubled each time up to the interval. */
const RETRY_MIN_MS = 1000;
/** How long "not served" must last, over two answers, before ClusterNetworkPolicies are forgotten. */
const CONFIRM_MS = 5000;

export class ClusterPolicyWatch {
  private readonly options: ClusterPolicyWatchOptions;
  private served: boolean | null = null;
  private current: PolicyReflector | null = null;
  private lastCheckAt: number | null = null;
  private lastError: string | null = null;
  private failures = 0;
  private timer: unknown = null;
  private checking: Promise<void> | null = null;
  private again = false;
  private stopped = true;
  /** When discovery first said "not served" while a reflector ran; null otherwise. */
  private goneSince: number | null = null;

  constructor(options: ClusterPolicyWatchOptions) {
    this.options = options;
  }

  /** The reflector while the resource is served, else null. */
  get reflector(): PolicyReflector | null {
    return this.current;
  }

  /** Discovery has answered, and a served resource has been listed once. */
  get settled(): boolean {
    return this.served === false || (this.served === true && this.current !== null && this.current.synced);
  }

  status(): ClusterPolicyDiscoveryStatus {
    return { served: this.served, lastCheckAt: this.lastCheckAt, lastError: this.lastError, intervalMs: this.options.intervalMs };
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) this.options.clock.clearTimeout(this.timer);
    this.timer = null;
    await this.checking;
    const reflector = this.current;
    this.current = null;
    await reflector?.stop();
  }

  /** Asks discovery again now (the watch was answered 404: the CRD may be gone); coalesces with a check running. */
  recheck(): void {
    if (this.stopped) return;
    if (this.checking !== null) {
      this.again = true;
      return;
    }
    this.schedule(0);
  }

  /** Resolves once no discovery check is running (for tests). */
  async idle(): Promise<void> {
    while (this.checking !== null) await this.checking;
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer !== null) this.options.clock.clearTimeout(this.timer);
    this.timer = this.options.clock.setTimeout(() => {
      this.timer = null;
      this.checking = this.check().finally(() => {
        this.checking = null;
        if (this.again) {
          this.again = false;
          this.schedule(0);
        }
      });
    }, ms);
  }

  private async check(): Promise<void> {
    const { logger, clock, intervalMs } = this.options;
    let served: boolean;
    try {
      served = await this.options.discover();
    } catch (error) {
      if (this.stopped) return;
      const text = error instanceof Error ? error.message : String(error);
      const retryInMs = Math.min(intervalMs, RETRY_MIN_MS * 2 ** this.failures++);
      if (text !== this.lastError) logger.warn({ err: text, retryInMs }, 'cannot tell whether the API server serves ClusterNetworkPolicies; what is known stays as it is');
      this.lastError = text;
      this.schedule(retryInMs);
      return;
    }
    if (this.stopped) return;
    if (this.lastError !== null) logger.info({}, 'discovery answers again');
    this.lastError = null;
    this.failures = 0;
    this.lastCheckAt = clock.now();
    const before = this.served;
    if (served) this.goneSince = null;
    if (!served && this.current !== null && (this.goneSince === null || clock.now() - this.goneSince < CONFIRM_MS)) {
      const first = this.goneSince === null;
      this.goneSince ??= clock.now();
      if (first) logger.warn({ confirmInMs: CONFIRM_MS }, 'discovery says ClusterNetworkPolicies are no longer served; they stay enforced until it says so again');
      this.schedule(Math.max(CONFIRM_MS - (clock.now() - this.goneSince), Math.min(intervalMs, CONFIRM_MS)));
      return;
    }
    if (served && this.current === null) {
      this.current = this.options.makeReflector();
      this.current.start();
      logger.info({}, 'the API server serves ClusterNetworkPolicies (policy.networking.k8s.io/v1alpha2): watching them');
    } else if (!served && this.current !== null) {
      const reflector = this.current;
      this.current = null;
      this.goneSince = null;
      await reflector.stop();
      this.options.forget();
      logger.info({}, 'the API server no longer serves ClusterNetworkPolicies (its CRD was removed): stopped watching, and forgot every one');
    } else if (!served && before === null) {
      logger.info({ recheckEveryMs: intervalMs }, 'the API server does not serve ClusterNetworkPolicies (no CRD for policy.networking.k8s.io/v1alpha2): running without them');
    }
    this.served = served;
    if (before !== served) this.options.onServedChange?.(served);
    this.schedule(intervalMs);
  }
}
