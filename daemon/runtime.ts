/**
 * V8 flags palisade's daemon runs with (the image's entrypoint passes them; the lab and the benchmark
 * do the same). A small young generation keeps the resident size near the live heap: V8 otherwise
 * grows the nursery to its maximum and keeps it, which on a 10,000-pod cluster costs more memory than
 * every record of the cluster together. Scavenges get more frequent and stay short.
 */
export const DAEMON_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1'];
