/**
 * A tenant attacks while a victim namespace is probed continuously. The attacker can create Pods and
 * NetworkPolicies in one namespace of their own (a 63-character name), nothing else, and tries in turn
 * every input that once stopped enforcement on a node or opened another tenant's pod. The victim,
 * namespace x, is isolated for ingress and lets in only y/a, through an ipBlock written with host bits
 * (as the API server accepts it and the upstream e2e suite writes it). Throughout: no probe into x from
 * anywhere else may ever succeed, y/a's probes must keep succeeding, and after every attack a change
 * elsewhere in the cluster must still be enforced, on both nodes.
 */
import assert from 'node:assert/strict';
import { policy, pod } from '../support/builders.js';
import { assertNoUnexpected, CONTAINER_PORTS, NODE_A, NODE_B, Reachability, TCP_80, UDP_80, useE2eCluster } from '../support/e2e-cluster.js';
import type { E2eCluster, WatchedPair } from '../support/e2e-cluster.js';
import { vethSuffix } from '../../rules/names.js';

type Obj = Record<string, unknown>;

const ATTACKER = `evil-${'e'.repeat(58)}`;
/**
 * A pair of names whose host interface names collide, found by a birthday search over sha1 (2^22
 * names on each side, seconds on one CPU), as a tenant could find one with a victim's pod names.
 */
const VICTIM_TWINNED = 'v-2758128';
const ATTACKER_TWIN = 'twin-1031303';

const longName = (prefix: string): string => `${prefix}-${'n'.repeat(253 - prefix.length - 1)}`;

/** A pod that never starts (pending with only the VPC CNI's annotation), as any tenant can create. */
function pending(name: string, node: string, annotation: string, labels: Record<string, string> = { role: 'bait' }): Obj {
  return pod(ATTACKER, name, { node, annotationIp: annotation, labels });
}

function pairs(list: readonly [from: string, to: string, allowed: boolean][]): WatchedPair[] {
  return list.flatMap(([from, to, allowed]) => [TCP_80, UDP_80].map((t) => ({ ...t, from, to, allowed })));
}

