import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type ChannelEffect,
  type ChannelEvent,
  PhoenixChannel,
  type PhoenixChannelOptions,
  RECONNECT_CLOSE_CODE,
} from '@gatehouse/phoenix-channel';

interface Sent {
  topic: string;
  event: string;
  payload: unknown;
  ref: string | null;
  join_ref?: string;
}

/** A channel on a fake clock, with its effects sorted into what was sent, closed, connected, told. */
class Harness {
  readonly channel: PhoenixChannel;
  now = 1_000_000;
  sent: Sent[] = [];
  events: ChannelEvent[] = [];
  closes: { code: number; reason: string }[] = [];
  connects = 0;

  constructor(options: Partial<PhoenixChannelOptions> = {}) {
    this.channel = new PhoenixChannel({
      topic: 'client',
      joinPayload: { public_key: 'k' },
      random: () => 0,
      ...options,
    });
  }

  drain(): ChannelEffect[] {
    const effects: ChannelEffect[] = [];
    for (
      let effect = this.channel.pollEffect();
      effect !== undefined;
      effect = this.channel.pollEffect()
    ) {
      effects.push(effect);
      if (effect.type === 'send') this.sent.push(JSON.parse(effect.text) as Sent);
      else if (effect.type === 'event') this.events.push(effect.event);
      else if (effect.type === 'close')
        this.closes.push({ code: effect.code, reason: effect.reason });
      else this.connects += 1;
    }
    return effects;
  }

  /** Advances the fake clock to `to`, firing every deadline on the way (bounded). */
  advanceTo(to: number): void {
    for (let i = 0; i < 10_000; i += 1) {
      const at = this.channel.pollTimeout();
      if (at === undefined || at > to) break;
      this.now = Math.max(this.now, at);
      this.channel.handleTimeout(this.now);
      this.drain();
    }
    this.now = to;
  }

  advance(ms: number): void {
    this.advanceTo(this.now + ms);
  }

  frame(frame: Record<string, unknown>): void {
    this.channel.handleFrame(JSON.stringify(frame), this.now);
    this.drain();
  }

  /** connect → open → join sent; returns the join frame. */
  open(): Sent {
    if (this.channel.state === 'disconnected') this.channel.connect(this.now);
    this.drain();
    this.channel.handleConnected(this.now);
    this.drain();
    const join = this.sent.at(-1);
    assert.ok(join !== undefined && join.event === 'phx_join');
    return join;
  }

  /** open and answer the join ok. */
  join(response: unknown = {}): Sent {
    const join = this.open();
    this.frame({
      topic: 'client',
      event: 'phx_reply',
      ref: join.ref,
      payload: { status: 'ok', response },
    });
    assert.equal(this.channel.state, 'joined');
    return join;
  }

  eventsOf<T extends ChannelEvent['type']>(type: T): Extract<ChannelEvent, { type: T }>[] {
    return this.events.filter(
      (event): event is Extract<ChannelEvent, { type: T }> => event.type === type,
    );
  }
}

