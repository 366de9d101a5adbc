import assert from 'node:assert/strict';
import { parseDaemonConfig, parseDuration } from '../../daemon/config.js';

/** The daemon's configuration: flags over environment over defaults, every error at once. */

describe('daemon configuration', () => {
  it('uses the documented defaults with only a node name', () => {
    const config = parseDaemonConfig([], { NODE_NAME: 'ip-10-0-1-5.ec2.internal' });
    assert.equal(config.compiler.nodeName, 'ip-10-0-1-5.ec2.internal');
    assert.deepEqual(config.compiler.interfacePrefixes, ['eni', 'vlan']);
    assert.deepEqual(config.statusAddr, { host: '127.0.0.1', port: 9710 });
    assert.deepEqual(config.metricsAddr, { host: '0.0.0.0', port: 9711 });
    assert.equal(config.iptablesBackend, 'auto');
    assert.equal(config.refreshIntervalMs, 10_000);
    assert.equal(config.logLevel, 'info');
    assert.equal(config.kubeconfig, null);
    assert.ok(Object.isFrozen(config));
  });

  it('reports policy problems as Events by default, with the Lease in the pod\'s namespace and the pod and node as identity', () => {
    assert.deepEqual(parseDaemonConfig([], { NODE_NAME: 'n1' }).policyEvents, { leaseNamespace: 'kube-system', leaseName: 'palisade-policy-reporter', identity: 'n1' });
    assert.deepEqual(parseDaemonConfig([], { NODE_NAME: 'n1', POD_NAME: 'palisade-x7k2p', POD_NAMESPACE: 'palisade' }).policyEvents, { leaseNamespace: 'palisade', leaseName: 'palisade-policy-reporter', identity: 'palisade-x7k2p_n1' });
    assert.equal(parseDaemonConfig(['--policy-events', 'off'], { NODE_NAME: 'n1' }).policyEvents, null);
    assert.equal(parseDaemonConfig([], { NODE_NAME: 'n1', PALISADE_POLICY_EVENTS: 'off' }).policyEvents, null);
    assert.throws(() => parseDaemonConfig(['--policy-events', 'maybe', '--lease-namespace', 'Not_A_Namespace'], { NODE_NAME: 'n1', POD_NAME: 'UPPER' }), (error: Error) => {
      assert.match(error.message, /--policy-events "maybe": must be on or off/);
      assert.match(error.message, /--lease-namespace "Not_A_Namespace": must be a namespace name/);
      assert.match(error.message, /POD_NAME "UPPER": must be a pod name/);
      return true;
    });
  });

  it('asks discovery about ClusterNetworkPolicies every 30 s by default, or as often as told, and not more than once a second', () => {
    assert.equal(parseDaemonConfig([], { NODE_NAME: 'n1' }).clusterPolicyDiscoveryIntervalMs, 30_000);
    assert.equal(parseDaemonConfig(['--cluster-policy-discovery-interval', '2s'], { NODE_NAME: 'n1' }).clusterPolicyDiscoveryIntervalMs, 2000);
    assert.equal(parseDaemonConfig([], { NODE_NAME: 'n1', PALISADE_CLUSTER_POLICY_DISCOVERY_INTERVAL: '5m' }).clusterPolicyDiscoveryIntervalMs, 300_000);
    for (const bad of ['100ms', 'soon', '0']) {
      assert.throws(() => parseDaemonConfig(['--cluster-policy-discovery-interval', bad], { NODE_NAME: 'n1' }), (error: Error) => {
        assert.match(error.message, new RegExp(`--cluster-policy-discovery-interval "${bad}": must be a duration of at least 1000 ms, like 10s or 1500ms`));
        return true;
      });
    }
  });

  it('prefers a flag to its PALISADE_ variable, and that to the generic one', () => {
    const env = { NODE_NAME: 'from-downward-api', PALISADE_NODE_NAME: 'from-palisade-env', KUBECONFIG: '/generic', PALISADE_LOG_LEVEL: 'debug' };
    assert.equal(parseDaemonConfig([], env).compiler.nodeName, 'from-palisade-env');
    assert.equal(parseDaemonConfig(['--node-name', 'from-flag'], env).compiler.nodeName, 'from-flag');
    assert.equal(parseDaemonConfig([], env).kubeconfig, '/generic');
    assert.equal(parseDaemonConfig([], env).logLevel, 'debug');
  });

  it('reads every setting from flags', () => {
    const config = parseDaemonConfig(['--node-name', 'n', '--interface-prefix', 'eni,cali', '--status-addr', '127.0.0.1:0', '--metrics-addr', ':9999', '--iptables-backend', 'nft', '--refresh-interval', '2m', '--log-level', 'warn', '--kubeconfig', '/k'], {});
    assert.deepEqual(config.compiler.interfacePrefixes, ['eni', 'cali']);
    assert.deepEqual(config.metricsAddr, { host: '0.0.0.0', port: 9999 });
    assert.equal(config.iptablesBackend, 'nft');
    assert.equal(config.refreshIntervalMs, 120_000);
  });

  it('reports every bad value at once, each with where it came from', () => {
    assert.throws(
      () => parseDaemonConfig(['--status-addr', 'localhost', '--iptables-backend', 'both', '--refresh-interval', 'often'], { PALISADE_LOG_LEVEL: 'loud', PALISADE_ALLOW_MARK: '0x4000' }),
      (error: Error) => {
        for (const part of [
          '--node-name (or NODE_NAME, set from the downward API in the DaemonSet) is required',
          '--status-addr "localhost": must be HOST:PORT',
          '--iptables-backend "both": must be auto, legacy or nft',
          '--refresh-interval "often": must be a duration',
          'PALISADE_LOG_LEVEL "loud": must be one of',
          'clashes with the kube-proxy masquerade mark',
        ]) assert.ok(error.message.includes(part), `missing "${part}" in:\n${error.message}`);
        return true;
      },
    );
  });

  it('rejects an unknown flag', () => {
    assert.throws(() => parseDaemonConfig(['--nodename', 'x'], {}), /Unknown option '--nodename'/);
  });

  it('parses durations in ms, s, m and h, and bare seconds', () => {
    assert.deepEqual(['500ms', '10s', '2m', '1h', '3', '1.5s', 'x', '-1s'].map(parseDuration), [500, 10_000, 120_000, 3_600_000, 3000, 1500, null, null]);
  });
});