describe('Tenant attacks: nothing a tenant writes opens, stalls or stops another tenant\'s enforcement', function () {
  this.timeout(300_000);
  const cluster = useE2eCluster({ prefix: 'paltest-e2e-tenant' });

  /** A change in namespace z is enforced on both nodes, then undone: the nodes still take updates. */
  async function canary(c: E2eCluster, round: number): Promise<void> {
    const name = `canary-${round}`;
    await c.applyPolicies(policy('z', name, { podSelector: {}, policyTypes: ['Ingress'] }));
    const closed = new Reachability(false, { sources: ['y/b', 'y/c'], targets: ['z/a', 'z/c'] });
    await c.expectMatrix(closed, TCP_80);
    await c.deletePolicy('z', name);
    await c.expectMatrix(new Reachability(true, { sources: ['y/b', 'y/c'], targets: ['z/a', 'z/c'] }), TCP_80);
  }

  it('A victim under deny-all is never reachable, and its allowed traffic never stops, while an attacker tries every attack in turn.', async () => {
    const c = cluster();
    await c.reset();
    assert.equal(vethSuffix('x', VICTIM_TWINNED), vethSuffix(ATTACKER, ATTACKER_TWIN), 'the precomputed pair collides');
    await c.addPod({ namespace: 'x', name: VICTIM_TWINNED, node: NODE_A, ip: c.freeAddress(NODE_A), labels: { pod: 'v' }, ports: CONTAINER_PORTS });
    const yA = c.ip('y/a');
    await c.applyPolicies(
      policy('x', 'deny-all', { podSelector: {}, policyTypes: ['Ingress'] }),
      policy('x', 'from-y-a', { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: `${yA}/28` } }] }] }),
    );
    const victims = ['x/a', 'x/c', `x/${VICTIM_TWINNED}`];
    const expected = new Reachability(true, { sources: ['y/a', 'y/b', 'z/c', 'x/b'], targets: victims })
      .expect(['y/b', 'z/c', 'x/b'], victims, false);
    await c.expectMatrix(expected, TCP_80);

    const watched = pairs([
      ['y/b', 'x/a', false], ['z/c', 'x/a', false], ['y/b', 'x/c', false], ['z/a', `x/${VICTIM_TWINNED}`, false], ['y/c', `x/${VICTIM_TWINNED}`, false],
      ['y/a', 'x/a', true], ['y/a', 'x/c', true], ['y/a', `x/${VICTIM_TWINNED}`, true], ['x/a', 'y/b', true],
    ]);
    const timeline: string[] = [];
    const watch = c.watchPairs(watched);
    const step = async (what: string, attack: () => Promise<void>): Promise<void> => {
      timeline.push(`${watch.elapsed()} ms: ${what}`);
      await attack();
      await canary(c, timeline.length);
    };
    try {
      await step('attacker namespace, pods and policy with names at their longest', async () => {
        await c.lab.api.apply([
          { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ATTACKER, labels: { tenant: 'evil' } } },
          pending(longName('a'), NODE_A, '10.1.1.201'),
          pending(longName('b'), NODE_B, '10.1.2.201'),
          policy(ATTACKER, longName('p'), { podSelector: {}, policyTypes: ['Ingress', 'Egress'], ingress: [{ from: [{ podSelector: { matchLabels: { role: 'bait' } } }] }], egress: [{ to: [{ podSelector: { matchLabels: { role: 'bait' } } }] }] }),
        ]);
      });
      await step('addresses no pod can have, in sets on both nodes', async () => {
        await c.lab.api.apply(['0.0.0.0', '127.0.0.1', '255.255.255.255', '224.0.0.1', '169.254.20.10'].flatMap((address, i) => [
          pending(`odd-${i}-a`, NODE_A, address), pending(`odd-${i}-b`, NODE_B, address),
        ]));
      });
      await step('the victims\' addresses claimed, and a node\'s', async () => {
        await c.lab.api.apply([
          pending('thief-a', NODE_A, c.ip('x/a')),
          pending('thief-c', NODE_B, c.ip('x/c')),
          pending('thief-v', NODE_A, c.ip(`x/${VICTIM_TWINNED}`)),
          pending('thief-node', NODE_A, '172.31.0.1'),
        ]);
      });
      await step('a pod whose interface name collides with a victim\'s, claiming its address, then another address', async () => {
        await c.lab.api.apply(pending(ATTACKER_TWIN, NODE_A, c.ip(`x/${VICTIM_TWINNED}`)));
        await c.lab.api.apply(pending(ATTACKER_TWIN, NODE_A, '10.1.1.202'));
        await c.lab.api.delete('Pod', ATTACKER, ATTACKER_TWIN);
      });
      await step('a policy with 300 peers times 300 named ports', async () => {
        await c.lab.api.apply(policy(ATTACKER, 'huge', {
          podSelector: {},
          ingress: [{ from: Array.from({ length: 300 }, (_, i) => ({ podSelector: { matchLabels: { idx: `p${i}` } } })), ports: Array.from({ length: 300 }, (_, i) => ({ port: `n${i}` })) }],
        }));
      });
    } finally {
      const records = await watch.stop();
      console.log(`        ${timeline.join('; ')}; watch ended at ${watch.elapsed()} ms`);
      assertNoUnexpected(records, timeline.join('; '));
    }

    for (const nodeName of [NODE_A, NODE_B]) {
      const status = await c.status(nodeName);
      assert.equal(status['ready'], true, `${nodeName} is ready`);
      const problems = JSON.stringify(status['problems']);
      assert.match(problems, /no address a pod can have/, `${nodeName} reports the odd addresses`);
      assert.match(problems, /holds it with a stronger claim/, `${nodeName} reports the stolen addresses`);
      assert.match(problems, /it is the address of node node-a/);
      assert.match(JSON.stringify(status['failedPolicies']), /over palisade's per-policy budget/);
      const metrics = await c.lab.metrics(nodeName);
      assert.match(metrics, new RegExp(`palisade_policy_over_budget\\{policy_namespace="${ATTACKER}",policy="huge"\\} 1`));
      assert.match(metrics, /palisade_apply_failures_total 0/, `${nodeName} never failed a write`);
    }
    const logs = [NODE_A, NODE_B].flatMap((n) => c.lab.node(n).daemon?.lines ?? []);
    assert.ok(!logs.some((l) => /forgot tracked flows/.test(l) && /"previousPod":"x\//.test(l)), 'no victim\'s tracked flows were forgotten');
    await c.expectMatrix(expected, UDP_80);
  });
});
