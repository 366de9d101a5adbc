import assert from 'node:assert/strict';
import { ClusterPolicyWatch } from '../../daemon/cluster-policy-watch.js';
import type { PolicyReflector } from '../../daemon/cluster-policy-watch.js';
import { ApiClient } from '../../lib/kube/api-client.js';
import { kubeconfigText } from '../../lib/kube/client-config.js';
import { servesResource } from '../../lib/kube/discovery.js';
import type { ReflectorStats } from '../../lib/kube/reflector.js';
import { FakeApiServer } from '../../lib/lab/api-server.js';
import type { Logger } from '../../lib/logger.js';
import { silentLogger } from '../../lib/logger.js';
import { FakeClock } from '../support/fake-clock.js';

/**
 * Whether ClusterNetworkPolicies are watched follows whether the API server serves them: discovery at
 * start, every interval, and at once on a 404; a reflector while served, none (and every policy
 * forgotten) once not. A cluster without the CRD is settled by one answer, and logs it once.
 */

class FakeReflector implements PolicyReflector {
  synced = false;
  running = false;
  readonly stats: ReflectorStats = { lists: 0, relists: 0, watches: 0, failures: 0, handlerErrors: 0, listMode: null, lastError: null };
  start(): void {
    this.running = true;
  }
  async stop(): Promise<void> {
    this.running = false;
  }
}

/** A logger that keeps its lines as "level message". */
function recordingLogger(lines: string[]): Logger {
  const at = (level: string) => (_fields: object, message: string) => lines.push(`${level} ${message}`);
  return { ...silentLogger, info: at('info'), warn: at('warn'), error: at('error'), debug: () => undefined };
}

function harness(answers: { next: boolean | Error }, intervalMs = 30_000) {
  const clock = new FakeClock();
  const reflectors: FakeReflector[] = [];
  const lines: string[] = [];
  const events: string[] = [];
  let asked = 0;
  const watch = new ClusterPolicyWatch({
    discover: async () => {
      asked++;
      if (answers.next instanceof Error) throw answers.next;
      return answers.next;
    },
    makeReflector: () => {
      const r = new FakeReflector();
      reflectors.push(r);
      return r;
    },
    forget: () => events.push('forget'),
    onServedChange: (served) => events.push(served ? 'served' : 'not served'),
    intervalMs,
    clock,
    logger: recordingLogger(lines),
  });
  return { clock, watch, reflectors, lines, events, asked: () => asked };
}

