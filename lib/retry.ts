/**
 * Retries with exponential backoff for commands that fail for passing reasons (a lock held by another
 * program). The delay function is injected so tests never sleep.
 */
export interface RetryPolicy {
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  readonly sleep: (ms: number) => Promise<void>;
}

export const realSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseDelayMs: 100, maxDelayMs: 2000, sleep: realSleep };

export function backoffDelay(policy: RetryPolicy, attempt: number): number {
  return Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** attempt);
}

/** Calls `action` until it succeeds, it fails with an error `retryable` rejects, or attempts run out. */
export async function withRetry<T>(policy: RetryPolicy, retryable: (error: unknown) => boolean, action: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await action();
    } catch (error) {
      if (attempt + 1 >= policy.attempts || !retryable(error)) throw error;
      await policy.sleep(backoffDelay(policy, attempt));
    }
  }
}
