// Spin's HTTP trigger, as far as the component can tell, in front of `jco serve`: every request
// reaches the component with the caller's `ip:port` in `spin-client-addr` (a caller's own such
// header is replaced, as Spin does). jco's server does not say who called.
// A process of its own: the tests block their event loop in execFileSync at times.
//
// Usage: node spin-trigger.mjs <listen port> <jco port>   (both on 127.0.0.1)
import { createServer, request } from 'node:http';

const [listenPort, jcoPort] = process.argv.slice(2).map(Number);
if (!listenPort || !jcoPort) {
  console.error('usage: node spin-trigger.mjs <listen port> <jco port>');
  process.exit(2);
}

const server = createServer((req, res) => {
  const headers = { ...req.headers, 'spin-client-addr': `${req.socket.remoteAddress}:${req.socket.remotePort}` };
  const upstream = request({ host: '127.0.0.1', port: jcoPort, method: req.method, path: req.url, headers }, (answer) => {
    res.writeHead(answer.statusCode, answer.headers);
    answer.pipe(res);
  });
  upstream.on('error', (e) => {
    console.error(`spin-trigger: ${req.method} ${req.url}: ${e.message}`);
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  req.pipe(upstream);
});
server.listen(listenPort, '127.0.0.1', () => console.error(`spin-trigger on 127.0.0.1:${listenPort} -> ${jcoPort}`));
