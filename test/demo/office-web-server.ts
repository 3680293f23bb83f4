/**
 * The demo office's intranet page over HTTP: a greeting line, then enough
 * filler to make the transfer time through the tunnel worth printing.
 * Prints `ready`, then `GET PATH from ADDRESS` for each request.
 *
 * usage: office-web-server.ts ADDRESS PORT
 */
import { createServer } from 'node:http';

const [listenAddress = '', port = ''] = process.argv.slice(2);
const PAGE_BYTES = 1024 * 1024;

const greeting = `Hello from the office intranet at ${listenAddress}, reached through the Gatehouse tunnel.\n`;
const filler = 'All work and no play makes the tunnel a dull pipe.\n';
const page = Buffer.from(
  (greeting + filler.repeat(Math.ceil(PAGE_BYTES / filler.length))).slice(0, PAGE_BYTES),
);

const server = createServer((request, response) => {
  console.log(`${request.method} ${request.url} from ${request.socket.remoteAddress}`);
  response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
  response.end(page);
});
server.listen(Number(port), listenAddress, () => console.log('ready'));
