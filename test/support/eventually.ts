/**
 * Retries `check` until it resolves, then resolves with its value; after `timeoutMs` fails with the
 * last error, naming `what`. For tests waiting on something asynchronous (a daemon, a kernel, an API
 * server) to converge.
 */
export async function eventually<T>(what: string, check: () => Promise<T>, timeoutMs = 30_000, pauseMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let last: unknown;
    try {
      return await check();
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${last instanceof Error ? last.message : String(last)}`);
    await new Promise((resolve) => setTimeout(resolve, pauseMs));
  }
}
