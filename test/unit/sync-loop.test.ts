import assert from 'node:assert/strict';
import { SyncLoop } from '../../daemon/sync-loop.js';
import { silentLogger } from '../../lib/logger.js';
import { FakeClock } from '../support/fake-clock.js';

/** The sync loop on a fake clock: coalescing, no stalls, single flight, backoff, refreshes. */

function loop(options: { sync?: () => Promise<void>; refresh?: () => Promise<void>; delayMs?: number } = {}) {
  const clock = new FakeClock();
  const calls: string[] = [];
  const sync = new SyncLoop({
    delayMs: options.delayMs ?? 50,
    refreshIntervalMs: 10_000,
    sync: options.sync ?? (async () => void calls.push(`sync@${clock.now()}`)),
    check: async () => void calls.push(`check@${clock.now()}`),
    checkDelayMs: 200,
    refresh: options.refresh ?? (async () => void calls.push(`refresh@${clock.now()}`)),
    clock,
    logger: silentLogger,
    retryBaseMs: 100,
    retryMaxMs: 1000,
  });
  sync.start();
  return { clock, calls, sync };
}

describe('the sync loop', () => {
  it('turns a burst of requests into one sync after the delay', async () => {
    const { clock, calls, sync } = loop();
    for (let i = 0; i < 500; i++) sync.request();
    await clock.advance(49);
    assert.deepEqual(calls, []);
    await clock.advance(1);
    assert.deepEqual(calls, ['sync@50']);
    await clock.advance(200);
    assert.deepEqual(calls, ['sync@50', 'check@250'], 'the read-back follows');
    await sync.stop();
  });

  it('is not pushed back by a steady stream of requests', async () => {
    const { clock, calls, sync } = loop();
    for (let t = 0; t < 200; t += 10) {
      sync.request();
      await clock.advance(10);
    }
    assert.deepEqual(calls.slice(0, 3), ['sync@50', 'sync@100', 'sync@150'], 'syncs go first, the read-back waits for a quiet moment');
    await sync.stop();
  });

  it('never runs two syncs at once, and runs once more for requests made during a sync', async () => {
    let running = 0;
    let max = 0;
    let release: () => void = () => {};
    const runs: number[] = [];
    const { clock, sync } = loop({
      sync: async () => {
        running++;
        max = Math.max(max, running);
        runs.push(clock.now());
        await new Promise<void>((resolve) => (release = resolve));
        running--;
      },
    });
    sync.request();
    await clock.advance(50);
    sync.request();
    sync.request();
    await clock.advance(500);
    assert.equal(runs.length, 1, 'the second waits for the first');
    release();
    await clock.advance(50);
    assert.equal(runs.length, 2);
    release();
    await clock.advance(1000);
    assert.equal(runs.length, 2, 'the two requests made during the first sync were one more sync');
    assert.equal(max, 1);
    await sync.stop();
  });

  it('retries a failing sync with growing delays and stops retrying once it succeeds', async () => {
    const times: number[] = [];
    let failuresLeft = 3;
    const { clock, sync } = loop({
      sync: async () => {
        times.push(clock.now());
        if (failuresLeft-- > 0) throw new Error('iptables-restore failed');
      },
    });
    sync.request();
    await clock.advance(5000);
    assert.deepEqual(times.map((t, i) => (i === 0 ? t : t - times[i - 1]!)), [50, 100, 200, 400]);
    assert.equal(sync.consecutiveFailures, 0);
    await sync.stop();
  });

  it('refreshes on its interval, between syncs and never during one', async () => {
    const { clock, calls, sync } = loop();
    await clock.advance(10_000);
    sync.request();
    await clock.advance(10_000);
    assert.deepEqual(calls, ['refresh@10000', 'sync@10050', 'check@10250', 'refresh@20000']);
    await sync.stop();
  });
});