void describe('PhoenixChannel: connect and join', () => {
  void it('goes disconnected → connecting → joining → joined, with the join on the topic', () => {
    const h = new Harness();
    assert.equal(h.channel.state, 'disconnected');
    h.channel.connect(h.now);
    h.drain();
    assert.equal(h.connects, 1);
    assert.equal(h.channel.state, 'connecting');
    h.channel.handleConnected(h.now);
    h.drain();
    assert.equal(h.channel.state, 'joining');
    const join = h.sent[0];
    assert.deepEqual(join, {
      topic: 'client',
      event: 'phx_join',
      payload: { public_key: 'k' },
      ref: join?.ref,
      join_ref: join?.ref,
    });
    h.frame({
      topic: 'client',
      event: 'phx_reply',
      ref: join?.ref,
      payload: { status: 'ok', response: { hello: 1 } },
    });
    assert.equal(h.channel.state, 'joined');
    assert.deepEqual(h.eventsOf('joined'), [{ type: 'joined', response: { hello: 1 } }]);
  });

  void it('asks a join payload function afresh at every join', () => {
    let n = 0;
    const h = new Harness({ joinPayload: () => ({ n: ++n }) });
    assert.deepEqual(h.open().payload, { n: 1 });
    h.channel.handleDisconnected(h.now, 'gone');
    h.drain();
    h.advance(60_000);
    assert.deepEqual(h.open().payload, { n: 2 });
  });

  void it('drops a join not answered within 5 s and retries after the backoff', () => {
    const h = new Harness();
    h.open();
    h.advance(4_999);
    assert.equal(h.channel.state, 'joining');
    h.advance(1);
    assert.equal(h.channel.state, 'backing-off');
    assert.equal(h.closes[0]?.code, RECONNECT_CLOSE_CODE);
    assert.match(
      h.eventsOf('disconnected')[0]?.reason ?? '',
      /join was not answered within 5000 ms/,
    );
    h.advance(1_000); // random() = 0: the full first delay of 1 s
    assert.equal(h.channel.state, 'connecting');
    assert.equal(h.connects, 2);
    assert.equal(h.channel.stats.reconnects, 1);
  });

  void it('an error reply to the join backs off and rejoins', () => {
    const h = new Harness();
    const join = h.open();
    h.frame({
      topic: 'client',
      event: 'phx_reply',
      ref: join.ref,
      payload: { status: 'error', response: { reason: 'nope' } },
    });
    assert.equal(h.channel.state, 'backing-off');
    assert.deepEqual(h.eventsOf('join-refused'), [
      { type: 'join-refused', response: { reason: 'nope' }, retryInMs: 1_000 },
    ]);
    assert.equal(h.closes.length, 1);
  });

  void it('abandons a connection not open within the connect timeout', () => {
    const h = new Harness({ connectTimeoutMs: 2_000 });
    h.channel.connect(h.now);
    h.drain();
    h.advance(2_000);
    assert.equal(h.channel.state, 'backing-off');
    assert.equal(h.closes.length, 1);
  });
});

void describe('PhoenixChannel: heartbeats', () => {
  void it('sends a heartbeat every 10 s on topic "phoenix" with its own ref', () => {
    const h = new Harness();
    h.join();
    h.sent = [];
    h.advance(10_000);
    assert.equal(h.sent.length, 1);
    const beat = h.sent[0];
    assert.equal(beat?.topic, 'phoenix');
    assert.equal(beat?.event, 'heartbeat');
    assert.deepEqual(beat?.payload, {});
    assert.equal(h.channel.unansweredHeartbeats, 1);
    h.frame({
      topic: 'phoenix',
      event: 'phx_reply',
      ref: beat?.ref,
      payload: { status: 'ok', response: {} },
    });
    assert.equal(h.channel.unansweredHeartbeats, 0);
    assert.equal(h.channel.stats.heartbeatsAnswered, 1);
    h.advance(10_000);
    assert.equal(h.sent.length, 2);
    assert.notEqual(h.sent[1]?.ref, beat?.ref);
  });

  // Table: which heartbeats get answered, and whether the connection survives 60 s.
  const cases: { name: string; answer: (index: number) => boolean; reconnectAt?: number }[] = [
    { name: 'all answered', answer: () => true },
    {
      name: 'none answered: reconnect when a 4th would be outstanding, at 40 s',
      answer: () => false,
      reconnectAt: 40_000,
    },
    { name: 'every other answered', answer: (index) => index % 2 === 0 },
    {
      name: 'only the first answered: reconnect at 50 s',
      answer: (index) => index === 0,
      reconnectAt: 50_000,
    },
  ];
  for (const c of cases) {
    void it(c.name, () => {
      const h = new Harness();
      h.join();
      const start = h.now;
      let index = 0;
      let reconnectedAt: number | undefined;
      for (let t = 10_000; t <= 60_000; t += 10_000) {
        h.sent = [];
        h.advanceTo(start + t);
        if (h.channel.state !== 'joined') {
          reconnectedAt = t;
          break;
        }
        const beat = h.sent.find((frame) => frame.event === 'heartbeat');
        assert.ok(beat !== undefined, `a heartbeat at ${t}`);
        if (c.answer(index)) {
          h.frame({
            topic: 'phoenix',
            event: 'phx_reply',
            ref: beat.ref,
            payload: { status: 'ok', response: {} },
          });
        }
        index += 1;
      }
      assert.equal(reconnectedAt, c.reconnectAt);
      if (c.reconnectAt !== undefined) {
        assert.match(
          h.eventsOf('disconnected')[0]?.reason ?? '',
          /more than 3 heartbeats unanswered/,
        );
        assert.equal(h.closes[0]?.code, RECONNECT_CLOSE_CODE);
      }
    });
  }
});

