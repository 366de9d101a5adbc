/**
 * The V8 settings the daemon runs with, set up by the daemon itself so that they hold however it is
 * started (the package's bin, `node dist/daemon/main.js daemon`, the image, a shell script).
 *
 * A small young generation keeps the resident size near the live heap. V8 otherwise grows the nursery
 * to its maximum while the first lists stream in and keeps it: measured on 10,000 real-sized pods, 200
 * MiB resident at rest and 280 MiB after a burst of pod updates, against 135 MiB with it. Scavenges
 * get more frequent and stay short.
 *
 * V8 reads these when it starts, so the daemon re-executes itself in place (process.execve: same
 * process id, same signals, nothing left behind) with them added, once.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=2'];

/** Set on the re-executed process, so a failed re-execution can never loop. */
const MARKER = 'PALISADE_RUNTIME_SET';

export type RuntimeSetup =
  | { readonly state: 'set'; readonly flags: readonly string[] }
  | { readonly state: 'given'; readonly flags: readonly string[] }
  | { readonly state: 'unavailable'; readonly reason: string };

function given(flag: string): boolean {
  const name = flag.split('=')[0]!;
  const inOptions = (process.env['NODE_OPTIONS'] ?? '').split(/\s+/).some((f) => f.split('=')[0] === name);
  return inOptions || process.execArgv.some((f) => f.split('=')[0] === name);
}

/**
 * Re-executes the process with DAEMON_NODE_FLAGS unless they are there already; returns (without
 * having re-executed) when they are, or when it cannot, saying which.
 */
export function ensureDaemonRuntime(): RuntimeSetup {
  const missing = DAEMON_NODE_FLAGS.filter((f) => !given(f));
  if (missing.length === 0) return { state: process.env[MARKER] === '1' ? 'set' : 'given', flags: DAEMON_NODE_FLAGS };
  if (process.env[MARKER] === '1') return { state: 'unavailable', reason: `re-executed, but node did not take ${missing.join(' ')}` };
  if (typeof process.execve !== 'function') return { state: 'unavailable', reason: 'this Node.js has no process.execve' };
  const script = process.argv[1];
  if (script === undefined) return { state: 'unavailable', reason: 'no script path to re-execute' };
  try {
    process.execve(process.execPath, [process.execPath, ...missing, ...process.execArgv, script, ...process.argv.slice(2)], { ...process.env, [MARKER]: '1' });
  } catch (error) {
    return { state: 'unavailable', reason: `process.execve failed: ${error instanceof Error ? error.message : String(error)}` };
  }
  // Not reached: execve replaces the process.
  return { state: 'unavailable', reason: 'process.execve returned' };
}
