import dgram from 'node:dgram';

import dnsPacket from 'dns-packet';

export const UPSTREAM_ADDRESS = '127.0.0.42';

export interface FakeUpstream {
  port: number;
  queries: string[];
  /** The source port and message id of each query. */
  sources: { port: number; id: number }[];
  close(): Promise<void>;
}

/** A fake upstream on loopback (UDP only) answering every A query with 203.0.113.10; it records each query and where it came from. */
export async function startFakeUpstream(): Promise<FakeUpstream> {
  const socket = dgram.createSocket('udp4');
  const queries: string[] = [];
  const sources: FakeUpstream['sources'] = [];
  socket.on('message', (message, remote) => {
    const query = dnsPacket.decode(message);
    const question = query.questions?.[0];
    if (question === undefined) return;
    queries.push(`${question.type} ${question.name}`);
    sources.push({ port: remote.port, id: query.id ?? 0 });
    const reply = dnsPacket.encode({
      type: 'response',
      id: query.id,
      flags: dnsPacket.RECURSION_AVAILABLE,
      questions: [question],
      answers:
        question.type === 'A'
          ? [{ type: 'A', name: question.name, ttl: 300, data: '203.0.113.10' }]
          : [],
    });
    socket.send(reply, remote.port, remote.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, UPSTREAM_ADDRESS, resolve));
  return {
    port: socket.address().port,
    queries,
    sources,
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}
