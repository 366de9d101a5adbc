import { PalisadeError, UsageError } from '../lib/errors.js';
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

/**
 * Commands are loaded when run: the Kubernetes client the daemon needs takes longer to load than
 * `palisade compile` takes to run.
 */
const COMMANDS: Readonly<Record<string, () => Promise<{ run: Command; help: string }>>> = {
  daemon: async () => {
    const m = await import('./daemon-command.js');
    return { run: m.daemonCommand, help: m.DAEMON_HELP };
  },
  compile: async () => {
    const m = await import('./compile-command.js');
    return { run: m.compileCommand, help: m.COMPILE_HELP };
  },
  explain: async () => {
    const m = await import('./explain-command.js');
    return { run: m.explainCommand, help: m.EXPLAIN_HELP };
  },
  cleanup: async () => {
    const m = await import('./cleanup-command.js');
    return { run: m.cleanupCommand, help: m.CLEANUP_HELP };
  },
  demo: async () => {
    const m = await import('./demo/command.js');
    return { run: m.demoCommand, help: m.DEMO_HELP };
  },
};

/** Exit codes: 0 success, 1 the input or the system failed, 2 the command line was wrong. */
export async function runCli(argv: readonly string[], io: CommandIO): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    io.stdout(HELP);
    return name === undefined ? 2 : 0;
  }
  const load = COMMANDS[name];
  if (load === undefined) {
    io.stderrLine(`palisade: unknown command "${name}"\n\n${HELP}`);
    return 2;
  }
  const command = await load();
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
