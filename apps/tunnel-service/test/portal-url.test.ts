import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clientSocketUrl, PortalUrlError } from '../src/portal-url.ts';

void describe('clientSocketUrl', () => {
  const accepted: [string, string][] = [
    ['https://portal.example', 'wss://portal.example/client/websocket'],
    ['https://portal.example/', 'wss://portal.example/client/websocket'],
    ['http://127.0.0.1:8080', 'ws://127.0.0.1:8080/client/websocket'],
    ['https://[2001:db8::1]:8443/gh/', 'wss://[2001:db8::1]:8443/gh/client/websocket'],
    ['wss://portal.example/client/websocket', 'wss://portal.example/client/websocket'],
    ['ws://portal.example:80/base', 'ws://portal.example/base/client/websocket'],
  ];
  for (const [given, socket] of accepted) {
    void it(`${given} -> ${socket}`, () => assert.equal(clientSocketUrl(given), socket));
  }

  const refused: [string, RegExp][] = [
    ['portal.example', /is not a URL/],
    ['ftp://portal.example', /must start with https:\/\//],
    ['https://alice:secret@portal.example', /may not hold a user name or password/],
    ['https://portal.example/?token=x', /may not have a query or a fragment/],
    ['https://portal.example/#x', /may not have a query or a fragment/],
  ];
  for (const [given, message] of refused) {
    void it(`refuses ${given}`, () => {
      assert.throws(
        () => clientSocketUrl(given),
        (error: unknown) => {
          assert.ok(error instanceof PortalUrlError);
          assert.match(error.message, message);
          assert.doesNotMatch(error.message, /secret|token=x/, 'nothing of the URL is quoted');
          return true;
        },
      );
    });
  }
});
