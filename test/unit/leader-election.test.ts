import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LeaderElector } from '../../daemon/leader-election.js';
import { LeaseConflict } from '../../lib/kube/leases.js';
import type { LeaseRecord, LeaseStore, StoredLease } from '../../lib/kube/leases.js';
import { silentLogger } from '../../lib/logger.js';
import { FakeClock } from '../support/fake-clock.js';

/**
 * Leader election on a fake clock against a fake Lease that enforces what the API server does: a
 * create of an existing Lease and an update from a stale resourceVersion are refused with a conflict.
 * Candidates can be cut off from it (every request fails), killed (they stop without releasing) and
 * replaced.
 */

class FakeLeaseServer {
  lease: StoredLease | null = null;
  private rv = 100;
  readonly cutOff = new Set<string>();
  writes = 0;

  store(who: string): LeaseStore {
    const reachable = () => {
      if (this.cutOff.has(who)) throw new Error(`${who}: connect ECONNREFUSED`);
    };
    return {
      description: 'kube-system/palisade-policy-reporter',
      get: async () => {
        reachable();
        return this.lease;
      },
      create: async (record) => {
        reachable();
        if (this.lease !== null) throw new LeaseConflict('AlreadyExists');
        return this.put(record);
      },
      update: async (resourceVersion, record) => {
        reachable();
        if (this.lease === null) throw new Error('HTTP 404');
        if (this.lease.resourceVersion !== resourceVersion) throw new LeaseConflict('Conflict');
        return this.put(record);
      },
    };
  }

  /** Another writer (an operator, a process not under test) changes the Lease. */
  put(record: LeaseRecord): StoredLease {
    this.writes++;
    this.lease = { resourceVersion: String(++this.rv), record };
    return this.lease;
  }

  get holder(): string | undefined {
    return this.lease?.record.holderIdentity;
  }
}

function elector(server: FakeLeaseServer, clock: FakeClock, identity: string, changes: string[] = []): LeaderElector {
  return new LeaderElector({ store: server.store(identity), identity, clock, logger: silentLogger, random: () => 0.5, onChange: (leader) => changes.push(`${identity} ${leader ? 'leads' : 'follows'} at ${clock.now()}`) });
}

