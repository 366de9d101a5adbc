import { KubeConfig } from '@kubernetes/client-node';
import { pino } from 'pino';
import { PalisadeError } from '../lib/errors.js';
import { hostRunner } from '../lib/exec.js';
import type { Logger } from '../lib/logger.js';
import { daemonFlagHelp, parseDaemonConfig } from './config.js';
import type { DaemonConfig } from './config.js';
import { Daemon } from './daemon.js';
import type { CommandIO } from './command-io.js';

export const DAEMON_HELP = `Usage: palisade daemon [options]

Watches Pods, Namespaces and NetworkPolicies and keeps this node's iptables rules and ipsets in line
with them. Stops on SIGTERM or SIGINT and leaves the rules in force for the next process.

Options (each also read from the environment variables shown):
${daemonFlagHelp()}
`;

function loadKubeconfig(config: DaemonConfig, env: CommandIO['env']): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (config.kubeconfig !== null) kc.loadFromFile(config.kubeconfig);
    else if (env['KUBERNETES_SERVICE_HOST'] !== undefined) kc.loadFromCluster();
    else throw new Error('no --kubeconfig given and not running in a cluster (KUBERNETES_SERVICE_HOST is not set)');
  } catch (error) {
    throw new PalisadeError('KUBECONFIG_INVALID', `cannot load the kubeconfig${config.kubeconfig === null ? '' : ` ${config.kubeconfig}`}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  if (kc.getCurrentCluster() === null) throw new PalisadeError('KUBECONFIG_INVALID', `the kubeconfig ${config.kubeconfig ?? '(in-cluster)'} has no current cluster`);
  return kc;
}

function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const handler = (signal: string) => {
      process.off('SIGTERM', handler);
      process.off('SIGINT', handler);
      resolve(signal);
    };
    process.on('SIGTERM', handler);
    process.on('SIGINT', handler);
  });
}

export async function daemonCommand(argv: readonly string[], io: CommandIO): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stdout(DAEMON_HELP);
    return 0;
  }
  const config = parseDaemonConfig(argv, io.env);
  const logger: Logger = pino({ level: config.logLevel, base: { node: config.compiler.nodeName } });
  const daemon = new Daemon(config, { kubeconfig: loadKubeconfig(config, io.env), runner: hostRunner, logger });
  // A bug must not take enforcement down with it: the rules outlive the process, and the
  // DaemonSet restarts it. Log, then exit through the one path below.
  const crashed = new Promise<string>((resolve) => {
    process.once('uncaughtException', (error) => {
      logger.error({ err: error.stack ?? error.message }, 'uncaught exception; exiting, rules stay in force');
      resolve('crash');
    });
  });
  await daemon.start();
  const reason = await Promise.race([waitForSignal(), crashed]);
  logger.info({ reason }, 'stopping; the rules stay in force');
  await daemon.stop();
  return reason === 'crash' ? 1 : 0;
}
