/**
 * A token bucket on the injected clock: `burst` tokens to start with, one more every 1/ratePerSecond
 * seconds, never more than `burst`. take() spends one if there is one; waitMs() says how long until
 * there is.
 */
export class TokenBucket {
  private readonly ratePerSecond: number;
  private readonly burst: number;
  private readonly now: () => number;
  private tokens: number;
  private updatedAt: number;

  constructor(ratePerSecond: number, burst: number, now: () => number) {
    if (!(ratePerSecond > 0) || !(burst >= 1)) throw new RangeError(`token bucket: rate ${ratePerSecond}/s and burst ${burst} must be positive`);
    this.ratePerSecond = ratePerSecond;
    this.burst = burst;
    this.now = now;
    this.tokens = burst;
    this.updatedAt = now();
  }

  take(): boolean {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Milliseconds until take() would succeed; 0 when it would now. */
  waitMs(): number {
    this.refill();
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) * 1000) / this.ratePerSecond);
  }

  private refill(): void {
    const now = this.now();
    const elapsed = Math.max(0, now - this.updatedAt);
    this.updatedAt = now;
    this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.ratePerSecond) / 1000);
  }
}