describe('leader election on a Lease', () => {
  it('acquires a Lease nobody holds, then renews it every retry period without changing acquireTime', async () => {
    const clock = new FakeClock();
    const server = new FakeLeaseServer();
    const changes: string[] = [];
    const a = elector(server, clock, 'pod-a_node-a', changes);
    a.start();
    await clock.advance(0);
    assert.equal(a.leader, true);
    assert.deepEqual(server.lease?.record, { holderIdentity: 'pod-a_node-a', leaseDurationSeconds: 15, acquireTime: '1970-01-01T00:00:00.000000Z', renewTime: '1970-01-01T00:00:00.000000Z', leaseTransitions: 0 });
    await clock.advance(2000);
    assert.equal(server.lease?.record.renewTime, '1970-01-01T00:00:02.000000Z');
    assert.equal(server.lease?.record.acquireTime, '1970-01-01T00:00:00.000000Z');
    await clock.advance(20_000);
    assert.equal(a.leader, true);
    // One write per retry period: the leader renews from what it wrote, without reading first.
    assert.equal(server.writes, 12);
    assert.deepEqual(changes, ['pod-a_node-a leads at 0']);
    assert.deepEqual(a.status(), { identity: 'pod-a_node-a', lease: 'kube-system/palisade-policy-reporter', leader: true, holder: 'pod-a_node-a', lastError: null });
  });

  it('keeps a second candidate waiting for as long as the holder renews', async () => {
    const clock = new FakeClock();
    const server = new FakeLeaseServer();
    const a = elector(server, clock, 'a');
    const b = elector(server, clock, 'b');
    a.start();
    await clock.advance(0);
    b.start();
    for (let i = 0; i < 600; i++) {
      await clock.advance(100);
      assert.deepEqual([a.leader, b.leader], [true, false], `at ${clock.now()} ms`);
    }
    assert.equal(b.status().holder, 'a');
  });

  it('takes over a Lease whose holder was killed once it has gone unrenewed for the lease duration', async () => {
    const clock = new FakeClock();
    const server = new FakeLeaseServer();
    const changes: string[] = [];
    const a = elector(server, clock, 'a', changes);
    const b = elector(server, clock, 'b', changes);
    a.start();
    await clock.advance(0);
    b.start();
    await clock.advance(10_000);
    a.halt();
    const killedAt = clock.now();
    const lastRenew = 10_000;
    await clock.advance(25_000);
    assert.equal(b.leader, true);
    assert.equal(server.holder, 'b');
    assert.equal(server.lease?.record.leaseTransitions, 1);
    const took = Number(/^b leads at (\d+)$/.exec(changes.find((c) => c.startsWith('b leads'))!)![1]);
    assert.ok(took >= lastRenew + 15_000, `took over at ${took}, too soon after the last renewal at ${lastRenew}`);
    assert.ok(took - killedAt <= 20_000, `took over ${took - killedAt} ms after the kill`);
  });

  it('stops leading at once when its renewal meets a conflict: someone else wrote the Lease', async () => {
    const clock = new FakeClock();
    const server = new FakeLeaseServer();
    const a = elector(server, clock, 'a');
    a.start();
    await clock.advance(0);
    server.put({ holderIdentity: 'intruder', leaseDurationSeconds: 15, acquireTime: null, renewTime: null, leaseTransitions: 1 });
    await clock.advance(2000);
    assert.equal(a.leader, false);
    assert.match(a.status().lastError ?? '', /Conflict/);
    // It reads the Lease again, finds it held and renewed lately, and waits.
    await clock.advance(10_000);
    assert.equal(a.leader, false);
    assert.equal(a.status().holder, 'intruder');
  });

  it('gives leadership up at the renew deadline when cut off from the API server, before anyone may take over', async () => {
    const clock = new FakeClock();
    const server = new FakeLeaseServer();
    const a = elector(server, clock, 'a');
    const b = elector(server, clock, 'b');
    a.start();
    await clock.advance(0);
    b.start();
    await clock.advance(4000);
    server.cutOff.add('a');
    const lastRenew = 4000;
    let aStopped: number | null = null;
    let bStarted: number | null = null;
    for (let i = 0; i < 300; i++) {
      await clock.advance(100);
      assert.ok(!(a.leader && b.leader), `two leaders at ${clock.now()} ms`);
      if (!a.leader && aStopped === null) aStopped = clock.now();
      if (b.leader && bStarted === null) bStarted = clock.now();
    }
    assert.ok(aStopped !== null && aStopped <= lastRenew + 10_000, `a led until ${aStopped}`);
    assert.ok(bStarted !== null && bStarted >= lastRenew + 15_000, `b led from ${bStarted}`);
    assert.match(a.status().lastError ?? '', /ECONNREFUSED/);
    // Back in touch, a finds b holding the Lease and follows.
    server.cutOff.delete('a');
    await clock.advance(5000);
    assert.deepEqual([a.leader, b.leader, a.status().holder], [false, true, 'b']);
  });

  it('releases the Lease on stop, so a successor takes over without waiting for it to expire', async () => {
    const clock = new FakeClock();
    const server = new FakeLeaseServer();
    const a = elector(server, clock, 'a');
    const b = elector(server, clock, 'b');
    a.start();
    await clock.advance(0);
    b.start();
    await clock.advance(5000);
    await a.stop();
    assert.equal(a.leader, false);
    assert.equal(server.holder, '');
    await clock.advance(2400);
    assert.equal(b.leader, true);
  });

  it('never lets two candidates lead at once, whatever the order of kills, restarts, cut-offs and foreign writes', async function () {
    this.timeout(120_000);
    const step = fc.oneof(
      fc.record({ op: fc.constant('wait' as const), ms: fc.integer({ min: 100, max: 20_000 }) }),
      fc.record({ op: fc.constantFrom('kill' as const, 'restart' as const, 'stop' as const, 'cut' as const, 'heal' as const), who: fc.integer({ min: 0, max: 2 }) }),
      fc.record({ op: fc.constant('steal' as const) }),
    );
    await fc.assert(fc.asyncProperty(fc.array(step, { minLength: 5, maxLength: 25 }), async (steps) => {
      const clock = new FakeClock();
      const server = new FakeLeaseServer();
      let incarnation = 0;
      const spawn = (i: number) => {
        const e = elector(server, clock, `node-${i}-${incarnation++}`);
        e.start();
        return { elector: e, alive: true };
      };
      const candidates = [0, 1, 2].map(spawn);
      const check = () => {
        const leaders = candidates.filter((c) => c.alive && c.elector.leader).map((c) => c.elector.status().identity);
        assert.ok(leaders.length <= 1, `at ${clock.now()} ms: ${leaders.join(', ')} all lead`);
      };
      const wait = async (ms: number) => {
        for (let t = 0; t < ms; t += 100) {
          await clock.advance(100);
          check();
        }
      };
      for (const s of steps) {
        if (s.op === 'wait') await wait(s.ms);
        else if (s.op === 'steal') server.put({ holderIdentity: 'someone-else', leaseDurationSeconds: 15, acquireTime: null, renewTime: null, leaseTransitions: 9 });
        else {
          const c = candidates[s.who]!;
          const identity = c.elector.status().identity;
          if (s.op === 'kill') {
            c.elector.halt();
            c.alive = false;
          } else if (s.op === 'stop') {
            await c.elector.stop();
            c.alive = false;
          } else if (s.op === 'restart' && !c.alive) candidates[s.who] = spawn(s.who);
          else if (s.op === 'cut') server.cutOff.add(identity);
          else if (s.op === 'heal') server.cutOff.delete(identity);
        }
        check();
      }
      // Whatever happened, once every process is up and reachable one of them leads within 20 s.
      for (let i = 0; i < 3; i++) if (!candidates[i]!.alive) candidates[i] = spawn(i);
      server.cutOff.clear();
      await wait(20_000);
      assert.equal(candidates.filter((c) => c.elector.leader).length, 1);
    }), { numRuns: 40, seed: 20_240_601 });
  });
});
