/** A minimal DNS client for tests: one query over UDP or TCP, bounded in time. */
import dgram from 'node:dgram';
import net from 'node:net';

import dnsPacket from 'dns-packet';
import type { DecodedPacket, RecordType } from 'dns-packet';

import { TcpMessageReader, frameTcpMessage } from '../src/tcp-framing.ts';

/** dns-packet decodes the response code too, but its type declarations leave it out. */
export type DecodedReply = DecodedPacket & { rcode: string };

export function decodeReply(message: Uint8Array): DecodedReply {
  return dnsPacket.decode(Buffer.from(message)) as DecodedReply;
}

export function encodeQuery(name: string, type: RecordType, id = 0x1234): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type, class: 'IN' }],
  });
}

export function sendUdp(
  address: string,
  port: number,
  message: Uint8Array,
  timeoutMs = 3000,
): Promise<Buffer> {
  const socket = dgram.createSocket(net.isIPv6(address) ? 'udp6' : 'udp4');
  return new Promise<Buffer>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`no UDP reply from ${address}:${port} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    socket.on('error', reject);
    socket.on('message', (reply) => {
      clearTimeout(timer);
      resolve(reply);
    });
    socket.send(message, port, address);
  }).finally(() => socket.close());
}

/** Writes `chunks` (split on purpose, to exercise partial reads) and waits for `expectedReplies` framed replies. */
export function sendTcp(
  address: string,
  port: number,
  chunks: readonly Uint8Array[],
  expectedReplies = 1,
  timeoutMs = 3000,
): Promise<Buffer[]> {
  const socket = net.connect({ host: address, port });
  const reader = new TcpMessageReader();
  const replies: Buffer[] = [];
  return new Promise<Buffer[]>((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new Error(
            `${replies.length}/${expectedReplies} TCP replies from ${address}:${port} within ${timeoutMs} ms`,
          ),
        ),
      timeoutMs,
    );
    socket.on('error', reject);
    socket.on('connect', async () => {
      for (const chunk of chunks) {
        socket.write(chunk);
        await new Promise((resolveDelay) => setTimeout(resolveDelay, 5));
      }
    });
    socket.on('data', (data) => {
      replies.push(...reader.push(data));
      if (replies.length >= expectedReplies) {
        clearTimeout(timer);
        resolve(replies);
      }
    });
  }).finally(() => socket.destroy());
}

export async function queryTcp(
  address: string,
  port: number,
  message: Uint8Array,
): Promise<DecodedReply> {
  const [reply] = await sendTcp(address, port, [frameTcpMessage(message)]);
  if (reply === undefined) throw new Error('no reply');
  return decodeReply(reply);
}

export async function queryUdp(
  address: string,
  port: number,
  message: Uint8Array,
): Promise<DecodedReply> {
  return decodeReply(await sendUdp(address, port, message));
}

export function rcodeOf(reply: Uint8Array): number {
  return Buffer.from(reply).readUInt16BE(2) & 0xf;
}

export function answerData(reply: DecodedPacket): string[] {
  return (reply.answers ?? []).map((answer) => String('data' in answer ? answer.data : ''));
}