describe('watching ClusterNetworkPolicies while they are served', () => {
  it('on a cluster without the CRD: settled by the first answer, no reflector, one log line however long it runs', async () => {
    const h = harness({ next: false });
    assert.equal(h.watch.settled, false, 'not before discovery has answered');
    h.watch.start();
    await h.clock.advance(0);
    assert.equal(h.watch.settled, true);
    assert.deepEqual([h.watch.status().served, h.reflectors.length, h.events], [false, 0, ['not served']]);
    await h.clock.advance(10 * 60_000);
    assert.equal(h.asked(), 21, 'asked at start and every 30 s');
    assert.equal(h.lines.length, 1);
    assert.match(h.lines[0]!, /^info the API server does not serve ClusterNetworkPolicies/);
    await h.watch.stop();
  });

  it('starts a reflector when the CRD appears, settles once it has listed, and stops it and forgets every policy when the CRD goes', async () => {
    const answers: { next: boolean | Error } = { next: false };
    const h = harness(answers);
    h.watch.start();
    await h.clock.advance(0);
    answers.next = true;
    await h.clock.advance(29_999);
    assert.equal(h.reflectors.length, 0, 'not before the next round');
    await h.clock.advance(1);
    assert.deepEqual([h.reflectors.length, h.reflectors[0]!.running, h.watch.reflector === h.reflectors[0]], [1, true, true]);
    assert.equal(h.watch.settled, false, 'served, not listed yet');
    h.reflectors[0]!.synced = true;
    assert.equal(h.watch.settled, true);
    await h.clock.advance(60_000);
    assert.equal(h.reflectors.length, 1, 'still served: the same reflector');
    answers.next = false;
    h.watch.recheck();
    await h.clock.advance(0);
    assert.deepEqual([h.reflectors[0]!.running, h.events.includes('forget')], [true, false], 'one answer is not enough: an API server starting up says 404 too');
    await h.clock.advance(4_999);
    assert.equal(h.events.includes('forget'), false);
    await h.clock.advance(1);
    assert.deepEqual([h.reflectors[0]!.running, h.watch.reflector, h.watch.settled], [false, null, true]);
    assert.deepEqual(h.events, ['not served', 'served', 'forget', 'not served']);
    answers.next = true;
    await h.clock.advance(30_000);
    assert.deepEqual([h.reflectors.length, h.reflectors[1]!.running], [2, true], 'and a fresh one when it comes back');
    await h.watch.stop();
    assert.equal(h.reflectors[1]!.running, false);
  });

  it('keeps every policy through a moment of "not served" (an API server starting up) when served again at the next answer', async () => {
    const answers: { next: boolean | Error } = { next: true };
    const h = harness(answers);
    h.watch.start();
    await h.clock.advance(0);
    h.reflectors[0]!.synced = true;
    answers.next = false;
    h.watch.recheck();
    await h.clock.advance(0);
    answers.next = true;
    await h.clock.advance(5_000);
    assert.deepEqual([h.reflectors.length, h.reflectors[0]!.running, h.events], [1, true, ['served']]);
    assert.match(h.lines.join('\n'), /stay enforced until it says so again/);
    answers.next = false;
    await h.clock.advance(30_000);
    assert.equal(h.events.includes('forget'), false, 'a new "not served" starts its own confirmation');
    await h.clock.advance(5_000);
    assert.deepEqual(h.events, ['served', 'forget', 'not served']);
    await h.watch.stop();
  });

  it('keeps what it has when discovery fails, retries sooner with backoff, and logs each distinct error once', async () => {
    const answers: { next: boolean | Error } = { next: true };
    const h = harness(answers, 30_000);
    h.watch.start();
    await h.clock.advance(0);
    answers.next = new Error('connect ECONNREFUSED');
    await h.clock.advance(30_000);
    assert.equal(h.asked(), 2);
    await h.clock.advance(1000 + 2000 + 4000);
    assert.equal(h.asked(), 5);
    assert.deepEqual([h.reflectors.length, h.reflectors[0]!.running, h.watch.status().served], [1, true, true], 'the watch goes on as it was');
    assert.equal(h.lines.filter((l) => l.startsWith('warn')).length, 1);
    assert.match(h.watch.status().lastError ?? '', /ECONNREFUSED/);
    answers.next = true;
    await h.clock.advance(8000);
    assert.equal(h.watch.status().lastError, null);
    assert.equal(h.reflectors.length, 1);
    await h.watch.stop();
  });

  it('before the first answer it is not settled, so the first apply waits', async () => {
    const h = harness({ next: new Error('503') });
    h.watch.start();
    await h.clock.advance(60_000);
    assert.deepEqual([h.watch.settled, h.watch.status().served], [false, null]);
    await h.watch.stop();
  });
});

describe('asking discovery whether a resource is served', function () {
  this.timeout(10_000);
  it('says no on 404 and on a list without it, yes once the CRD is installed, and throws when it cannot tell', async () => {
    const server = await FakeApiServer.start({ bookmarkIntervalMs: 0 });
    const client = new ApiClient(await kubeconfigText(server.kubeconfig(), 'test kubeconfig'));
    try {
      assert.equal(await servesResource(client, 'policy.networking.k8s.io/v1alpha2', 'clusternetworkpolicies'), false);
      assert.equal(await servesResource(client, 'networking.k8s.io/v1', 'clusternetworkpolicies'), false);
      server.setCrdInstalled('ClusterNetworkPolicy', true);
      assert.equal(await servesResource(client, 'policy.networking.k8s.io/v1alpha2', 'clusternetworkpolicies'), true);
      server.setFailure({ status: 503, times: 1 });
      await assert.rejects(servesResource(client, 'policy.networking.k8s.io/v1alpha2', 'clusternetworkpolicies'), /HTTP 503/);
      server.setCrdInstalled('ClusterNetworkPolicy', false);
      assert.equal(await servesResource(client, 'policy.networking.k8s.io/v1alpha2', 'clusternetworkpolicies'), false);
    } finally {
      client.close();
      await server.close();
    }
  });
});