void describe('PhoenixChannel: backoff', () => {
  void it('grows exponentially to the cap, with jitter from the injected random, and resets on a join', () => {
    const randoms = [0, 0.5, 1, 0, 0, 0, 0, 0, 0];
    const h = new Harness({
      random: () => randoms.shift() ?? 0,
      backoff: { initialMs: 100, maxMs: 1_000, multiplier: 2, jitter: 0.5 },
    });
    const delays: number[] = [];
    h.channel.connect(h.now);
    h.drain();
    for (let i = 0; i < 7; i += 1) {
      h.channel.handleConnectFailed(h.now, { reason: 'refused' });
      h.drain();
      const delay = h.eventsOf('disconnected').at(-1)?.retryInMs;
      assert.ok(delay !== undefined);
      delays.push(delay);
      h.advance(delay);
      assert.equal(h.channel.state, 'connecting');
    }
    // base 100, 200, 400, 800, 1000 (cap), 1000, 1000; × (1 − 0.5 × random)
    assert.deepEqual(delays, [100, 150, 200, 800, 1_000, 1_000, 1_000]);
    h.join();
    h.channel.handleDisconnected(h.now, 'gone');
    h.drain();
    assert.equal(h.eventsOf('disconnected').at(-1)?.retryInMs, 100);
  });

  void it('waits at least a Retry-After', () => {
    const h = new Harness();
    h.channel.connect(h.now);
    h.drain();
    h.channel.handleConnectFailed(h.now, { status: 429, retryAfterMs: 7_000, reason: 'busy' });
    h.drain();
    assert.equal(h.eventsOf('disconnected')[0]?.retryInMs, 7_000);
    assert.match(h.eventsOf('disconnected')[0]?.reason ?? '', /HTTP 429/);
  });
});

