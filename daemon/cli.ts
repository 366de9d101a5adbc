import { PalisadeError, UsageError } from '../lib/errors.js';
import { compileCommand, COMPILE_HELP } from './compile-command.js';
import { explainCommand, EXPLAIN_HELP } from './explain-command.js';
import { cleanupCommand, CLEANUP_HELP } from './cleanup-command.js';
import { daemonCommand, DAEMON_HELP } from './daemon-command.js';
import { demoCommand, DEMO_HELP } from './demo-command.js';
import type { CommandIO } from './command-io.js';

const HELP = `palisade: Kubernetes NetworkPolicy enforcement with iptables and ipsets

Usage: palisade <command> [options]

Commands:
  daemon    watch the cluster and keep this node's rules in line with its NetworkPolicies
  compile   print the ipsets and iptables rules a node would get from manifests
  explain   say whether policy allows a connection, and which rules decide it
  cleanup   remove every hook, chain and ipset palisade created on this node
  demo      replay the network policy tutorial on a lab node of network namespaces (root)

Run "palisade <command> --help" for a command's options.
`;

type Command = (argv: readonly string[], io: CommandIO) => Promise<number>;

const COMMANDS: Readonly<Record<string, { run: Command; help: string }>> = {
  daemon: { run: daemonCommand, help: DAEMON_HELP },
  compile: { run: compileCommand, help: COMPILE_HELP },
  explain: { run: explainCommand, help: EXPLAIN_HELP },
  cleanup: { run: cleanupCommand, help: CLEANUP_HELP },
  demo: { run: demoCommand, help: DEMO_HELP },
};

/** Exit codes: 0 success, 1 the input or the system failed, 2 the command line was wrong. */
export async function runCli(argv: readonly string[], io: CommandIO): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout(HELP);
    return name === undefined ? 2 : 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    io.stderrLine(`palisade: unknown command "${name}"\n\n${HELP}`);
    return 2;
  }
  try {
    return await command.run(rest, io);
  } catch (error) {
    return reportFailure(name, error, io, command.help);
  }
}

function reportFailure(name: string, error: unknown, io: CommandIO, help: string): number {
  // parseArgs throws TypeErrors with codes like ERR_PARSE_ARGS_UNKNOWN_OPTION for bad flags.
  const code = (error as { code?: unknown }).code;
  if (error instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
    io.stderrLine(`palisade ${name}: ${(error as Error).message}\n\n${help}`);
    return 2;
  }
  if (error instanceof PalisadeError) {
    io.stderrLine(`palisade ${name}: ${error.message}`);
    return 1;
  }
  io.stderrLine(`palisade ${name}: unexpected failure: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  return 1;
}
