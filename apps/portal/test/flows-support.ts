/**
 * Test support for the flows tests: a portal restarted over the same database file, a client
 * device that joins again as itself (same token, device id and key), a gateway with its own
 * device id.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { ChannelHubOptions } from '../src/channels/hub.ts';
import { runServe } from '../src/serve.ts';
import {
  connected,
  makeToken,
  wgKey,
  type Frame,
  type TestSocket,
  type World,
} from './channel-support.ts';

export const CHANNELS: ChannelHubOptions = { mapper: { pollIntervalMs: 100, batchDelayMs: 10 } };

/** Stops the world's portal and starts another over the same database file. */
export async function restart(world: World, channels: ChannelHubOptions = {}): Promise<World> {
  await world.portal.stop();
  const portal = await runServe({
    database: world.dbPath,
    listen: '127.0.0.1:0',
    handleSignals: false,
    upstreamDns: ['1.1.1.1'],
    searchDomain: 'corp.example',
    channels: { ...CHANNELS, ...channels },
  });
  return {
    ...world,
    portal,
    storage: portal.storage,
    async close() {
      await portal.stop();
      await world.close();
    },
  };
}

export interface Device {
  token: string;
  deviceId: string;
  publicKey: string;
}

export function newDevice(world: World, actorId: string, expiresAt?: number): Device {
  const token = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'headless_client',
    actorId,
    ...(expiresAt === undefined ? {} : { expiresAt }),
  });
  return {
    token: token.text,
    deviceId: `dev-${randomBytes(4).toString('hex')}`,
    publicKey: wgKey(),
  };
}

/** The device joins (again): the same token, device id and key unless told otherwise. */
export async function joinDevice(
  world: World,
  device: Device,
  publicKey = device.publicKey,
): Promise<{ socket: TestSocket; init: Frame }> {
  const socket = await connected(world.portal, '/client/websocket', device.token);
  const reply = await socket.reply('client', 'phx_join', {
    public_key: publicKey,
    device_id: device.deviceId,
    name: 'laptop',
    os_name: 'Debian',
    os_version: '13',
  });
  assert.equal((reply.payload as { status: string }).status, 'ok', JSON.stringify(reply.payload));
  return { socket, init: await socket.event('init') };
}

/** A gateway of the world's site with its own device id; answers authorize_flow. */
export async function joinGatewayAs(
  world: World,
  deviceId: string,
): Promise<{ socket: TestSocket; init: Frame }> {
  const token = makeToken(world.storage, {
    accountId: world.accountId,
    kind: 'gateway',
    siteId: world.siteId,
    expiresAt: null,
  });
  const socket = await connected(world.portal, '/gateway/websocket', token.text);
  const reply = await socket.reply('gateway', 'phx_join', {
    public_key: wgKey(),
    device_id: deviceId,
    name: deviceId,
    endpoints: ['192.0.2.10:51820'],
  });
  assert.equal((reply.payload as { status: string }).status, 'ok', JSON.stringify(reply.payload));
  const init = await socket.event('init');
  socket.answerFlows = true;
  return { socket, init };
}

export function request(socket: TestSocket, payload: Record<string, unknown>): void {
  socket.send({ topic: 'client', event: 'request_authorization', payload, ref: socket.ref() });
}