void describe('PhoenixChannel: the token', () => {
  const table: { name: string; status?: number; body?: string; signedOut: boolean }[] = [
    {
      name: '401 invalid_token',
      status: 401,
      body: '{"status":401,"code":"invalid_token"}',
      signedOut: true,
    },
    { name: '401 missing_token', status: 401, body: '{"code":"missing_token"}', signedOut: true },
    { name: '401 without a code', status: 401, body: '{"title":"Unauthorized"}', signedOut: false },
    { name: '401 with a non-JSON body', status: 401, body: '<html>', signedOut: false },
    { name: '403 invalid_token', status: 403, body: '{"code":"invalid_token"}', signedOut: false },
    { name: '500', status: 500, body: '', signedOut: false },
    { name: 'no HTTP answer', signedOut: false },
  ];
  for (const c of table) {
    void it(`${c.name} → ${c.signedOut ? 'signed-out, no retry' : 'retried'}`, () => {
      const h = new Harness();
      h.channel.connect(h.now);
      h.drain();
      h.channel.handleConnectFailed(h.now, {
        ...(c.status === undefined ? {} : { status: c.status }),
        ...(c.body === undefined ? {} : { body: c.body }),
        reason: 'x',
      });
      h.drain();
      assert.equal(h.channel.state, c.signedOut ? 'signed-out' : 'backing-off');
      h.advance(10 * 60_000);
      if (c.signedOut) assert.equal(h.connects, 1);
      else assert.ok(h.connects >= 2, `retried (${h.connects} attempts)`);
      if (c.signedOut) {
        assert.equal(h.eventsOf('signed-out').length, 1);
        assert.equal(h.channel.pollTimeout(), undefined);
        assert.equal(h.channel.push('x', {}), undefined);
      }
    });
  }

  void it('disconnect{reason: token_expired} signs out and closes; another reason is a message', () => {
    const h = new Harness();
    h.join();
    h.frame({
      topic: 'client',
      event: 'disconnect',
      ref: null,
      payload: { reason: 'something_else' },
    });
    assert.equal(h.channel.state, 'joined');
    assert.deepEqual(h.eventsOf('message').at(-1), {
      type: 'message',
      event: 'disconnect',
      payload: { reason: 'something_else' },
    });
    h.frame({
      topic: 'client',
      event: 'disconnect',
      ref: null,
      payload: { reason: 'token_expired' },
    });
    assert.equal(h.channel.state, 'signed-out');
    assert.equal(h.closes.at(-1)?.code, 1000);
    h.advance(10 * 60_000);
    assert.equal(h.connects, 1);
  });
});

void describe('PhoenixChannel: pushes and replies', () => {
  void it('matches replies to pushes by ref', () => {
    const h = new Harness();
    const join = h.join();
    const a = h.channel.push('request_authorization', { resource_id: 'a' });
    const b = h.channel.push('request_authorization', { resource_id: 'b' });
    h.drain();
    assert.ok(a !== undefined && b !== undefined && a !== b);
    const sentA = h.sent.find((frame) => frame.ref === a);
    assert.deepEqual(sentA, {
      topic: 'client',
      event: 'request_authorization',
      payload: { resource_id: 'a' },
      ref: a,
      join_ref: join.ref,
    });
    h.frame({
      topic: 'client',
      event: 'phx_reply',
      ref: b,
      payload: { status: 'error', response: { reason: 'x' } },
    });
    h.frame({
      topic: 'client',
      event: 'phx_reply',
      ref: a,
      payload: { status: 'ok', response: {} },
    });
    h.frame({
      topic: 'client',
      event: 'phx_reply',
      ref: a,
      payload: { status: 'ok', response: {} },
    }); // again
    assert.deepEqual(h.eventsOf('reply'), [
      { type: 'reply', ref: b, status: 'error', response: { reason: 'x' } },
      { type: 'reply', ref: a, status: 'ok', response: {} },
    ]);
    assert.equal(h.channel.stats.unmatchedReplies, 1);
  });

  void it('buffers pushes until joined, sends them after the join, and loses unanswered ones on a drop', () => {
    const h = new Harness({ maxBufferedPushes: 2 });
    h.channel.connect(h.now);
    const a = h.channel.push('one', {});
    const b = h.channel.push('two', {});
    assert.equal(h.channel.push('three', {}), undefined);
    assert.equal(h.channel.stats.droppedPushes, 1);
    const join = h.join();
    const after = h.sent.slice(h.sent.indexOf(join) + 1);
    assert.deepEqual(
      after.map((frame) => [frame.event, frame.ref]),
      [
        ['one', a],
        ['two', b],
      ],
    );
    h.channel.handleDisconnected(h.now, 'gone');
    h.drain();
    assert.deepEqual(
      h.eventsOf('push-lost').map((event) => event.ref),
      [a, b],
    );
  });

  void it('delivers server pushes on the topic as messages', () => {
    const h = new Harness();
    h.join();
    h.frame({ topic: 'client', event: 'init', ref: null, payload: { interface: {} } });
    assert.deepEqual(h.eventsOf('message'), [
      { type: 'message', event: 'init', payload: { interface: {} } },
    ]);
  });
});

