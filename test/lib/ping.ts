/**
 * iputils `ping` through a tunnel: run it in a namespace, and read what it
 * printed (counts and each reply's round-trip time) even when packets were lost.
 */
import { CommandError } from './netns.ts';
import type { TestNetwork } from './netns.ts';

export interface PingResult {
  transmitted: number;
  received: number;
  /** One round-trip time per reply, in milliseconds, in arrival order. */
  roundTripsMs: number[];
  output: string;
}

export function parsePingOutput(output: string): PingResult {
  const counts = /(\d+) packets transmitted, (\d+) received/.exec(output);
  const roundTripsMs = [...output.matchAll(/ time=([\d.]+) ms/g)].map((match) => Number(match[1]));
  return {
    transmitted: Number(counts?.[1] ?? 0),
    received: Number(counts?.[2] ?? 0),
    roundTripsMs,
    output,
  };
}

export interface PingOptions {
  count: number;
  intervalSeconds: number;
  /** ping stops at this deadline even if fewer than `count` replies came back. */
  deadlineSeconds: number;
  /** The IP TOS byte of the requests; 2 is ECT(0) with DSCP 0. */
  tos?: number;
  /** ICMP payload bytes per request (ping's -s). */
  payloadBytes?: number;
  /** Requests must not be fragmented on the way (ping's -M do). */
  dontFragment?: boolean;
}

/** Pings `destination` from `namespace`; resolves with what happened, also when replies were lost. */
export async function ping(
  network: TestNetwork,
  namespace: string,
  destination: string,
  options: PingOptions,
): Promise<PingResult> {
  const argv = [
    'ping',
    '-n',
    '-c',
    `${options.count}`,
    '-i',
    `${options.intervalSeconds}`,
    '-W',
    '1',
    '-w',
    `${options.deadlineSeconds}`,
  ];
  if (options.tos !== undefined) argv.push('-Q', `${options.tos}`);
  if (options.payloadBytes !== undefined) argv.push('-s', `${options.payloadBytes}`);
  if (options.dontFragment === true) argv.push('-M', 'do');
  argv.push(destination);
  try {
    const { stdout } = await network.exec(namespace, argv, {
      timeoutMs: (options.deadlineSeconds + 5) * 1000,
    });
    return parsePingOutput(stdout);
  } catch (error) {
    if (!(error instanceof CommandError)) throw error;
    return parsePingOutput(error.stdout);
  }
}

/** A one-line account of a ping run for assertion messages. */
export function describePing(result: PingResult): string {
  return `${result.received}/${result.transmitted} replies: ${result.output.trim().split('\n').slice(-2).join(' | ')}`;
}
