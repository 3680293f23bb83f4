/**
 * The portal's client channel URL from the portal URL a person gives (`--portal`,
 * GATEHOUSE_PORTAL_URL): https → wss, http → ws, the portal's path (if any) followed by
 * /client/websocket unless it already ends so. The same rules as the gateway's.
 */

export const CLIENT_WEBSOCKET_PATH = '/client/websocket';

/** A portal URL that cannot be used; the message says why (it holds no secret). */
export class PortalUrlError extends Error {
  override readonly name = 'PortalUrlError';
}

const SCHEMES: Readonly<Record<string, string>> = {
  'https:': 'wss:',
  'wss:': 'wss:',
  'http:': 'ws:',
  'ws:': 'ws:',
};

export function clientSocketUrl(portal: string): string {
  let url: URL;
  try {
    url = new URL(portal);
  } catch {
    // Not quoted: a token pasted in the wrong place must not end up in a log.
    throw new PortalUrlError('the portal URL is not a URL (e.g. https://portal.example.com)');
  }
  const scheme = SCHEMES[url.protocol];
  if (scheme === undefined) {
    throw new PortalUrlError(
      `the portal URL must start with https:// (or http://, wss://, ws://), not ${url.protocol}//`,
    );
  }
  if (url.username !== '' || url.password !== '') {
    throw new PortalUrlError(
      'the portal URL may not hold a user name or password (the token comes from the token file or GATEHOUSE_TOKEN)',
    );
  }
  if (url.search !== '' || url.hash !== '')
    throw new PortalUrlError('the portal URL may not have a query or a fragment');
  const path = url.pathname.replace(/\/+$/, '');
  const socketPath = path.endsWith(CLIENT_WEBSOCKET_PATH)
    ? path
    : `${path}${CLIENT_WEBSOCKET_PATH}`;
  return `${scheme}//${url.host}${socketPath}`;
}
