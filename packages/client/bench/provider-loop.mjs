// The provider of bench/pick.mjs: registers COUNT instances one after another through the
// SDK, printing `R <id> <wall-clock ms>` as each register() resolves.
import { connect } from '../dist/src/index.js';

const [url, count] = process.argv.slice(2);
const client = await connect({ endpoints: [url] });
await client.register({ service: 'warmup', id: 'w', address: '127.0.0.1', port: 1 });
for (let i = 0; i < Number(count); i++) {
  const id = `lat-${i}`;
  await client.register({ service: 'lat', id, address: '127.0.0.1', port: 10_000 + i });
  process.stdout.write(`R ${id} ${performance.timeOrigin + performance.now()}\n`);
  await new Promise((r) => setTimeout(r, 3));
}
await client.close();
