import { pino } from 'pino';
import { ApiClient } from '../lib/kube/api-client.js';
import { inClusterConfig, kubeconfigFile } from '../lib/kube/client-config.js';
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

async function apiClient(config: DaemonConfig, env: CommandIO['env'], logger: Logger): Promise<ApiClient> {
  return new ApiClient(config.kubeconfig !== null ? await kubeconfigFile(config.kubeconfig) : await inClusterConfig(env), { logger });
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
  // After the configuration is known to be good, so a bad flag is reported once, by this process.
  const runtime = io.setUpRuntime?.() ?? { state: 'unavailable', reason: 'left to the caller' };
  const logger: Logger = pino({ level: config.logLevel, base: { node: config.compiler.nodeName } });
  if (runtime.state === 'unavailable') logger.warn({ reason: runtime.reason }, 'running without palisade\'s V8 settings: resident memory will be higher');
  else logger.info({ nodeFlags: runtime.flags, pid: process.pid }, 'V8 settings in place');
  const daemon = new Daemon(config, { client: await apiClient(config, io.env, logger), runner: hostRunner, logger });
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
