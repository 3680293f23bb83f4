/**
 * Fetches a page over HTTP and prints one JSON line: the status, the first
 * line of the body, its size in bytes and how long the whole exchange took.
 *
 * usage: fetch-page.ts URL
 */
import { get } from 'node:http';

export interface FetchedPage {
  status: number;
  firstLine: string;
  bytes: number;
  milliseconds: number;
}

const [url = ''] = process.argv.slice(2);
const started = performance.now();
get(url, (response) => {
  const chunks: Buffer[] = [];
  response.on('data', (chunk: Buffer) => chunks.push(chunk));
  response.on('end', () => {
    const body = Buffer.concat(chunks);
    const page: FetchedPage = {
      status: response.statusCode ?? 0,
      firstLine: body.toString('utf8').split('\n', 1)[0] ?? '',
      bytes: body.length,
      milliseconds: performance.now() - started,
    };
    console.log(JSON.stringify(page));
  });
}).on('error', (error) => {
  console.error(`fetch-page: ${url}: ${error.message}`);
  process.exit(1);
});