void describe('PhoenixChannel: phx_close, phx_error and bad frames', () => {
  for (const event of ['phx_close', 'phx_error']) {
    void it(`${event} on the topic closes the connection and rejoins after the backoff`, () => {
      const h = new Harness();
      const join = h.join();
      h.frame({ topic: 'client', event, ref: join.ref, join_ref: join.ref, payload: {} });
      assert.equal(h.channel.state, 'backing-off');
      assert.equal(h.closes.length, 1);
      h.advance(1_000);
      const rejoin = h.open();
      assert.notEqual(rejoin.ref, join.ref);
    });
  }

  void it('ignores frames of an earlier join and of other topics', () => {
    const h = new Harness();
    h.join();
    h.frame({ topic: 'client', event: 'phx_close', ref: null, join_ref: '999', payload: {} });
    h.frame({ topic: 'gateway', event: 'init', ref: null, payload: {} });
    assert.equal(h.channel.state, 'joined');
    assert.equal(h.channel.stats.unexpectedFrames, 2);
    assert.equal(h.eventsOf('message').length, 0);
  });

  const malformed: [string, string][] = [
    ['not JSON', '{"topic":'],
    ['a JSON array', '[null,null,"client","init",{}]'],
    ['a JSON string', '"hello"'],
    ['no topic', '{"event":"init","payload":{},"ref":null}'],
    ['a numeric event', '{"topic":"client","event":5,"payload":{},"ref":null}'],
    ['an object ref', '{"topic":"client","event":"init","payload":{},"ref":{}}'],
    [
      'an oversized topic',
      JSON.stringify({ topic: 'c'.repeat(500), event: 'init', payload: {}, ref: null }),
    ],
    [
      'a reply without status',
      '{"topic":"client","event":"phx_reply","payload":{"response":{}},"ref":"1"}',
    ],
    [
      'an oversized frame',
      JSON.stringify({
        topic: 'client',
        event: 'init',
        payload: 'x'.repeat(4 * 1024 * 1024 + 1),
        ref: null,
      }),
    ],
  ];
  void it('counts and drops malformed frames; the session stays up', () => {
    const h = new Harness();
    h.join();
    for (const [name, text] of malformed) {
      h.channel.handleFrame(text, h.now);
      h.drain();
      assert.equal(h.channel.state, 'joined', name);
    }
    h.channel.handleBinaryFrame(h.now);
    h.drain();
    assert.equal(h.channel.stats.malformedFrames, malformed.length + 1);
    assert.equal(h.eventsOf('malformed-frame').length, malformed.length + 1);
    // and it still works
    const ref = h.channel.push('x', {});
    h.frame({ topic: 'client', event: 'phx_reply', ref, payload: { status: 'ok', response: {} } });
    assert.equal(h.eventsOf('reply').length, 1);
  });
});

void describe('PhoenixChannel: close', () => {
  void it('leaves the topic, closes with 1000 and stops', () => {
    const h = new Harness();
    const join = h.join();
    h.channel.close(h.now);
    h.drain();
    assert.deepEqual(h.sent.at(-1)?.event, 'phx_leave');
    assert.equal(h.sent.at(-1)?.join_ref, join.ref);
    assert.deepEqual(h.closes, [{ code: 1000, reason: 'closed by the application' }]);
    assert.equal(h.channel.state, 'closed');
    assert.equal(h.eventsOf('closed').length, 1);
    assert.equal(h.channel.pollTimeout(), undefined);
    h.channel.handleDisconnected(h.now, 'late');
    h.drain();
    assert.equal(h.eventsOf('disconnected').length, 0);
  });

  void it('closing while backing off cancels the retry', () => {
    const h = new Harness();
    h.channel.connect(h.now);
    h.channel.handleConnectFailed(h.now, { reason: 'x' });
    h.channel.close(h.now);
    h.drain();
    h.advance(60_000);
    assert.equal(h.connects, 1);
    assert.equal(h.closes.length, 0);
  });
});
